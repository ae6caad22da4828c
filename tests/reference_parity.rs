//! The fast CPU backend and the GPU against the reference backend, op by op, on randomised
//! cases: random shapes (sizes off every tile and block multiple, batch 1, one channel), values
//! of both signs with exact zeros and ties, every activation, dropout, every optimiser. Each
//! case's seed is in the failure message; `REFERENCE_CASES=N` runs more cases per op, and
//! `REFERENCE_BACKENDS=cpu` compares only the CPU backend (the lower instruction-set levels, and
//! machines without a Vulkan driver).
//!
//! Tolerances. The products (dense, convolutions) sum K f32 terms in some order; whatever the
//! order, the result is within γ = K·u/(1 - K·u) of the exact sum times Σ|terms| (u = 2⁻²⁴; the
//! standard bound for floating-point summation, Higham's γ_K), plus the rounding of the result
//! itself. Σ|terms| comes from the reference run on the magnitudes of every input. A missed or
//! misplaced term errs by a whole term. Elementwise ops (activations, losses, updates) compute
//! the same formula in f32 that the reference computes in f64: a few roundings of the result
//! (1e-6 relative, about 16 ulp) and of the values it is made of, which cancellation can leave
//! larger than the result (`1 - y²` of a saturated tanh, `w - step` with a step larger than `w`):
//! 1e-7 (under two roundings) of the op's largest input. Max pooling selects and copies: exact.

mod common;

use common::*;
use gpu_train::graph::{slot, BufId, ConvGeom, Dtype, Op, Step};
use gpu_train::model::{Act, Shape};
use gpu_train::rng::Rng;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// How close a fast backend must come to the reference.
#[derive(Clone, Copy)]
enum Tol {
    /// Sums of at most this many terms, per output element.
    Sums(usize),
    /// Elementwise formulas: relative to the result, and to the op's largest input.
    Formula(f32, f32),
}

/// Cases per op: a few dozen in CI, more with `REFERENCE_CASES`.
fn cases() -> u64 {
    std::env::var("REFERENCE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

/// `len` values: normal, with about 15% exact zeros and 15% repeats of an earlier value (ties).
fn values(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    for i in 0..len {
        let pick = below(rng, 100);
        v.push(match pick {
            0..15 => 0.0,
            15..30 if i > 0 => v[below(rng, i as u32) as usize],
            _ => rng.normal(),
        });
    }
    v
}

/// The fast backends to compare: `REFERENCE_BACKENDS` (`cpu`, `gpu` or both, comma separated),
/// else both.
fn fast_kinds() -> Vec<Kind> {
    let asked = std::env::var("REFERENCE_BACKENDS").unwrap_or_else(|_| "cpu,gpu".into());
    asked
        .split(',')
        .map(|k| match k.trim() {
            "cpu" => Kind::Cpu,
            "gpu" => Kind::Gpu,
            other => panic!("REFERENCE_BACKENDS: {other:?} is neither cpu nor gpu"),
        })
        .collect()
}

/// A size in `1..=max`.
fn size(rng: &mut Rng, max: u32) -> usize {
    1 + below(rng, max) as usize
}

/// A number in `0..n`.
fn below(rng: &mut Rng, n: u32) -> u32 {
    rng.next_u32() % n
}

/// Runs `ops` on the reference, the CPU and the GPU, and compares every f32 buffer of the fast
/// ones with the reference's.
fn three_way(what: &str, r: &Rig, ops: &[Op], n: usize, t: u32, tol: Tol) {
    let step = Step { n, offset: 0, t };
    let mut want = r.on(Kind::Reference);
    want.run(ops, step).unwrap();
    let mut mag = r.abs().on(Kind::Reference);
    mag.run(ops, step).unwrap();
    let largest = r.largest();
    for kind in fast_kinds() {
        let mut got = r.on(kind);
        got.run(ops, step).unwrap();
        for (i, d) in r.descs.iter().enumerate() {
            let id = BufId(i);
            if d.dtype != Dtype::F32 || r.unstored.contains(&id) {
                continue;
            }
            let (g, w, m) =
                (got.download_f32(id).unwrap(), want.download_f32(id).unwrap(), mag.download_f32(id).unwrap());
            for (j, ((&g, &w), &m)) in g.iter().zip(&w).zip(&m).enumerate() {
                let bound = match tol {
                    Tol::Sums(k) => {
                        let gamma = (k + 1) as f64 * U / (1.0 - (k + 1) as f64 * U);
                        gamma * f64::from(m) + U * f64::from(w.abs())
                    }
                    Tol::Formula(rel, of_input) => f64::from(rel * w.abs() + of_input * largest),
                };
                let err = (f64::from(g) - f64::from(w)).abs();
                assert!(
                    err <= bound || (g.is_nan() && w.is_nan()),
                    "{what}: {kind:?} buffer {} [{j}] is {g}, the reference {w} (off by {err:e}, bound {bound:e})",
                    d.name
                );
            }
        }
    }
}

#[test]
fn dense() {
    for seed in 0..cases() {
        let mut rng = Rng::new(100 + seed);
        let (n, n_in, n_out) = (size(&mut rng, 40), size(&mut rng, 150), size(&mut rng, 70));
        let mut r = Rig::default();
        let (x, w, b) = (
            r.f32(&values(&mut rng, n * n_in)),
            r.f32(&values(&mut rng, n_out * n_in)),
            r.f32(&values(&mut rng, n_out)),
        );
        let gy = r.f32(&values(&mut rng, n * n_out));
        let (y, gw, gb) = (r.zeros(n * n_out), r.zeros(n_out * n_in), r.zeros(n_out));
        let gx = (below(&mut rng, 4) > 0).then(|| r.zeros(n * n_in));
        let ops = [Op::Dense { x, w, b, y, n_in, n_out }, Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out }];
        let k = (n_in + 1).max(n).max(n_out);
        three_way(&format!("dense seed {seed}: n {n} in {n_in} out {n_out}"), &r, &ops, n, 1, Tol::Sums(k));
    }
}

#[test]
fn conv2d() {
    for seed in 0..cases() {
        let mut rng = Rng::new(200 + seed);
        let (c_in, c_out) = (size(&mut rng, 6), size(&mut rng, 10));
        let g = match below(&mut rng, 3) {
            // 'same': 1x1 or 3x3, stride 1.
            0 => {
                ConvGeom::same(c_in, c_out, size(&mut rng, 18), size(&mut rng, 18), [1, 3][below(&mut rng, 2) as usize])
            }
            // Any kernel of 1 to 5, fewer zeros than its size, stride 1 or 2, the padded input
            // at least the kernel.
            _ => {
                let k = size(&mut rng, 5);
                let (pad, stride) = (below(&mut rng, k as u32) as usize, size(&mut rng, 2));
                let side = |rng: &mut Rng| k.saturating_sub(2 * pad).max(1) + below(rng, 15) as usize;
                ConvGeom { pad, stride, ..ConvGeom::same(c_in, c_out, side(&mut rng), side(&mut rng), k) }
            }
        };
        let (n, hw, k, ohw) = (size(&mut rng, 4), g.h * g.w, g.k, g.out().0 * g.out().1);
        let mut r = Rig::default();
        let x = r.f32(&values(&mut rng, n * g.c_in * hw));
        let w = r.f32(&values(&mut rng, g.c_out * g.c_in * k * k));
        let b = r.f32(&values(&mut rng, g.c_out));
        let gy = r.f32(&values(&mut rng, n * g.c_out * ohw));
        let (y, gw, gb) = (r.zeros(n * g.c_out * ohw), r.zeros(g.c_out * g.c_in * k * k), r.zeros(g.c_out));
        let gx = (below(&mut rng, 4) > 0).then(|| r.zeros(n * g.c_in * hw));
        let ops = [Op::Conv2d { x, w, b, y, g }, Op::Conv2dBackward { x, w, gy, gx, gw, gb, g }];
        let terms = (g.c_in * k * k + 1).max(n * ohw).max(g.c_out * k * k);
        three_way(&format!("conv2d seed {seed}: n {n} {g:?}"), &r, &ops, n, 1, Tol::Sums(terms));
    }
}

#[test]
fn conv_transpose2d() {
    for seed in 0..cases() {
        let mut rng = Rng::new(300 + seed);
        let (c_in, c_out) = (size(&mut rng, 8), size(&mut rng, 8));
        let g = ConvGeom::same(c_in, c_out, size(&mut rng, 12), size(&mut rng, 12), 2);
        let (n, hw) = (size(&mut rng, 4), g.h * g.w);
        let mut r = Rig::default();
        let x = r.f32(&values(&mut rng, n * g.c_in * hw));
        let w = r.f32(&values(&mut rng, g.c_in * g.c_out * 4));
        let b = r.f32(&values(&mut rng, g.c_out));
        let gy = r.f32(&values(&mut rng, n * g.c_out * 4 * hw));
        let (y, gw, gb) = (r.zeros(n * g.c_out * 4 * hw), r.zeros(g.c_in * g.c_out * 4), r.zeros(g.c_out));
        let gx = (below(&mut rng, 4) > 0).then(|| r.zeros(n * g.c_in * hw));
        let ops = [Op::ConvTranspose2d { x, w, b, y, g }, Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, g }];
        let terms = (g.c_in + 1).max(4 * n * hw).max(4 * g.c_out);
        three_way(&format!("conv_transpose2d seed {seed}: n {n} {g:?}"), &r, &ops, n, 1, Tol::Sums(terms));
    }
}

/// Ties (zeros and repeats) and odd sizes; the gradient routes to the first maximum: exact.
#[test]
fn max_pool() {
    for seed in 0..cases() {
        let mut rng = Rng::new(400 + seed);
        let s = Shape { c: size(&mut rng, 5), h: 1 + size(&mut rng, 15), w: 1 + size(&mut rng, 15) };
        let n = size(&mut rng, 4);
        let out = s.c * (s.h / 2) * (s.w / 2);
        let mut r = Rig::default();
        let x = r.f32(&values(&mut rng, n * s.len()));
        let gy = r.f32(&values(&mut rng, n * out));
        let (y, gx, argmax) = (r.zeros(n * out), r.zeros(n * s.len()), r.u32(&vec![0; n * out]));
        let ops = [Op::MaxPool2d { x, y, argmax, shape: s }, Op::MaxPool2dBackward { gy, argmax, gx, shape: s }];
        three_way(&format!("max_pool seed {seed}: n {n} {s:?}"), &r, &ops, n, 1, Tol::Formula(0.0, 0.0));
    }
}

/// Odd sizes (the last row and column dropped); each mean sums four terms.
#[test]
fn avg_pool() {
    for seed in 0..cases() {
        let mut rng = Rng::new(450 + seed);
        let s = Shape { c: size(&mut rng, 5), h: 1 + size(&mut rng, 15), w: 1 + size(&mut rng, 15) };
        let n = size(&mut rng, 4);
        let out = s.c * (s.h / 2) * (s.w / 2);
        let mut r = Rig::default();
        let (x, gy) = (r.f32(&values(&mut rng, n * s.len())), r.f32(&values(&mut rng, n * out)));
        let (y, gx) = (r.zeros(n * out), r.zeros(n * s.len()));
        let ops = [Op::AvgPool2d { x, y, shape: s }, Op::AvgPool2dBackward { gy, gx, shape: s }];
        three_way(&format!("avg_pool seed {seed}: n {n} {s:?}"), &r, &ops, n, 1, Tol::Sums(4));
    }
}

/// Batch normalisation in training (statistics, the running ones, every gradient) and outside
/// it, on channels of different means and scales; the training pass with an activation after
/// it (which the fast backends run inside it), its output sometimes read by another op too. The GPU sums each channel's `m = n·hw ≤ 360`
/// terms in f32 (the CPU and the reference in f64), so `gγ`, `gβ` and the statistics carry
/// rounding that grows about as √m·2^-24 ≈ 1.1e-6 of the terms' size; 4e-6 of the result and
/// of the largest input is that with room for the order of the sums. (1e-7 fails: a `gγ` of
/// 120 terms is 4.7e-7 off.)
#[test]
fn batch_norm() {
    for seed in 0..cases() {
        let mut rng = Rng::new(800 + seed);
        let (c, hw) = (size(&mut rng, 6), size(&mut rng, 90));
        // At least 8 values per channel. With two values a few hundredths apart the GPU's f32
        // statistics (as PyTorch's on a GPU) are off by 2^-24·|μ|/σ relative, which no fixed
        // tolerance bounds; the CPU's and the reference's are f64.
        let n = size(&mut rng, 4).max(8usize.div_ceil(hw));
        let len = n * c * hw;
        let offsets: Vec<f32> = (0..c).map(|_| 3.0 * values(&mut rng, 1)[0]).collect();
        let x: Vec<f32> = values(&mut rng, len).iter().enumerate().map(|(i, v)| v + offsets[i / hw % c]).collect();
        let mut r = Rig::default();
        let (x, gy) = (r.f32(&x), r.f32(&values(&mut rng, len)));
        let (gamma, beta) = (r.param(&values(&mut rng, c)), r.param(&values(&mut rng, c)));
        let var: Vec<f32> = values(&mut rng, c).iter().map(|v| v.abs() + 0.5).collect();
        let running = [r.f32(&values(&mut rng, c)), r.f32(&var), r.zeros(1)];
        // The normalised values, stored by the fast backends only when another op reads them.
        let kept = below(&mut rng, 2) == 1;
        let y = if kept { r.zeros(len) } else { r.between(len) };
        let (stats, gx, ggamma, gbeta) = (r.zeros(2 * c), r.zeros(len), r.grad(c), r.grad(c));
        let (y2, stats2, activated, read) = (r.zeros(len), r.zeros(2 * c), r.zeros(len), r.zeros(len));
        let (momentum, eps) = (0.1, 1e-5);
        let gx = Some(gx).filter(|_| below(&mut rng, 4) > 0);
        let act = [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu][below(&mut rng, 4) as usize];
        let per = c * hw;
        let mut ops = vec![
            Op::BatchNorm { x, gamma, beta, y, stats, running, c, hw, train: true, momentum, eps },
            Op::Activation { act, x: y, y: activated, per },
            Op::BatchNormBackward { x, gamma, stats, gy, gx, ggamma, gbeta, c, hw },
            Op::BatchNorm { x, gamma, beta, y: y2, stats: stats2, running, c, hw, train: false, momentum, eps },
        ];
        if kept {
            ops.push(Op::Activation { act: Act::Relu, x: y, y: read, per });
        }
        let what = format!("batch norm seed {seed}: n {n} c {c} hw {hw}, {act:?}, output read again: {kept}");
        three_way(&what, &r, &ops, n, 1, Tol::Formula(4e-6, 4e-6));
        // The CPU runs the reference's f64 pieces in parallel: the same bits (the activations'
        // own functions aside).
        let step = Step { n, offset: 0, t: 1 };
        let (mut cpu, mut reference) = (r.on(Kind::Cpu), r.on(Kind::Reference));
        cpu.run(&ops, step).unwrap();
        reference.run(&ops, step).unwrap();
        let compared = |id: &BufId| ![activated, read].contains(id) && !r.unstored.contains(id);
        for id in (0..r.descs.len()).map(BufId).filter(compared) {
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let (a, b) = (cpu.download_f32(id).unwrap(), reference.download_f32(id).unwrap());
            assert_eq!(bits(a), bits(b), "{what}: buffer {id:?}");
        }
    }
}

/// Nearest 2x upsampling and its backward (sums of 2x2 blocks), and an addition's backward.
#[test]
fn upsample_and_add() {
    for seed in 0..cases() {
        let mut rng = Rng::new(750 + seed);
        let n = size(&mut rng, 4);
        let s = Shape::new(size(&mut rng, 5), 2 * size(&mut rng, 9), 2 * size(&mut rng, 9));
        let small = s.c * (s.h / 2) * (s.w / 2);
        let mut r = Rig::default();
        let (x, gy) = (r.f32(&values(&mut rng, n * small)), r.f32(&values(&mut rng, n * s.len())));
        let (y, gx, ga, gb) = (r.zeros(n * s.len()), r.zeros(n * small), r.zeros(n * s.len()), r.zeros(n * s.len()));
        let ops = [
            Op::Upsample2d { x, y, shape: s },
            Op::Upsample2dBackward { gy, gx, shape: s },
            Op::SumBackward { gy, ga: Some(ga), gb: Some(gb).filter(|_| seed % 2 == 0), per: s.len() },
        ];
        // Copies are exact; a block's gradient is a sum of 4.
        three_way(&format!("upsample seed {seed}: n {n} {s:?}"), &r, &ops, n, 1, Tol::Sums(4));
    }
}

/// Concatenations (forward and backward, each half wanted or not) and the sums of gradients.
#[test]
fn concat_and_sum() {
    for seed in 0..cases() {
        let mut rng = Rng::new(700 + seed);
        let (n, per_a, per_b) = (size(&mut rng, 5), size(&mut rng, 300), size(&mut rng, 300));
        let whole = per_a + per_b;
        let mut r = Rig::default();
        let (a, b) = (r.f32(&values(&mut rng, n * per_a)), r.f32(&values(&mut rng, n * per_b)));
        let gy = r.f32(&values(&mut rng, n * whole));
        let (y, ga, gb) = (r.zeros(n * whole), r.zeros(n * per_a), r.zeros(n * per_b));
        let (other, summed) = (r.f32(&values(&mut rng, n * whole)), r.zeros(n * whole));
        let wanted = below(&mut rng, 3);
        let (ga, gb) = (Some(ga).filter(|_| wanted != 1), Some(gb).filter(|_| wanted != 2));
        let ops = [
            Op::Concat { a, b, y, per_a, per_b },
            Op::ConcatBackward { gy, ga, gb, per_a, per_b },
            Op::Sum { a: y, b: other, y: summed, per: whole },
        ];
        // Copies are exact, and a sum of two is one rounding on every backend.
        three_way(&format!("concat seed {seed}: n {n} {per_a}+{per_b}"), &r, &ops, n, 1, Tol::Sums(1));
    }
}

#[test]
fn activations_and_dropout() {
    for seed in 0..cases() {
        let mut rng = Rng::new(500 + seed);
        let (n, per) = (size(&mut rng, 6), size(&mut rng, 700));
        let act = [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu][seed as usize % 4];
        let mut r = Rig::default();
        let x = r.f32(&values(&mut rng, n * per).iter().map(|v| 3.0 * v).collect::<Vec<_>>());
        let gy = r.f32(&values(&mut rng, n * per));
        let (y, gx, d, mask, gd) =
            (r.zeros(n * per), r.zeros(n * per), r.zeros(n * per), r.zeros(n * per), r.zeros(n * per));
        let rate = [0.0, 0.3, 0.5][below(&mut rng, 3) as usize];
        let ops = [
            Op::Activation { act, x, y, per },
            Op::ActivationBackward { act, y, gy, gx, per },
            Op::Dropout { x: y, y: d, mask, per, rate, seed: seed as u32 },
            Op::DropoutBackward { gy: gx, mask, gx: gd, per },
        ];
        let what = format!("{} and dropout {rate} seed {seed}: n {n} per {per}", act.name());
        three_way(&what, &r, &ops, n, 1 + below(&mut rng, 5), Tol::Formula(1e-6, 1e-7));
    }
}

/// A one-hot target per row, chosen by `rng`.
fn one_hot(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|_| {
            let hot = below(rng, k as u32) as usize;
            (0..k).map(move |c| f32::from(u8::from(c == hot)))
        })
        .collect()
}

/// Losses with their metrics and the confusion counts; steps of several batches, the last short.
#[test]
fn losses() {
    for seed in 0..cases() {
        let mut rng = Rng::new(600 + seed);
        let (batch, n) = (size(&mut rng, 20), size(&mut rng, 50));
        let k = 1 + size(&mut rng, 12);
        let mut r = Rig::default();
        let logits = r.f32(&values(&mut rng, n * k).iter().map(|v| 4.0 * v).collect::<Vec<_>>());
        let target = r.f32(&one_hot(&mut rng, n, k));
        let (probs, grad, metrics, counts) = (r.zeros(n * k), r.zeros(n * k), r.zeros(8), r.zeros(k * k));
        let per = size(&mut rng, 300);
        let z = r.f32(&values(&mut rng, n * per).iter().map(|v| 4.0 * v).collect::<Vec<_>>());
        let mask = r.f32(&(0..n * per).map(|_| f32::from(u8::from(below(&mut rng, 2) == 0))).collect::<Vec<_>>());
        let (p2, g2, m2) = (r.zeros(n * per), r.zeros(n * per), r.zeros(8));
        // Pixels of `kp` classes. Logits on a grid of 1/4 keep exact ties (which every backend
        // breaks alike, towards the first class) and keep distinct logits far enough apart that
        // f32 and f64 rank their probabilities alike, so the class counts must agree exactly.
        let (kp, pixels) = (1 + size(&mut rng, 9), size(&mut rng, 200));
        let z3 = r.f32(&values(&mut rng, n * kp * pixels).iter().map(|v| (16.0 * v).round() / 4.0).collect::<Vec<_>>());
        let classes = r.f32(&(0..n * pixels).map(|_| below(&mut rng, kp as u32) as f32).collect::<Vec<_>>());
        let (p3, g3, m3) = (r.zeros(n * kp * pixels), r.zeros(n * kp * pixels), r.zeros(slot::len(kp)));
        // With the gradient, a step is one batch (training); without, several (a test pass).
        let (steps, grad) = if below(&mut rng, 2) == 0 { (n.min(batch), Some(grad)) } else { (n, None) };
        let ops = [
            Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, batch },
            Op::Confusion { probs, target, counts, classes: k },
            Op::SigmoidBce { logits: z, target: mask, probs: p2, grad: grad.map(|_| g2), metrics: m2, per, batch },
            Op::PixelSoftmaxCrossEntropy {
                logits: z3,
                target: classes,
                probs: p3,
                grad: grad.map(|_| g3),
                metrics: m3,
                classes: kp,
                per: pixels,
                batch,
            },
        ];
        let what = format!(
            "losses seed {seed}: n {steps} batch {batch} classes {k} per {per}, pixels {pixels} of {kp} classes"
        );
        three_way(&what, &r, &ops, steps, 1, Tol::Formula(1e-5, 1e-6));
    }
}

/// L2 on a gradient, then each optimiser's update, at step `t` (Adam's bias correction).
#[test]
fn optimisers() {
    for seed in 0..cases() {
        let mut rng = Rng::new(700 + seed);
        let len = size(&mut rng, 3000);
        let mut r = Rig::default();
        let (w, g) = (r.f32(&values(&mut rng, len)), r.f32(&values(&mut rng, len)));
        let m = r.f32(&values(&mut rng, len).iter().map(|x| 0.1 * x).collect::<Vec<_>>());
        let v = r.f32(&values(&mut rng, len).iter().map(|x| 0.01 * x * x).collect::<Vec<_>>());
        let metrics = r.zeros(8);
        let lr = [0.25, 1e-3, 0.05][below(&mut rng, 3) as usize];
        let update = match seed % 3 {
            0 => Op::Sgd { w, g, lr, len },
            1 => Op::Momentum { w, g, v: m, lr, momentum: 0.8, len },
            _ => Op::Adam { w, g, m, v, lr, beta1: 0.9, beta2: 0.999, eps: 1e-7, len },
        };
        let (t, what) = (1 + below(&mut rng, 9), format!("optimiser seed {seed}: {update:?}"));
        let ops = [Op::L2 { w, grad: Some(g), metrics, lambda: 1e-3, len }, update];
        three_way(&format!("{what} at step {t}"), &r, &ops, 7, t, Tol::Formula(1e-6, 1e-7));
    }
}

/// Batches, one-hot targets and mirrored samples (indices past the set mirror it).
#[test]
fn gather() {
    for seed in 0..cases() {
        let mut rng = Rng::new(800 + seed);
        let shape = Shape { c: size(&mut rng, 3), h: size(&mut rng, 9), w: size(&mut rng, 9) };
        let (samples, n, classes) = (size(&mut rng, 12), size(&mut rng, 10), 1 + size(&mut rng, 9));
        let mut r = Rig::default();
        let data = r.u8(&(0..samples * shape.len()).map(|_| below(&mut rng, 4) as u8 * 85).collect::<Vec<_>>());
        let labels = r.u8(&(0..samples).map(|_| below(&mut rng, classes as u32) as u8).collect::<Vec<_>>());
        let index = r.u32(&(0..n).map(|_| below(&mut rng, 2 * samples as u32)).collect::<Vec<_>>());
        let (out, hot) = (r.zeros(n * shape.len()), r.zeros(n * classes));
        let (scale, binarize) = if seed % 2 == 0 { (1.0 / 255.0, false) } else { (1.0, true) };
        let ops = [
            Op::Gather { data, index, out, shape, scale, binarize, mirrored: samples },
            Op::GatherOneHot { labels, index: index_mod(&mut r, &mut rng, n, samples), out: hot, classes },
        ];
        three_way(&format!("gather seed {seed}: {n} of {samples} {shape:?}"), &r, &ops, n, 1, Tol::Formula(0.0, 0.0));
    }
}

/// Indices into a set of `samples` (one-hot labels have no mirrored half).
fn index_mod(r: &mut Rig, rng: &mut Rng, n: usize, samples: usize) -> BufId {
    r.u32(&(0..n).map(|_| below(rng, samples as u32)).collect::<Vec<_>>())
}

/// Whole training steps of every network and variant, from weights and biases of both signs,
/// on data with exact zeros (a background) and ties: the parameters after two steps, against the
/// reference's, within 1e-5 of each tensor's largest change plus the f32 roundings of the
/// parameters themselves (two updates, each rounding `w` once, at most 2 ulp apart: 4u·max|w|).
/// Each op above stays within a few roundings of its sums; about ten of them chain from the loss
/// to the first layer's gradient, so the fast backends' changes agree with the reference's to
/// about 1e-6 of their size. A wrong term, or a gradient that takes another branch, moves a
/// change by far more.
#[test]
fn training_steps() {
    use gpu_train::bench::synthetic;
    use gpu_train::graph::Target;
    use gpu_train::model::Layer;
    use gpu_train::optim::Optimizer;
    use gpu_train::tasks::{self, Task, Variant};
    use gpu_train::train::{Session, SessionOptions};
    let sgd = Optimizer::Sgd { lr: 0.1, momentum: 0.0 };
    let momentum = Optimizer::Sgd { lr: 0.05, momentum: 0.8 };
    // Adam divides by √v + ε: with Keras' ε = 1e-7, a gradient of about that size (a sum whose
    // terms nearly cancel) turns its last-bit differences into differences of the whole step.
    // ε = 1e-3 keeps the step a smooth function of the gradient, so that the comparison measures
    // the gradients; `optimisers` above checks Adam's update itself at ε = 1e-7.
    let adam = Optimizer::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-3 };
    let v = |activation, dropout, l2, act_after_pool| Variant { activation, dropout, l2, act_after_pool };
    /// What a setup changes in the task's network or data.
    #[derive(Clone, Copy, PartialEq)]
    enum Twist {
        None,
        /// Masks of this many classes of pixels.
        Segments(usize),
        /// Average pooling in place of every max pooling.
        AvgPool,
        /// A small U-Net from a model file: values read by two layers, joined by concatenation.
        Graph,
        /// Batch normalisation after every hidden convolution.
        BatchNorm,
        /// A residual path: pooled, upsampled back and added.
        Residual,
        /// Convolutions of other paddings and strides.
        Strided,
    }
    let setups = [
        (Task::MnistMlp, Shape::flat(50), 7, v(Act::Sigmoid, 0.0, 0.0, false), sgd, false, Twist::None),
        (Task::MnistMlp, Shape::flat(70), 5, v(Act::Tanh, 0.3, 1e-3, false), momentum, false, Twist::None),
        (Task::MnistMlp, Shape::flat(33), 6, v(Act::Relu, 0.0, 0.0, false), adam, false, Twist::None),
        (Task::MnistCnn, Shape::new(1, 28, 28), 6, v(Act::Relu, 0.0, 0.0, false), sgd, false, Twist::None),
        (Task::MnistCnn, Shape::new(1, 12, 12), 5, v(Act::Tanh, 0.0, 0.0, true), adam, false, Twist::None),
        (Task::MnistCnn, Shape::new(1, 20, 16), 4, v(Act::Relu, 0.5, 1e-3, false), momentum, false, Twist::None),
        (Task::Warwick, Shape::new(3, 16, 16), 3, v(Act::Relu, 0.0, 1e-3, false), adam, true, Twist::None),
        (Task::Warwick, Shape::new(3, 12, 20), 2, v(Act::Relu, 0.3, 0.0, false), sgd, false, Twist::None),
        (Task::Warwick, Shape::new(3, 16, 12), 3, v(Act::Relu, 0.0, 0.0, false), adam, true, Twist::Segments(4)),
        (Task::MnistCnn, Shape::new(1, 14, 18), 4, v(Act::Tanh, 0.0, 0.0, true), momentum, false, Twist::AvgPool),
        (Task::Warwick, Shape::new(3, 12, 16), 2, v(Act::Relu, 0.0, 0.0, false), adam, false, Twist::AvgPool),
        (Task::MnistCnn, Shape::new(1, 18, 14), 4, v(Act::LeakyRelu, 0.0, 0.0, false), sgd, false, Twist::None),
        (Task::Warwick, Shape::new(3, 20, 12), 2, v(Act::LeakyRelu, 0.0, 0.0, false), adam, true, Twist::None),
        (Task::Warwick, Shape::new(3, 8, 12), 3, v(Act::Relu, 0.0, 0.0, false), adam, true, Twist::Graph),
        (Task::Warwick, Shape::new(3, 8, 12), 2, v(Act::Relu, 0.0, 0.0, false), momentum, false, Twist::Graph),
        (Task::Warwick, Shape::new(3, 12, 16), 3, v(Act::Relu, 0.0, 0.0, false), adam, true, Twist::BatchNorm),
        (Task::MnistCnn, Shape::new(1, 12, 12), 4, v(Act::Tanh, 0.0, 0.0, false), sgd, false, Twist::BatchNorm),
        (Task::Warwick, Shape::new(3, 8, 12), 3, v(Act::Relu, 0.0, 0.0, false), adam, true, Twist::Residual),
        (Task::Warwick, Shape::new(3, 8, 12), 3, v(Act::Relu, 0.0, 0.0, false), sgd, false, Twist::Residual),
        (Task::MnistCnn, Shape::new(1, 14, 18), 4, v(Act::Relu, 0.0, 0.0, false), adam, false, Twist::Strided),
        (Task::MnistCnn, Shape::new(1, 14, 18), 3, v(Act::Relu, 0.0, 0.0, false), momentum, false, Twist::Strided),
    ];
    for (i, &(task, sample, batch, variant, optimizer, mirrored, twist)) in setups.iter().enumerate() {
        let mut rng = Rng::new(900 + i as u64);
        let mut data = synthetic(task, sample, 2 * batch, batch, 31 + i as u64);
        if let Twist::Segments(k) = twist {
            data.target = Target::Segments(k);
            data.train.y.iter_mut().chain(&mut data.test.y).for_each(|v| *v %= k as u8);
        }
        let mut model = tasks::model_for(task, variant, sample, data.target);
        if twist == Twist::AvgPool {
            model.layers.iter_mut().filter(|n| n.layer == Layer::MaxPool2d).for_each(|n| n.layer = Layer::AvgPool2d);
        }
        if twist == Twist::Graph {
            model = small_unet();
        }
        if twist == Twist::Residual {
            model = pool_upsample_add();
        }
        if twist == Twist::Strided {
            model = strided();
        }
        if twist == Twist::BatchNorm {
            let last = model.layers.len() - 1;
            let hidden: Vec<usize> = (0..last).filter(|&i| matches!(model.layers[i].layer, Layer::Conv2d(_))).collect();
            for i in hidden.into_iter().rev().filter(|&i| i + 2 < last) {
                model.layers.insert(i + 1, Layer::BatchNorm2d(Default::default()).into());
            }
        }
        data.train.x.iter_mut().for_each(|v| *v = if below(&mut rng, 2) == 0 { 0 } else { *v & 0xF0 });
        let specs = model.params().unwrap();
        let mut init: Vec<Vec<f32>> =
            specs.iter().map(|p| (0..p.len()).map(|_| 0.2 * rng.normal()).collect()).collect();
        // Running statistics start where PyTorch's do.
        let running = model.running().unwrap();
        init.extend(gpu_train::model::init_params(&running, &mut rng));
        let saved = model.saved().unwrap();
        // A bias just before a batch normalisation has no gradient: the mean is taken out.
        let normalised: Vec<String> = (1..model.layers.len())
            .filter(|&i| matches!(model.layers[i].layer, Layer::BatchNorm2d(_)))
            .map(|i| format!("{}.bias", model.key(i - 1)))
            .collect();
        let start: std::collections::BTreeMap<&str, &Vec<f32>> =
            saved.iter().map(|p| p.key.as_str()).zip(&init).collect();
        let run = |kind| {
            let opts = SessionOptions { batch, optimizer, seed: 3, shuffle: true, mirrored, init: Some(init.clone()) };
            let mut s = Session::new(&model, &data, opts, |descs| Ok(backend(kind, descs))).unwrap();
            s.run_epoch().unwrap();
            s.params().unwrap()
        };
        let want = run(Kind::Reference);
        for kind in fast_kinds() {
            for (key, got) in run(kind) {
                let (want, start) = (&want[&key].data, start[key.as_str()]);
                let change = want.iter().zip(start).fold(0.0f32, |m, (w, s)| m.max((w - s).abs()));
                assert!(change > 0.0 || variant.dropout > 0.0 || normalised.contains(&key), "{key} did not move");
                let err = got.data.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
                let largest = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
                assert!(
                    f64::from(err) <= 1e-5 * f64::from(change) + 4.0 * U * f64::from(largest),
                    "setup {i} ({task:?} {sample:?} {variant:?} {optimizer:?}): {kind:?} {key} is {err:e} from the \
                     reference, {:.1e} of its largest change {change:e}",
                    err / change
                );
            }
        }
    }
}
