//! The report's whole networks against PyTorch: parameters loaded by key, one forward, loss and
//! backward, every gradient compared. Shapes (batch, image size) come from the fixture files.

mod common;

use common::*;
use gpu_train::backend::Backend;
use gpu_train::graph::{build, slot, DataSpec, Plan, PlanOptions, Step, Target};
use gpu_train::model::{Act, Model, Shape};
use gpu_train::optim::Optimizer;
use gpu_train::tasks::{self, Task, Variant};

/// The output's absolute tolerance is 10x the forward one: a logit is a long reduction (the CNN's
/// last dense layer sums 1,568 products, after three layers of other sums), and a different f32
/// summation order moves it by ~√K·ε·Σ|terms|, about 1e-6 to 1e-5 here; where terms cancel to a
/// small logit (0.0075 in the tanh CNN) only that absolute bound is meaningful.
const OUTPUT: (f32, f32) = (1e-5, 1e-5);

/// The golden fixture's network with its parameters, input and target on a `kind` backend,
/// after one training forward, loss and backward pass (no update).
fn stepped(file: &str, task: Task, activation: Act, l2: f32, kind: Kind) -> (Plan, Box<dyn Backend>) {
    let g = golden(file);
    let xs = &g["x"].shape;
    let sample = if xs.len() == 2 { Shape::flat(xs[1]) } else { Shape::new(xs[1], xs[2], xs[3]) };
    let variant = Variant { activation, dropout: 0.0, l2, act_after_pool: false };
    let target = if task == Task::Warwick { Target::Mask } else { Target::Classes(g["target"].shape[1]) };
    stepped_model(file, &tasks::model(task, variant, sample), target, kind)
}

/// [`stepped`] for any model.
fn stepped_model(file: &str, model: &Model, target: Target, kind: Kind) -> (Plan, Box<dyn Backend>) {
    let g = golden(file);
    let n = g["x"].shape[0];
    let sample = model.input;
    let data = DataSpec { train_n: 1, test_n: 1, sample, target, mirrored: false };
    let opts = PlanOptions {
        batch: n,
        optimizer: Optimizer::Sgd { lr: 0.1, momentum: 0.0 },
        input_grad: true,
        dropout_seed: 0,
    };
    let plan = build(model, data, opts).unwrap();
    let mut be = backend(kind, &plan.buffers);
    for p in &plan.params {
        let t = &g[&format!("param.{}", p.spec.key)];
        assert_eq!(t.shape, p.spec.shape, "{}: shape", p.spec.key);
        be.upload_f32(p.value, &t.data).unwrap();
    }
    be.upload_f32(plan.input, &g["x"].data).unwrap();
    be.upload_f32(plan.target, &g["target"].data).unwrap();
    let ops: Vec<_> = plan.train.forward.iter().chain(&plan.train.loss).chain(&plan.train.backward).cloned().collect();
    be.run(&ops, Step { n, offset: 0, t: 1 }).unwrap();
    (plan, be)
}

fn check_model(file: &str, task: Task, activation: Act, kind: Kind) {
    check_stepped(file, stepped(file, task, activation, 0.0, kind));
}

/// The logits, loss and every gradient of a stepped plan against the fixture's.
fn check_stepped(file: &str, (plan, mut be): (Plan, Box<dyn Backend>)) {
    let g = golden(file);
    let n = g["x"].shape[0];
    assert_close(
        "output",
        &be.download_f32(plan.logits).unwrap()[..g["output"].data.len()],
        &g["output"].data,
        OUTPUT.0,
        OUTPUT.1,
    );
    let loss = be.download_f32(plan.train_metrics).unwrap()[slot::LOSS] / n as f32;
    assert_close("loss", &[loss], &g["loss"].data, FWD.0, FWD.1);
    for p in &plan.params {
        let key = format!("grad.{}", p.spec.key);
        assert_close(&key, &be.download_f32(p.grad).unwrap(), &g[&key].data, GRAD.0, GRAD.1);
    }
    assert_close("gx", &be.download_f32(plan.input_grad.unwrap()).unwrap(), &g["gx"].data, GRAD.0, GRAD.1);
}

fn mnist_mlp_matches_golden(kind: Kind) {
    check_model("model_mnist_mlp", Task::MnistMlp, Act::Sigmoid, kind);
}

fn mnist_cnn_relu_matches_golden(kind: Kind) {
    check_model("model_mnist_cnn_relu", Task::MnistCnn, Act::Relu, kind);
}

fn mnist_cnn_tanh_matches_golden(kind: Kind) {
    check_model("model_mnist_cnn_tanh", Task::MnistCnn, Act::Tanh, kind);
}

fn warwick_fcn_matches_golden(kind: Kind) {
    check_model("model_warwick_fcn", Task::Warwick, Act::Relu, kind);
}

/// A graph: values read by two layers, whose gradients are summed, and concatenations.
fn small_unet_matches_golden(kind: Kind) {
    check_stepped("model_small_unet", stepped_model("model_small_unet", &small_unet(), Target::Mask, kind));
}

/// A residual path: nearest upsampling and an addition.
fn pool_upsample_add_matches_golden(kind: Kind) {
    let file = "model_pool_upsample_add";
    check_stepped(file, stepped_model(file, &pool_upsample_add(), Target::Mask, kind));
}

/// L2 on the whole training step: against the same step without it, every kernel's gradient
/// gains exactly 2λw (no other gradient moves) and the loss λ·Σw² per sample. This checks the
/// plan's order: the penalty's gradient must be added after the backward pass writes gradients.
fn l2_adds_its_gradient_after_backward(kind: Kind) {
    let lambda = 0.01;
    let (plan, mut plain) = stepped("model_warwick_fcn", Task::Warwick, Act::Relu, 0.0, kind);
    let (plan_l2, mut with) = stepped("model_warwick_fcn", Task::Warwick, Act::Relu, lambda, kind);
    let mut penalty = 0.0f64;
    for (p, q) in plan.params.iter().zip(&plan_l2.params) {
        let (g0, g1) = (plain.download_f32(p.grad).unwrap(), with.download_f32(q.grad).unwrap());
        let w = plain.download_f32(p.value).unwrap();
        let expected: Vec<f32> = if q.spec.l2 > 0.0 {
            penalty += w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() * lambda as f64;
            g0.iter().zip(&w).map(|(g, w)| g + 2.0 * lambda * w).collect()
        } else {
            g0
        };
        assert_close(&format!("{} gradient with L2", p.spec.key), &g1, &expected, GRAD.0, GRAD.1);
    }
    assert!(penalty > 0.0, "L2 applies to some parameters");
    let n = plan.batch as f32;
    let loss = |be: &mut Box<dyn Backend>, plan: &Plan| be.download_f32(plan.train_metrics).unwrap()[slot::LOSS] / n;
    let added = loss(&mut with, &plan_l2) - loss(&mut plain, &plan);
    assert_close("loss added by L2", &[added], &[penalty as f32], 1e-4, 1e-6);
}

on_every_backend!(
    mnist_mlp_matches_golden,
    mnist_cnn_relu_matches_golden,
    mnist_cnn_tanh_matches_golden,
    warwick_fcn_matches_golden,
    small_unet_matches_golden,
    pool_upsample_add_matches_golden,
    l2_adds_its_gradient_after_backward,
);
