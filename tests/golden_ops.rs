//! Every op, on every backend (the reference, the CPU and the GPU), against PyTorch golden values (../shared/golden or GPU_TRAIN_GOLDEN), at the
//! golden README's tolerances. Shapes come from the files.

mod common;

use common::*;
use gpu_train::graph::{slot, ConvGeom, Op};
use gpu_train::model::{Act, Shape};

fn dims(t: &gpu_train::checkpoint::Tensor) -> [usize; 4] {
    let s = &t.shape;
    [s[0], s[1], *s.get(2).unwrap_or(&1), *s.get(3).unwrap_or(&1)]
}

fn dense_matches_golden(kind: Kind) {
    let g = golden("dense");
    let [n, n_in, ..] = dims(&g["x"]);
    let n_out = g["w"].shape[0];
    let mut r = Rig::default();
    let (x, w, b, gy) = (r.f32(&g["x"].data), r.f32(&g["w"].data), r.f32(&g["b"].data), r.f32(&g["gy"].data));
    let (y, gx, gw, gb) = (r.zeros(n * n_out), r.zeros(n * n_in), r.zeros(n_out * n_in), r.zeros(n_out));
    let mut be = r.on(kind);
    run(
        &mut *be,
        &[Op::Dense { x, w, b, y, n_in, n_out }, Op::DenseBackward { x, w, gy, gx: Some(gx), gw, gb, n_in, n_out }],
        n,
    );
    assert_close("y", &be.download_f32(y).unwrap(), &g["y"].data, FWD.0, FWD.1);
    for (name, id) in [("gx", gx), ("gw", gw), ("gb", gb)] {
        assert_close(name, &be.download_f32(id).unwrap(), &g[name].data, GRAD.0, GRAD.1);
    }
}

/// A convolution's fixture, and for `Conv2d` its zeros on each side and stride (`None`: a
/// transposed convolution).
fn check_conv(file: &str, conv: Option<(usize, usize)>, kind: Kind) {
    let g = golden(file);
    let [n, c_in, h, w_] = dims(&g["x"]);
    let ws = dims(&g["w"]);
    let transpose = conv.is_none();
    let (c_out, k) = if transpose { (ws[1], 2) } else { (ws[0], ws[2]) };
    let (pad, stride) = conv.unwrap_or((0, 2));
    let geom = ConvGeom { pad, stride, ..ConvGeom::same(c_in, c_out, h, w_, k) };
    let mut r = Rig::default();
    let (x, w, b, gy) = (r.f32(&g["x"].data), r.f32(&g["w"].data), r.f32(&g["b"].data), r.f32(&g["gy"].data));
    let (y, gx, gw, gb) =
        (r.zeros(g["y"].data.len()), r.zeros(g["x"].data.len()), r.zeros(g["w"].data.len()), r.zeros(c_out));
    let ops = if transpose {
        [
            Op::ConvTranspose2d { x, w, b, y, g: geom },
            Op::ConvTranspose2dBackward { x, w, gy, gx: Some(gx), gw, gb, g: geom },
        ]
    } else {
        [Op::Conv2d { x, w, b, y, g: geom }, Op::Conv2dBackward { x, w, gy, gx: Some(gx), gw, gb, g: geom }]
    };
    let mut be = r.on(kind);
    run(&mut *be, &ops, n);
    assert_close("y", &be.download_f32(y).unwrap(), &g["y"].data, FWD.0, FWD.1);
    for (name, id) in [("gx", gx), ("gw", gw), ("gb", gb)] {
        assert_close(name, &be.download_f32(id).unwrap(), &g[name].data, GRAD.0, GRAD.1);
    }
}

fn conv2d_3x3_matches_golden(kind: Kind) {
    check_conv("conv2d_3x3", Some((1, 1)), kind);
}

fn conv2d_1x1_matches_golden(kind: Kind) {
    check_conv("conv2d_1x1", Some((0, 1)), kind);
}

/// 3x3 at stride 2 with one zero each side, 2x2 with none, 5x5 at stride 2 with none; a 9x8
/// input, so that a stride drops a last column or row as PyTorch's does.
fn strided_and_valid_conv2d_match_golden(kind: Kind) {
    for (file, pad, stride) in [("conv2d_3x3_s2p1", 1, 2), ("conv2d_2x2_valid", 0, 1), ("conv2d_5x5_s2_valid", 0, 2)] {
        check_conv(file, Some((pad, stride)), kind);
    }
}

fn conv_transpose_matches_golden(kind: Kind) {
    check_conv("conv_transpose2d_2x2s2", None, kind);
}

fn maxpool_matches_golden(kind: Kind) {
    let g = golden("maxpool2x2");
    let [n, c, h, w] = dims(&g["x"]);
    let shape = Shape::new(c, h, w);
    let mut r = Rig::default();
    let (x, gy) = (r.f32(&g["x"].data), r.f32(&g["gy"].data));
    let (y, gx) = (r.zeros(g["y"].data.len()), r.zeros(g["x"].data.len()));
    let argmax = r.u32(&vec![0; g["y"].data.len()]);
    let mut be = r.on(kind);
    run(&mut *be, &[Op::MaxPool2d { x, y, argmax, shape }, Op::MaxPool2dBackward { gy, argmax, gx, shape }], n);
    assert_close("y", &be.download_f32(y).unwrap(), &g["y"].data, FWD.0, FWD.1);
    assert_close("gx", &be.download_f32(gx).unwrap(), &g["gx"].data, GRAD.0, GRAD.1);
}

/// `F.avg_pool2d(x, 2)` on 7x9 planes: the odd last row and column dropped.
fn avgpool_matches_golden(kind: Kind) {
    let g = golden("avgpool2x2");
    let [n, c, h, w] = dims(&g["x"]);
    let shape = Shape::new(c, h, w);
    let mut r = Rig::default();
    let (x, gy) = (r.f32(&g["x"].data), r.f32(&g["gy"].data));
    let (y, gx) = (r.zeros(g["y"].data.len()), r.zeros(g["x"].data.len()));
    let mut be = r.on(kind);
    run(&mut *be, &[Op::AvgPool2d { x, y, shape }, Op::AvgPool2dBackward { gy, gx, shape }], n);
    assert_close("y", &be.download_f32(y).unwrap(), &g["y"].data, FWD.0, FWD.1);
    assert_close("gx", &be.download_f32(gx).unwrap(), &g["gx"].data, GRAD.0, GRAD.1);
}

fn activations_match_golden(kind: Kind) {
    let g = golden("activations");
    let [n, per, ..] = dims(&g["x"]);
    for act in [Act::Relu, Act::Sigmoid, Act::Tanh] {
        let mut r = Rig::default();
        let (x, gy) = (r.f32(&g["x"].data), r.f32(&g["gy"].data));
        let (y, gx) = (r.zeros(n * per), r.zeros(n * per));
        let mut be = r.on(kind);
        run(&mut *be, &[Op::Activation { act, x, y, per }, Op::ActivationBackward { act, y, gy, gx, per }], n);
        let name = act.name();
        assert_close(&format!("{name}.y"), &be.download_f32(y).unwrap(), &g[&format!("{name}.y")].data, FWD.0, FWD.1);
        assert_close(
            &format!("{name}.gx"),
            &be.download_f32(gx).unwrap(),
            &g[&format!("{name}.gx")].data,
            GRAD.0,
            GRAD.1,
        );
    }
}

/// PyTorch's `F.leaky_relu` (slope 0.01), with zeros and ties among the inputs.
fn leaky_relu_matches_golden(kind: Kind) {
    let g = golden("leaky_relu");
    let [n, per, ..] = dims(&g["x"]);
    let act = Act::LeakyRelu;
    let mut r = Rig::default();
    let (x, gy) = (r.f32(&g["x"].data), r.f32(&g["gy"].data));
    let (y, gx) = (r.zeros(n * per), r.zeros(n * per));
    let mut be = r.on(kind);
    run(&mut *be, &[Op::Activation { act, x, y, per }, Op::ActivationBackward { act, y, gy, gx, per }], n);
    assert_close("leaky_relu.y", &be.download_f32(y).unwrap(), &g["y"].data, FWD.0, FWD.1);
    assert_close("leaky_relu.gx", &be.download_f32(gx).unwrap(), &g["gx"].data, GRAD.0, GRAD.1);
}

/// PyTorch's `nn.BatchNorm2d(4)` in training (batch statistics, the running ones moved, every
/// gradient), then in evaluation on other inputs (the running statistics).
fn batch_norm_matches_golden(kind: Kind) {
    let g = golden("batch_norm");
    let [n, c, h, w] = dims(&g["x"]);
    let (hw, len) = (h * w, n * c * h * w);
    let mut r = Rig::default();
    let (x, gy) = (r.f32(&g["x"].data), r.f32(&g["gy"].data));
    let (gamma, beta) = (r.param(&g["gamma"].data), r.param(&g["beta"].data));
    let running = [r.f32(&g["running_mean0"].data), r.f32(&g["running_var0"].data), r.zeros(1)];
    let (y, stats, gx, ggamma, gbeta) = (r.zeros(len), r.zeros(2 * c), r.zeros(len), r.grad(c), r.grad(c));
    let n_eval = dims(&g["x_eval"])[0];
    let (x_eval, y_eval, stats_eval) = (r.f32(&g["x_eval"].data), r.zeros(n_eval * c * hw), r.zeros(2 * c));
    let (momentum, eps) = (0.1, 1e-5);
    let mut be = r.on(kind);
    let train = [
        Op::BatchNorm { x, gamma, beta, y, stats, running, c, hw, train: true, momentum, eps },
        Op::BatchNormBackward { x, gamma, stats, gy, gx: Some(gx), ggamma, gbeta, c, hw },
    ];
    run(&mut *be, &train, n);
    let eval = Op::BatchNorm {
        x: x_eval,
        gamma,
        beta,
        y: y_eval,
        stats: stats_eval,
        running,
        c,
        hw,
        train: false,
        momentum,
        eps,
    };
    run(&mut *be, &[eval], n_eval);
    for (key, id) in [("y", y), ("running_mean", running[0]), ("running_var", running[1]), ("y_eval", y_eval)] {
        assert_close(key, &be.download_f32(id).unwrap(), &g[key].data, FWD.0, FWD.1);
    }
    for (key, id) in [("gx", gx), ("ggamma", ggamma), ("gbeta", gbeta)] {
        assert_close(key, &be.download_f32(id).unwrap(), &g[key].data, GRAD.0, GRAD.1);
    }
    assert_eq!(be.download_f32(running[2]).unwrap(), [1.0], "one update counted");
}

fn softmax_cross_entropy_matches_golden(kind: Kind) {
    let g = golden("softmax_cross_entropy");
    let [n, classes, ..] = dims(&g["logits"]);
    let mut r = Rig::default();
    let (logits, target) = (r.f32(&g["logits"].data), r.f32(&g["target"].data));
    let (probs, grad, metrics) = (r.zeros(n * classes), r.zeros(n * classes), r.zeros(slot::LEN));
    let mut be = r.on(kind);
    run(
        &mut *be,
        &[Op::SoftmaxCrossEntropy { logits, target, probs, grad: Some(grad), metrics, classes, batch: n }],
        n,
    );
    let m = be.download_f32(metrics).unwrap();
    assert_close("probs", &be.download_f32(probs).unwrap(), &g["probs"].data, FWD.0, FWD.1);
    assert_close("loss", &[m[slot::LOSS] / n as f32], &g["loss"].data, FWD.0, FWD.1);
    assert_close("glogits", &be.download_f32(grad).unwrap(), &g["glogits"].data, GRAD.0, GRAD.1);
    assert_eq!(m[slot::SAMPLES], n as f32);
}

fn sigmoid_bce_dice_matches_golden(kind: Kind) {
    let g = golden("sigmoid_bce_dice");
    let n = g["logits"].shape[0];
    let per = g["logits"].data.len() / n;
    let mut r = Rig::default();
    let (logits, target) = (r.f32(&g["logits"].data), r.f32(&g["target"].data));
    let (probs, grad, metrics) = (r.zeros(n * per), r.zeros(n * per), r.zeros(slot::LEN));
    let mut be = r.on(kind);
    run(&mut *be, &[Op::SigmoidBce { logits, target, probs, grad: Some(grad), metrics, per, batch: n }], n);
    let m = be.download_f32(metrics).unwrap();
    assert_close("probs", &be.download_f32(probs).unwrap(), &g["probs"].data, FWD.0, FWD.1);
    assert_close("loss", &[m[slot::LOSS] / n as f32], &g["loss"].data, FWD.0, FWD.1);
    assert_close("dice", &[m[slot::METRIC]], &g["dice"].data, FWD.0, FWD.1);
    assert_close("glogits", &be.download_f32(grad).unwrap(), &g["glogits"].data, GRAD.0, GRAD.1);
}

/// `F.cross_entropy` over the channels of `[n, k, h, w]` logits, and the per-class counts and
/// mean Dice of the most probable classes.
fn pixel_softmax_cross_entropy_matches_golden(kind: Kind) {
    let g = golden("pixel_softmax_cross_entropy");
    let [n, k, h, w] = g["logits"].shape[..] else { panic!("logits are [n, k, h, w]") };
    let per = h * w;
    let mut r = Rig::default();
    let (logits, target) = (r.f32(&g["logits"].data), r.f32(&g["target"].data));
    let (probs, grad, metrics) = (r.zeros(n * k * per), r.zeros(n * k * per), r.zeros(slot::len(k)));
    let mut be = r.on(kind);
    let op =
        Op::PixelSoftmaxCrossEntropy { logits, target, probs, grad: Some(grad), metrics, classes: k, per, batch: n };
    run(&mut *be, &[op], n);
    let m = be.download_f32(metrics).unwrap();
    assert_close("probs", &be.download_f32(probs).unwrap(), &g["probs"].data, FWD.0, FWD.1);
    assert_close("loss", &[m[slot::LOSS] / n as f32], &g["loss"].data, FWD.0, FWD.1);
    assert_close("glogits", &be.download_f32(grad).unwrap(), &g["glogits"].data, GRAD.0, GRAD.1);
    assert_eq!(m[slot::CLASS_COUNTS..], g["counts"].data[..], "counts are whole numbers, exact");
    assert_close("dice", &[m[slot::METRIC]], &g["dice"].data, FWD.0, FWD.1);
}

fn l2_matches_golden(kind: Kind) {
    let g = golden("l2");
    let len = g["w"].data.len();
    let mut r = Rig::default();
    let w = r.f32(&g["w"].data);
    let (grad, metrics) = (r.zeros(len), r.zeros(slot::LEN));
    let mut be = r.on(kind);
    // One sample, so the loss slot holds the penalty itself.
    run(&mut *be, &[Op::L2 { w, grad: Some(grad), metrics, lambda: 1e-4, len }], 1);
    assert_close("penalty", &[be.download_f32(metrics).unwrap()[slot::LOSS]], &g["penalty"].data, FWD.0, FWD.1);
    assert_close("gw", &be.download_f32(grad).unwrap(), &g["gw"].data, GRAD.0, GRAD.1);
}

fn optimizers_match_golden(kind: Kind) {
    let g = golden("optimizers");
    let len = g["w0"].data.len();
    let grads = [&g["g0"].data, &g["g1"].data, &g["g2"].data];
    for name in ["sgd", "momentum", "adam"] {
        let mut r = Rig::default();
        let w = r.f32(&g["w0"].data);
        let gb = r.zeros(len);
        let (s0, s1) = (r.zeros(len), r.zeros(len));
        let op = match name {
            "sgd" => Op::Sgd { w, g: gb, lr: 0.25, len },
            "momentum" => Op::Momentum { w, g: gb, v: s0, lr: 0.01, momentum: 0.8, len },
            _ => Op::Adam { w, g: gb, m: s0, v: s1, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, len },
        };
        let mut be = r.on(kind);
        for (t, grad) in grads.iter().enumerate() {
            be.upload_f32(gb, grad).unwrap();
            be.run(std::slice::from_ref(&op), gpu_train::graph::Step { n: 1, offset: 0, t: t as u32 + 1 }).unwrap();
            let key = format!("{name}.w{}", t + 1);
            assert_close(&key, &be.download_f32(w).unwrap(), &g[&key].data, FWD.0, FWD.1);
        }
    }
}

on_every_backend!(
    dense_matches_golden,
    conv2d_3x3_matches_golden,
    conv2d_1x1_matches_golden,
    strided_and_valid_conv2d_match_golden,
    conv_transpose_matches_golden,
    maxpool_matches_golden,
    avgpool_matches_golden,
    activations_match_golden,
    softmax_cross_entropy_matches_golden,
    sigmoid_bce_dice_matches_golden,
    leaky_relu_matches_golden,
    batch_norm_matches_golden,
    pixel_softmax_cross_entropy_matches_golden,
    l2_matches_golden,
    optimizers_match_golden,
);
