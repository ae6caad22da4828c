//! Finite-difference checks of every op's backward on small random shapes.
//!
//! Each check takes L = Σ y·r for a fixed random r (or the loss itself), perturbs every input
//! element by ±h with h = 1e-2 and compares (L(+h) - L(-h)) / 2h, summed in f64, with the
//! backward op's gradient. Tolerance 1e-3 + 1e-2 relative: the central difference's truncation
//! error is h²/6·|L'''| ≈ 2e-5 for these O(1) inputs, and f32 rounding of the forward outputs
//! adds about 1e-7·Σ|y·r| / 2h ≈ 1e-4; a wrong gradient (a missed term, a wrong index) is off by
//! O(0.1) or more. Inputs sit at least 5h away from the kinks of relu and maxpool.

mod common;

use common::*;
use gpu_train::backend::Backend;
use gpu_train::graph::{slot, BufId, ConvGeom, Op};
use gpu_train::model::{Act, Shape};
use gpu_train::rng::Rng;

const H: f32 = 1e-2;

fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// Builds an op's rig: (rig, input ids, weights r) -> (output, forward ops, forward + backward
/// ops, each input's gradient buffer).
type Make<'a> = &'a dyn Fn(&mut Rig, &[BufId], &[f32]) -> (BufId, Vec<Op>, Vec<Op>, Vec<BufId>);

/// An op under test: given input values, makes a rig, the forward ops and (for backward) the
/// ops plus the buffers holding each input's gradient.
struct Case<'a> {
    name: &'a str,
    inputs: Vec<Vec<f32>>,
    make: Make<'a>,
    out_len: usize,
    n: usize,
    /// The weights r of L = Σ y·r; random when `None`.
    r: Option<Vec<f32>>,
}

fn objective(case: &Case, inputs: &[Vec<f32>], r: &[f32]) -> f64 {
    let mut rig = Rig::default();
    let ids: Vec<_> = inputs.iter().map(|v| rig.f32(v)).collect();
    let (out, fwd, _, _) = (case.make)(&mut rig, &ids, r);
    let mut be = rig.cpu();
    run(&mut be, &fwd, case.n);
    let y = be.download_f32(out).unwrap();
    y.iter().zip(r).map(|(y, r)| *y as f64 * *r as f64).sum()
}

fn check(case: Case) {
    let mut rng = Rng::new(11);
    let r = case.r.clone().unwrap_or_else(|| random(&mut rng, case.out_len));
    let mut rig = Rig::default();
    let ids: Vec<_> = case.inputs.iter().map(|v| rig.f32(v)).collect();
    let (_, fwd, bwd, grads) = (case.make)(&mut rig, &ids, &r);
    let mut be = rig.cpu();
    run(&mut be, &fwd, case.n);
    run(&mut be, &bwd, case.n);
    for (k, g) in grads.iter().enumerate() {
        let analytic = be.download_f32(*g).unwrap();
        let mut numeric = Vec::new();
        for i in 0..case.inputs[k].len() {
            let mut plus = case.inputs.clone();
            plus[k][i] += H;
            let mut minus = case.inputs.clone();
            minus[k][i] -= H;
            numeric.push(((objective(&case, &plus, &r) - objective(&case, &minus, &r)) / (2.0 * H as f64)) as f32);
        }
        assert_close(&format!("{} input {k}", case.name), &analytic[..numeric.len()], &numeric, 1e-2, 1e-3);
    }
}

/// Distinct values, at least 6h from each other and from 0, of both signs, shuffled: no kinks
/// within ±h.
fn away_from_kinks(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> =
        (0..len).map(|i| (i / 2 + 1) as f32 * 6.0 * H * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    rng.shuffle(&mut v);
    v
}

#[test]
fn dense_gradients() {
    let (n, n_in, n_out) = (3, 5, 4);
    let mut rng = Rng::new(1);
    check(Case {
        name: "dense",
        inputs: vec![random(&mut rng, n * n_in), random(&mut rng, n_out * n_in), random(&mut rng, n_out)],
        make: &|rig, ids, r| {
            let (y, gy) = (rig.zeros(n * n_out), rig.f32(r));
            let (gx, gw, gb) = (rig.zeros(n * n_in), rig.zeros(n_out * n_in), rig.zeros(n_out));
            let (x, w, b) = (ids[0], ids[1], ids[2]);
            (
                y,
                vec![Op::Dense { x, w, b, y, n_in, n_out }],
                vec![Op::DenseBackward { x, w, gy, gx: Some(gx), gw, gb, n_in, n_out }],
                vec![gx, gw, gb],
            )
        },
        out_len: n * n_out,
        n,
        r: None,
    });
}

fn conv_case(name: &str, g: ConvGeom, transpose: bool) {
    let n = 2;
    let (wl, out_len) = if transpose {
        (g.c_in * g.c_out * 4, n * g.c_out * 4 * g.h * g.w)
    } else {
        (g.c_out * g.c_in * g.k * g.k, n * g.c_out * g.out().0 * g.out().1)
    };
    let x_len = n * g.c_in * g.h * g.w;
    let mut rng = Rng::new(2);
    check(Case {
        name,
        inputs: vec![random(&mut rng, x_len), random(&mut rng, wl), random(&mut rng, g.c_out)],
        make: &|rig, ids, r| {
            let (y, gy) = (rig.zeros(out_len), rig.f32(r));
            let (gx, gw, gb) = (rig.zeros(x_len), rig.zeros(wl), rig.zeros(g.c_out));
            let (x, w, b) = (ids[0], ids[1], ids[2]);
            let (f, bk) = if transpose {
                (
                    Op::ConvTranspose2d { x, w, b, y, g },
                    Op::ConvTranspose2dBackward { x, w, gy, gx: Some(gx), gw, gb, g },
                )
            } else {
                (Op::Conv2d { x, w, b, y, g }, Op::Conv2dBackward { x, w, gy, gx: Some(gx), gw, gb, g })
            };
            (y, vec![f.clone()], vec![f, bk], vec![gx, gw, gb])
        },
        out_len,
        n,
        r: None,
    });
}

#[test]
fn conv2d_gradients() {
    conv_case("conv3x3", ConvGeom::same(2, 3, 5, 4, 3), false);
    conv_case("conv1x1", ConvGeom::same(3, 2, 3, 5, 1), false);
    conv_case("conv5x5", ConvGeom::same(1, 2, 4, 6, 5), false);
    conv_case("conv3x3 stride 2 pad 1", ConvGeom { stride: 2, ..ConvGeom::same(2, 3, 7, 6, 3) }, false);
    conv_case("conv2x2 valid", ConvGeom { pad: 0, ..ConvGeom::same(2, 2, 5, 4, 2) }, false);
    conv_case("conv3x3 stride 2 valid", ConvGeom { pad: 0, stride: 2, ..ConvGeom::same(1, 2, 8, 7, 3) }, false);
}

#[test]
fn conv_transpose_gradients() {
    conv_case("convT", ConvGeom::same(3, 2, 3, 2, 2), true);
}

#[test]
fn maxpool_gradients() {
    let (n, s) = (2, Shape::new(2, 5, 7)); // odd sizes: the last row and column are dropped
    let out = s.c * (s.h / 2) * (s.w / 2);
    let mut rng = Rng::new(3);
    check(Case {
        name: "maxpool",
        inputs: vec![away_from_kinks(&mut rng, n * s.len())],
        make: &|rig, ids, r| {
            let (y, gy, gx) = (rig.zeros(n * out), rig.f32(r), rig.zeros(n * s.len()));
            let argmax = rig.u32(&vec![0; n * out]);
            (
                y,
                vec![Op::MaxPool2d { x: ids[0], y, argmax, shape: s }],
                vec![
                    Op::MaxPool2d { x: ids[0], y, argmax, shape: s },
                    Op::MaxPool2dBackward { gy, argmax, gx, shape: s },
                ],
                vec![gx],
            )
        },
        out_len: n * out,
        n,
        r: None,
    });
}

#[test]
fn activation_and_dropout_gradients() {
    let (n, per) = (3, 7);
    for act in [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu] {
        let mut rng = Rng::new(4);
        check(Case {
            name: act.name(),
            inputs: vec![away_from_kinks(&mut rng, n * per)],
            make: &|rig, ids, r| {
                let (y, gy, gx) = (rig.zeros(n * per), rig.f32(r), rig.zeros(n * per));
                let f = Op::Activation { act, x: ids[0], y, per };
                (y, vec![f.clone()], vec![f, Op::ActivationBackward { act, y, gy, gx, per }], vec![gx])
            },
            out_len: n * per,
            n,
            r: None,
        });
    }
    let mut rng = Rng::new(5);
    check(Case {
        name: "dropout",
        inputs: vec![random(&mut rng, n * per)],
        make: &|rig, ids, r| {
            let (y, gy, gx, mask) = (rig.zeros(n * per), rig.f32(r), rig.zeros(n * per), rig.zeros(n * per));
            let f = Op::Dropout { x: ids[0], y, mask, per, rate: 0.4, seed: 9 };
            (y, vec![f.clone()], vec![f, Op::DropoutBackward { gy, mask, gx, per }], vec![gx])
        },
        out_len: n * per,
        n,
        r: None,
    });
}

#[test]
fn loss_gradients() {
    let (n, k) = (3, 4);
    let mut rng = Rng::new(6);
    let logits = random(&mut rng, n * k);
    let onehot: Vec<f32> = (0..n * k).map(|i| f32::from(i % k == (i / k + 1) % k)).collect();
    let mask: Vec<f32> = (0..n * k).map(|i| f32::from(i % 3 == 0)).collect();
    for softmax in [true, false] {
        let target = if softmax { onehot.clone() } else { mask.clone() };
        check(Case {
            name: if softmax { "softmax_cross_entropy" } else { "sigmoid_bce" },
            inputs: vec![logits.clone()],
            // The output is the metrics buffer; r picks its loss slot (the batch loss × n) / n.
            make: &|rig, ids, _| {
                let (t, probs, grad, metrics) =
                    (rig.f32(&target), rig.zeros(n * k), rig.zeros(n * k), rig.zeros(slot::LEN));
                let op = |grad| {
                    if softmax {
                        Op::SoftmaxCrossEntropy {
                            logits: ids[0],
                            target: t,
                            probs,
                            grad,
                            metrics,
                            classes: k,
                            batch: n,
                        }
                    } else {
                        Op::SigmoidBce { logits: ids[0], target: t, probs, grad, metrics, per: k, batch: n }
                    }
                };
                (metrics, vec![op(None)], vec![op(Some(grad))], vec![grad])
            },
            out_len: slot::LEN,
            n,
            r: Some((0..slot::LEN).map(|i| if i == slot::LOSS { 1.0 / n as f32 } else { 0.0 }).collect()),
        });
    }
}
