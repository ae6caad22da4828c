//! Every op, forward and backward, on the GPU against the CPU backend, on awkward shapes: sizes
//! that are not multiples of the 64-wide tiles or 256-wide workgroups, batch 1, one channel, odd
//! heights and widths for pooling, all-negative pooling windows. After the ops run, every f32
//! buffer (inputs, outputs, gradients, metrics) must agree.
//!
//! Tolerance: 1e-5 relative (the golden README's forward tolerance) + 2e-6 × the buffer's largest
//! magnitude. The two backends sum the same f32 terms in different orders (the CPU in blocked
//! GEMMs, the GPU in workgroup tiles and fixed batch slices). A sum of K terms then moves by about
//! √K·ε·(term size) whatever its own size, so where terms cancel (a weight gradient of 0.003 made
//! of 300 products of size ~1) only an absolute bound on the scale of the terms holds; the
//! buffer's largest value stands for that scale. A wrong index or a missed term errs by the
//! size of a term, hundreds of times more.

mod common;

use common::*;
use gpu_train::graph::{slot, BufDesc, BufId, ConvGeom, Dtype, Op, Step};
use gpu_train::model::{Act, Shape};
use gpu_train::rng::Rng;

const TOL: (f32, f32) = (1e-5, 2e-6);

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

/// Runs `ops` for a batch of `n` on both backends and compares every f32 buffer.
fn parity(what: &str, r: &Rig, ops: &[Op], n: usize, t: u32) {
    parity_but(what, r, ops, n, t, &[]);
}

/// [`parity`], but `unstored` are not compared: the GPU never writes them (it reads them
/// through the op that would), and must leave them as they were.
fn parity_but(what: &str, r: &Rig, ops: &[Op], n: usize, t: u32, unstored: &[BufId]) {
    let (mut cpu, mut gpu) = (r.on(Kind::Cpu), r.on(Kind::Gpu));
    let step = Step { n, offset: 0, t };
    cpu.run(ops, step).unwrap();
    gpu.run(ops, step).unwrap();
    for &id in unstored {
        let (c, g) = (cpu.download_f32(id).unwrap(), gpu.download_f32(id).unwrap());
        assert!(c.iter().any(|&v| v != 0.0), "{what}: the CPU wrote {:?}", r.descs[id.0].name);
        assert!(g.iter().all(|&v| v == 0.0), "{what}: the GPU wrote {:?}", r.descs[id.0].name);
    }
    for (i, BufDesc { dtype, name, .. }) in r.descs.iter().enumerate() {
        let id = BufId(i);
        if *dtype == Dtype::F32 && !unstored.contains(&id) {
            let (c, g) = (cpu.download_f32(id).unwrap(), gpu.download_f32(id).unwrap());
            let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("{what}: buffer {name}"), &g, &c, TOL.0, TOL.1 * scale);
        }
    }
}

/// The last two cases have enough tiles to run in 64-wide ones (64x64, 16x64 and 64x16), with
/// every layout of the operands (k adjacent in memory in both, in one, in neither); the others
/// are small enough for 16x16 tiles.
#[test]
fn dense() {
    let mut rng = Rng::new(1);
    let cases = [
        (1, 1, 1, true),
        (67, 70, 13, true),
        (3, 129, 65, false),
        (130, 5, 200, true),
        (1100, 450, 470, true),
        (20, 30, 9000, true),
    ];
    for (n, n_in, n_out, with_gx) in cases {
        let mut r = Rig::default();
        let (x, w, b) = (
            r.f32(&normal(&mut rng, n * n_in)),
            r.f32(&normal(&mut rng, n_out * n_in)),
            r.f32(&normal(&mut rng, n_out)),
        );
        let gy = r.f32(&normal(&mut rng, n * n_out));
        let (y, gw, gb) = (r.zeros(n * n_out), r.zeros(n_out * n_in), r.zeros(n_out));
        let gx = with_gx.then(|| r.zeros(n * n_in));
        let ops = [Op::Dense { x, w, b, y, n_in, n_out }, Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out }];
        parity(&format!("dense n {n} in {n_in} out {n_out}"), &r, &ops, n, 1);
    }
}

/// Buffers sized for a batch of `cap` while the step runs `n ≤ cap`: the short last batch.
#[test]
fn dense_short_batch() {
    let mut rng = Rng::new(2);
    let (cap, n, n_in, n_out) = (40, 17, 30, 9);
    let mut r = Rig::default();
    let (x, w, b) =
        (r.f32(&normal(&mut rng, cap * n_in)), r.f32(&normal(&mut rng, n_out * n_in)), r.f32(&normal(&mut rng, n_out)));
    let gy = r.f32(&normal(&mut rng, cap * n_out));
    let (y, gx, gw, gb) = (r.zeros(cap * n_out), r.zeros(cap * n_in), r.zeros(n_out * n_in), r.zeros(n_out));
    let ops =
        [Op::Dense { x, w, b, y, n_in, n_out }, Op::DenseBackward { x, w, gy, gx: Some(gx), gw, gb, n_in, n_out }];
    parity("dense short batch", &r, &ops, n, 1);
}

/// The last case runs its forward and data-gradient products in 64-wide tiles.
#[test]
fn conv2d() {
    let mut rng = Rng::new(3);
    let cases = [
        (1, 1, 1, 1, 1, 3),
        (2, 1, 3, 7, 5, 3),
        (3, 4, 6, 9, 11, 3),
        (2, 5, 3, 6, 4, 1),
        (1, 2, 70, 5, 5, 3),
        (40, 3, 70, 16, 15, 3),
    ];
    for (n, c_in, c_out, h, w, k) in cases {
        let g = ConvGeom::same(c_in, c_out, h, w, k);
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * c_in * h * w));
        let wt = r.f32(&normal(&mut rng, c_out * c_in * k * k));
        let b = r.f32(&normal(&mut rng, c_out));
        let gy = r.f32(&normal(&mut rng, n * c_out * h * w));
        let (y, gx, gw, gb) =
            (r.zeros(n * c_out * h * w), r.zeros(n * c_in * h * w), r.zeros(c_out * c_in * k * k), r.zeros(c_out));
        let ops = [Op::Conv2d { x, w: wt, b, y, g }, Op::Conv2dBackward { x, w: wt, gy, gx: Some(gx), gw, gb, g }];
        parity(&format!("conv2d {g:?} n {n}"), &r, &ops, n, 1);
    }
}

#[test]
fn conv_transpose() {
    let mut rng = Rng::new(4);
    // The last case sums both gradients in slices (2 and 8 of them), in one launch on the GPU.
    for (n, c_in, c_out, h, w) in [(1, 1, 1, 1, 1), (2, 3, 2, 5, 3), (3, 1, 17, 4, 7), (2, 3, 5, 12, 12)] {
        let g = ConvGeom::same(c_in, c_out, h, w, 2);
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * c_in * h * w));
        let wt = r.f32(&normal(&mut rng, c_in * c_out * 4));
        let b = r.f32(&normal(&mut rng, c_out));
        let gy = r.f32(&normal(&mut rng, n * c_out * 4 * h * w));
        let (y, gx, gw, gb) =
            (r.zeros(n * c_out * 4 * h * w), r.zeros(n * c_in * h * w), r.zeros(c_in * c_out * 4), r.zeros(c_out));
        let ops = [
            Op::ConvTranspose2d { x, w: wt, b, y, g },
            Op::ConvTranspose2dBackward { x, w: wt, gy, gx: Some(gx), gw, gb, g },
        ];
        parity(&format!("conv-transpose {g:?} n {n}"), &r, &ops, n, 1);
    }
}

#[test]
fn maxpool_odd_sizes_and_negative_maxima() {
    let mut rng = Rng::new(5);
    for (n, shape, negative) in
        [(1, Shape::new(1, 2, 2), false), (3, Shape::new(3, 7, 5), true), (2, Shape::new(2, 9, 8), false)]
    {
        let len = n * shape.len();
        let xs: Vec<f32> =
            normal(&mut rng, len).into_iter().map(|v| if negative { -v.abs() - 0.5 } else { v }).collect();
        let per_out = shape.c * (shape.h / 2) * (shape.w / 2);
        let mut r = Rig::default();
        let x = r.f32(&xs);
        let gy = r.f32(&normal(&mut rng, n * per_out));
        let (y, gx) = (r.zeros(n * per_out), r.f32(&vec![f32::NAN; len]));
        let argmax = r.u32(&vec![0; n * per_out]);
        let ops = [Op::MaxPool2d { x, y, argmax, shape }, Op::MaxPool2dBackward { gy, argmax, gx, shape }];
        parity(&format!("maxpool {shape:?} n {n}"), &r, &ops, n, 1);
    }
}

/// An activation, pooling, and their backward passes in the order of a training step; the GPU
/// runs the two backward passes as one launch. The pooling's gradient is read once more at the
/// end: the CPU writes an intermediate gradient only when a later op reads it.
#[test]
fn activation_then_pooling_and_back() {
    let mut rng = Rng::new(12);
    for (n, shape, act) in [(2, Shape::new(3, 7, 6), Act::Relu), (1, Shape::new(2, 5, 9), Act::Tanh)] {
        let (len, per_out) = (n * shape.len(), shape.c * (shape.h / 2) * (shape.w / 2));
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, len));
        let gy = r.f32(&normal(&mut rng, n * per_out));
        let (a, y, ga, gx, again) = (r.zeros(len), r.zeros(n * per_out), r.zeros(len), r.zeros(len), r.zeros(len));
        let argmax = r.u32(&vec![0; n * per_out]);
        let per = shape.len();
        let ops = [
            Op::Activation { act, x, y: a, per },
            Op::MaxPool2d { x: a, y, argmax, shape },
            Op::MaxPool2dBackward { gy, argmax, gx: ga, shape },
            Op::ActivationBackward { act, y: a, gy: ga, gx, per },
            Op::Activation { act, x: ga, y: again, per },
        ];
        parity(&format!("{} then pooling {shape:?} n {n}", act.name()), &r, &ops, n, 1);
    }
}

/// Convolution, ReLU, pooling and a convolution of the pooled values, forward and backward in
/// the order of a training step. The GPU never stores the pooling: the second convolution reads
/// its input through it, and the pooling's backward finds each window's maximum again, in a
/// launch of its own when the pooling's gradient is read again at the end, else as the second
/// convolution's data gradient is stored. ReLU's zeros make ties within windows, which both
/// backends must break alike.
#[test]
fn convolution_through_a_pooling() {
    let mut rng = Rng::new(13);
    let cases = [(2, 1, 3, 5, 8, true), (1, 2, 4, 3, 6, true), (2, 1, 3, 5, 8, false), (1, 3, 2, 4, 10, false)];
    for (n, c0, c1, c2, side, read_again) in cases {
        let (g1, g2) = (ConvGeom::same(c0, c1, side, side, 3), ConvGeom::same(c1, c2, side / 2, side / 2, 3));
        let shape = Shape::new(c1, side, side);
        let (hw, hw2) = (side * side, side * side / 4);
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * c0 * hw));
        let (w1, b1) = (r.f32(&normal(&mut rng, c1 * c0 * 9)), r.f32(&normal(&mut rng, c1)));
        let (w2, b2) = (r.f32(&normal(&mut rng, c2 * c1 * 9)), r.f32(&normal(&mut rng, c2)));
        let gy = r.f32(&normal(&mut rng, n * c2 * hw2));
        let (y1, a1, pooled, y2) =
            (r.zeros(n * c1 * hw), r.zeros(n * c1 * hw), r.zeros(n * c1 * hw2), r.zeros(n * c2 * hw2));
        let argmax = r.u32(&vec![0; n * c1 * hw2]);
        let (g_pooled, g_a1, g_y1) = (r.zeros(n * c1 * hw2), r.zeros(n * c1 * hw), r.zeros(n * c1 * hw));
        let (gw1, gb1, gw2, gb2) = (r.zeros(c1 * c0 * 9), r.zeros(c1), r.zeros(c2 * c1 * 9), r.zeros(c2));
        let per = c1 * hw;
        // The CPU stores what a fused op leaves in between only when a later op reads it.
        let again = [r.zeros(n * per), r.zeros(n * per)];
        let ops = [
            Op::Conv2d { x, w: w1, b: b1, y: y1, g: g1 },
            Op::Activation { act: Act::Relu, x: y1, y: a1, per },
            Op::MaxPool2d { x: a1, y: pooled, argmax, shape },
            Op::Conv2d { x: pooled, w: w2, b: b2, y: y2, g: g2 },
            Op::Conv2dBackward { x: pooled, w: w2, gy, gx: Some(g_pooled), gw: gw2, gb: gb2, g: g2 },
            Op::MaxPool2dBackward { gy: g_pooled, argmax, gx: g_a1, shape },
            Op::ActivationBackward { act: Act::Relu, y: a1, gy: g_a1, gx: g_y1, per },
            Op::Conv2dBackward { x, w: w1, gy: g_y1, gx: None, gw: gw1, gb: gb1, g: g1 },
            Op::Activation { act: Act::Relu, x: y1, y: again[0], per },
            Op::Activation { act: Act::Relu, x: g_a1, y: again[1], per },
        ];
        let ops = if read_again { &ops[..] } else { &ops[..ops.len() - 1] };
        let what = format!("conv, relu, pooling {shape:?}, conv, n {n}, pooling's gradient read: {read_again}");
        parity_but(&what, &r, ops, n, 1, &[pooled]);
    }
}

#[test]
fn activations_and_dropout() {
    let mut rng = Rng::new(6);
    let (n, per) = (3, 1001);
    for act in [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu] {
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * per).iter().map(|v| v * 4.0).collect::<Vec<_>>());
        let gy = r.f32(&normal(&mut rng, n * per));
        let (y, gx) = (r.zeros(n * per), r.zeros(n * per));
        let ops = [Op::Activation { act, x, y, per }, Op::ActivationBackward { act, y, gy, gx, per }];
        parity(act.name(), &r, &ops, n, 1);
    }
    for (rate, t) in [(0.3, 5), (0.5, 77), (0.0, 2)] {
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * per));
        let gy = r.f32(&normal(&mut rng, n * per));
        let (y, mask, gx) = (r.zeros(n * per), r.zeros(n * per), r.zeros(n * per));
        let ops = [Op::Dropout { x, y, mask, per, rate, seed: 99 }, Op::DropoutBackward { gy, mask, gx, per }];
        parity(&format!("dropout {rate} at step {t}"), &r, &ops, n, t);
    }
}

#[test]
fn losses_metrics_and_confusion() {
    let mut rng = Rng::new(7);
    // The last cases count their step as several batches (a test pass in large steps); 40
    // classes make a confusion matrix of more cells than the GPU counts at once.
    let cases = [(1, 10, true, 1), (37, 10, true, 37), (300, 3, false, 64), (37, 10, true, 10), (700, 40, false, 100)];
    for (n, k, with_grad, batch) in cases {
        let mut r = Rig::default();
        let logits = r.f32(&normal(&mut rng, n * k).iter().map(|v| v * 3.0).collect::<Vec<_>>());
        let onehot: Vec<f32> =
            (0..n).flat_map(|s| (0..k).map(move |c| f32::from(u8::from(c == (s * 7) % k)))).collect();
        let target = r.f32(&onehot);
        let (probs, metrics, counts) = (r.zeros(n * k), r.f32(&[0.5; 7]), r.zeros(k * k));
        let grad = with_grad.then(|| r.zeros(n * k));
        let ops = [
            Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, batch },
            Op::Confusion { probs, target, counts, classes: k },
        ];
        parity(&format!("softmax-ce n {n} k {k} in batches of {batch}"), &r, &ops, n, 1);
    }
    for (n, per, batch) in [(1, 1, 1), (3, 77, 3), (2, 1500, 2), (7, 300, 2), (5, 77, 8)] {
        let mut r = Rig::default();
        let logits = r.f32(&normal(&mut rng, n * per).iter().map(|v| v * 5.0).collect::<Vec<_>>());
        let target = r.f32(&(0..n * per).map(|_| f32::from(u8::from(rng.uniform() < 0.4))).collect::<Vec<_>>());
        let (probs, grad, metrics) = (r.zeros(n * per), r.zeros(n * per), r.zeros(7));
        let ops = [Op::SigmoidBce { logits, target, probs, grad: Some(grad), metrics, per, batch }];
        parity(&format!("sigmoid-bce n {n} per {per} in batches of {batch}"), &r, &ops, n, 1);
    }
}

/// The MLP's last layer in a training step: dense, softmax cross-entropy and the layer's
/// backward, with the weights and bias in their parameter set. With `step`, its gradients are
/// in theirs too, the backward of the sigmoid before the layer follows, then plain SGD, and the
/// GPU runs it all in the loss's one launch; without, it computes only the logits there. The
/// raw data gradient is read once more at the end: the CPU stores an intermediate gradient only
/// when a later op reads it.
#[test]
fn last_dense_layer_and_softmax_cross_entropy() {
    let mut rng = Rng::new(14);
    // Without the step: one sample, awkward sizes, the most samples a launch computes itself.
    // With: one sample, awkward sizes, the MLP's own sizes.
    let cases = [
        (1, 3, 2, false),
        (37, 50, 10, false),
        (256, 20, 10, false),
        (1, 3, 2, true),
        (37, 50, 10, true),
        (100, 100, 10, true),
    ];
    for (n, n_in, k, step) in cases {
        let mut r = Rig::default();
        let x = r.f32(&(0..n * n_in).map(|_| rng.uniform()).collect::<Vec<_>>());
        let (w, b) = (r.param(&normal(&mut rng, k * n_in)), r.param(&normal(&mut rng, k)));
        let (gw, gb) = if step { (r.grad(k * n_in), r.grad(k)) } else { (r.zeros(k * n_in), r.zeros(k)) };
        let onehot: Vec<f32> =
            (0..n).flat_map(|s| (0..k).map(move |c| f32::from(u8::from(c == (s * 7) % k)))).collect();
        let target = r.f32(&onehot);
        let (logits, probs, grad, metrics) = (r.zeros(n * k), r.zeros(n * k), r.zeros(n * k), r.zeros(slot::LEN));
        let (gx, g_act, again) = (r.zeros(n * n_in), r.zeros(n * n_in), r.zeros(n * n_in));
        let mut ops = vec![
            Op::Dense { x, w, b, y: logits, n_in, n_out: k },
            Op::SoftmaxCrossEntropy { logits, target, probs, grad: Some(grad), metrics, classes: k, batch: n },
            Op::DenseBackward { x, w, gy: grad, gx: Some(gx), gw, gb, n_in, n_out: k },
        ];
        if step {
            ops.extend([
                Op::ActivationBackward { act: Act::Sigmoid, y: x, gy: gx, gx: g_act, per: n_in },
                Op::Sgd { w, g: gw, lr: 0.25, len: k * n_in },
                Op::Sgd { w: b, g: gb, lr: 0.25, len: k },
                Op::Activation { act: Act::Sigmoid, x: gx, y: again, per: n_in },
            ]);
        }
        parity(&format!("dense {n_in} -> softmax-ce {k}, n {n}, with the step: {step}"), &r, &ops, n, 1);
    }
}

/// The FCN's last layer in a training step: a 1x1 convolution to one channel, sigmoid
/// cross-entropy, and the convolution's backward with the backward of the ReLU before it. The
/// GPU computes the logits and the data gradient in the loss's launch. The raw data gradient is
/// read once more at the end, so that the CPU stores it.
#[test]
fn last_convolution_and_sigmoid_cross_entropy() {
    let mut rng = Rng::new(16);
    for (n, c_in, h, w) in [(1, 3, 5, 7), (2, 8, 12, 12)] {
        let g = ConvGeom::same(c_in, 1, h, w, 1);
        let (hw, per) = (h * w, c_in * h * w);
        let mut r = Rig::default();
        let x = r.f32(&normal(&mut rng, n * per).iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
        let (wt, b) = (r.param(&normal(&mut rng, c_in)), r.param(&normal(&mut rng, 1)));
        let target = r.f32(&(0..n * hw).map(|_| f32::from(u8::from(rng.uniform() < 0.4))).collect::<Vec<_>>());
        let (logits, probs, grad, metrics) = (r.zeros(n * hw), r.zeros(n * hw), r.zeros(n * hw), r.zeros(slot::LEN));
        let (gx, g_act, again, gw, gb) =
            (r.zeros(n * per), r.zeros(n * per), r.zeros(n * per), r.zeros(c_in), r.zeros(1));
        let ops = [
            Op::Conv2d { x, w: wt, b, y: logits, g },
            Op::SigmoidBce { logits, target, probs, grad: Some(grad), metrics, per: hw, batch: n },
            Op::Conv2dBackward { x, w: wt, gy: grad, gx: Some(gx), gw, gb, g },
            Op::ActivationBackward { act: Act::Relu, y: x, gy: gx, gx: g_act, per },
            Op::Activation { act: Act::Relu, x: gx, y: again, per },
        ];
        parity(&format!("1x1 conv of {c_in} channels {h}x{w}, sigmoid-bce, n {n}"), &r, &ops, n, 1);
    }
}

/// A step of several batches adds the same metrics, bit for bit, as steps of one batch each,
/// on both backends: what lets the test pass run in large steps.
#[test]
fn a_large_step_counts_as_steps_of_its_batch() {
    let mut rng = Rng::new(13);
    let (n, per, batch) = (11, 300, 4);
    let logits = normal(&mut rng, n * per);
    let target: Vec<f32> = (0..n * per).map(|i| f32::from(u8::from(i % 10 == (i / per) % 10))).collect();
    for softmax in [true, false] {
        let loss = |r: &mut Rig, at: usize, len: usize, metrics, batch| {
            let rows = at * per..(at + len) * per;
            let (logits, target, probs) = (r.f32(&logits[rows.clone()]), r.f32(&target[rows]), r.zeros(len * per));
            let op = match softmax {
                true => Op::SoftmaxCrossEntropy { logits, target, probs, grad: None, metrics, classes: per, batch },
                false => Op::SigmoidBce { logits, target, probs, grad: None, metrics, per, batch },
            };
            (op, probs)
        };
        for kind in [Kind::Cpu, Kind::Gpu] {
            let mut r = Rig::default();
            let (one, many) = (r.zeros(7), r.zeros(7));
            let (large, large_probs) = loss(&mut r, 0, n, one, batch);
            let small: Vec<_> =
                (0..n).step_by(batch).map(|at| (at, loss(&mut r, at, batch.min(n - at), many, batch))).collect();
            let mut be = r.on(kind);
            be.run(&[large], Step { n, offset: 0, t: 1 }).unwrap();
            let mut probs = Vec::new();
            for (at, (op, p)) in small {
                be.run(&[op], Step { n: batch.min(n - at), offset: 0, t: 1 }).unwrap();
                probs.extend(be.download_f32(p).unwrap());
            }
            let what = format!("{kind:?}, softmax {softmax}");
            assert_eq!(be.download_f32(one).unwrap(), be.download_f32(many).unwrap(), "{what}: metrics");
            assert_eq!(be.download_f32(large_probs).unwrap(), probs, "{what}: outputs");
            assert_eq!(be.download_f32(one).unwrap()[slot::BATCHES], 3.0, "{what}: batches");
        }
    }
}

#[test]
fn l2_and_optimisers_over_steps() {
    let mut rng = Rng::new(8);
    let len = 1000;
    for with_grad in [true, false] {
        let mut r = Rig::default();
        let w = r.f32(&normal(&mut rng, len));
        let grad = r.f32(&normal(&mut rng, len));
        let metrics = r.zeros(7);
        let ops = [Op::L2 { w, grad: with_grad.then_some(grad), metrics, lambda: 1e-3, len }];
        parity("l2", &r, &ops, 5, 1);
    }
    for t in [1, 2, 3, 1000] {
        let mut r = Rig::default();
        let (w, g) = (r.f32(&normal(&mut rng, len)), r.f32(&normal(&mut rng, len)));
        let (m, v) =
            (r.f32(&normal(&mut rng, len)), r.f32(&normal(&mut rng, len).iter().map(|x| x * x).collect::<Vec<_>>()));
        let ops = [
            Op::Adam { w, g, m, v, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, len },
            Op::Momentum { w, g, v: m, lr: 0.01, momentum: 0.8, len },
            Op::Sgd { w, g, lr: 0.25, len },
        ];
        parity(&format!("optimisers at step {t}"), &r, &ops, 1, t);
    }
}

#[test]
fn gather_with_mirroring_and_one_hot() {
    let mut rng = Rng::new(9);
    let (shape, samples) = (Shape::new(3, 5, 7), 6);
    let data: Vec<u8> = (0..samples * shape.len() + 1).map(|_| rng.next_u32() as u8).collect();
    let labels: Vec<u8> = (0..samples).map(|i| (i * 3 % 10) as u8).collect();
    let index = [5u32, 0, 7, 11, 2, 6, 3];
    for (binarize, mirrored) in [(false, 0), (false, samples), (true, samples)] {
        let n = 4;
        let mut r = Rig::default();
        let index = index.map(|j| if mirrored == 0 { j % samples as u32 } else { j });
        let (d, l, idx) = (r.u8(&data[..samples * shape.len()]), r.u8(&labels), r.u32(&index));
        let (out, target) = (r.zeros(index.len() * shape.len()), r.zeros(index.len() * 10));
        let mut ops = vec![Op::Gather { data: d, index: idx, out, shape, scale: 1.0 / 255.0, binarize, mirrored }];
        // The targets, gathered by the same index list (the GPU does both in one launch):
        // one-hot labels, or binary maps (mirrored alike) of the first two rows of each image.
        ops.push(if mirrored == 0 {
            Op::GatherOneHot { labels: l, index: idx, out: target, classes: 10 }
        } else {
            let maps = r.u8(&data[..samples * 10]);
            let shape = Shape::new(1, 2, 5);
            Op::Gather { data: maps, index: idx, out: target, shape, scale: 1.0, binarize: true, mirrored }
        });
        let mut be = [r.on(Kind::Cpu), r.on(Kind::Gpu)];
        for be in &mut be {
            be.run(&ops, Step { n, offset: 2, t: 1 }).unwrap();
        }
        for id in [out, target] {
            let (c, g) = (be[0].download_f32(id).unwrap(), be[1].download_f32(id).unwrap());
            assert_eq!(c, g, "gather binarize {binarize} mirrored {mirrored}");
        }
    }
}

/// Dispatches that need more than 65,535 workgroups fold into a second dimension.
#[test]
fn large_elementwise_dispatch() {
    let (n, per) = (1, 65_536 * 256 + 300);
    let mut rng = Rng::new(10);
    let mut r = Rig::default();
    let x = r.f32(&normal(&mut rng, n * per));
    let y = r.zeros(n * per);
    parity("relu over 16.8M elements", &r, &[Op::Activation { act: Act::Relu, x, y, per }], n, 1);
}
