//! Building a plan from a model, a data layout and an optimiser.

use super::op::{slot, BufDesc, BufId, ConvGeom, Dtype, Op, ParamSet};
use super::{DataBufs, Plan, PlanParam, TrainOps};
use crate::error::{Error, Result};
use crate::model::{Act, Layer, Model, Shape};
use crate::optim::Optimizer;

/// What the model learns to predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Target {
    /// A class index per sample (u8 labels), one-hot on the device; softmax output.
    Classes(usize),
    /// A binary map of the output's shape per sample (u8, gland where > 0); sigmoid output.
    Mask,
    /// A map of class indices per sample (u8, `[h, w]`), for an output of one channel per class
    /// (`[classes, h, w]`); softmax over the channels at each pixel.
    Segments(usize),
}

impl Target {
    /// Classes of pixels the metrics count one by one (0 for labels and binary masks).
    pub fn pixel_classes(self) -> usize {
        match self {
            Target::Segments(k) => k,
            Target::Classes(_) | Target::Mask => 0,
        }
    }
}

/// The data the plan reads: sample counts and shapes, stored as u8 on the backend.
#[derive(Clone, Copy, Debug)]
pub struct DataSpec {
    pub train_n: usize,
    pub test_n: usize,
    pub sample: Shape,
    pub target: Target,
    /// Train on every sample and its left-right mirror image (the index list doubles).
    pub mirrored: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub batch: usize,
    pub optimizer: Optimizer,
    /// Also compute the gradient with respect to the input (tests compare it to references).
    pub input_grad: bool,
    /// Seed of the dropout masks.
    pub dropout_seed: u32,
}

/// Most classes a mask may hold: the GPU counts each class's pixels in one 256-thread
/// workgroup, three counts per class.
pub const MAX_PIXEL_CLASSES: usize = 64;

/// Bytes that a test pass's own buffers may take: it runs in steps of as many training batches
/// as fit (fewer, larger steps), adding its metrics batch by batch.
const EVAL_BYTES: usize = 128 << 20;

struct Builder {
    buffers: Vec<BufDesc>,
}

/// The buffers of a forward pass over up to `batch` samples.
#[derive(Clone)]
struct Pass {
    /// `acts[i]` is the input of layer `i` (Flatten aliases its input); the last, the logits.
    acts: Vec<BufId>,
    /// A pooling's argmax or a dropout's mask, by layer.
    aux: Vec<Option<BufId>>,
    target: BufId,
    probs: BufId,
}

impl Builder {
    fn buf(&mut self, name: impl Into<String>, len: usize, dtype: Dtype) -> BufId {
        self.buffers.push(BufDesc { name: name.into(), len, dtype, set: None });
        BufId(self.buffers.len() - 1)
    }
    fn param(&mut self, name: String, len: usize, set: ParamSet) -> BufId {
        self.buffers.push(BufDesc { name, len, dtype: Dtype::F32, set: Some(set) });
        BufId(self.buffers.len() - 1)
    }
    /// The buffers of a forward pass over `batch` samples, named with `prefix`.
    fn pass(&mut self, prefix: &str, batch: usize, layers: &[Layer], shapes: &[Shape], per_target: usize) -> Pass {
        let f32s = |b: &mut Self, name: String, len: usize| b.buf(format!("{prefix}{name}"), batch * len, Dtype::F32);
        let mut acts = vec![f32s(self, "input".into(), shapes[0].len())];
        let mut aux = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let y = match layer {
                Layer::Flatten => acts[i],
                _ => f32s(self, format!("act.{i}"), shapes[i + 1].len()),
            };
            acts.push(y);
            aux.push(match layer {
                Layer::MaxPool2d => {
                    Some(self.buf(format!("{prefix}argmax.{i}"), batch * shapes[i + 1].len(), Dtype::U32))
                }
                Layer::Dropout(_) => Some(f32s(self, format!("mask.{i}"), shapes[i].len())),
                _ => None,
            });
        }
        let target = f32s(self, "target".into(), per_target);
        let probs = f32s(self, "probs".into(), shapes[layers.len()].len());
        Pass { acts, aux, target, probs }
    }
    /// Values per sample in a pass's buffers.
    fn per_sample(&self, pass: &Pass, batch: usize) -> usize {
        let mut ids: Vec<BufId> = pass.acts.iter().chain(pass.aux.iter().flatten()).copied().collect();
        ids.extend([pass.target, pass.probs]);
        ids.dedup();
        ids.iter().map(|id| self.buffers[id.0].len / batch).sum()
    }
    fn data(&mut self, split: &str, n: usize, sample: usize, labels: usize, index_len: usize) -> DataBufs {
        DataBufs {
            x: self.buf(format!("{split}.x"), n * sample, Dtype::U8),
            y: self.buf(format!("{split}.y"), n * labels, Dtype::U8),
            index: self.buf(format!("{split}.index"), index_len, Dtype::U32),
            n,
            index_len,
        }
    }
}

/// The output activation the loss is fused with, and the layers before it.
fn split_head(model: &Model, target: Target) -> Result<&[Layer]> {
    let (head, body) = model.layers.split_last().ok_or_else(|| Error::Model("the model has no layers".into()))?;
    let want = match target {
        Target::Classes(_) | Target::Segments(_) => Act::Softmax,
        Target::Mask => Act::Sigmoid,
    };
    if *head != Layer::Activation(want) {
        return Err(Error::Model(format!("the last layer must be Activation({}) for this task's loss", want.name())));
    }
    if body.contains(&Layer::Activation(Act::Softmax)) {
        return Err(Error::Model("softmax is supported only as the last layer".into()));
    }
    Ok(body)
}

/// Builds the plan. Forward ops write one buffer per layer output (Flatten aliases its input);
/// backward ops overwrite each gradient once, so nothing needs zeroing between steps.
pub fn build(model: &Model, data: DataSpec, opts: PlanOptions) -> Result<Plan> {
    if opts.batch == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let layers = split_head(model, data.target)?;
    let shapes = model.shapes()?;
    let out_shape = shapes[layers.len()];
    let per_target = match data.target {
        Target::Classes(k) => {
            if out_shape.len() != k {
                return Err(Error::Model(format!(
                    "the model puts out {} values but there are {k} classes",
                    out_shape.len()
                )));
            }
            k
        }
        Target::Mask => out_shape.len(),
        Target::Segments(k) => {
            if !(2..=MAX_PIXEL_CLASSES).contains(&k) {
                return Err(Error::Model(format!("masks of {k} classes: 2 to {MAX_PIXEL_CLASSES} are supported")));
            }
            if out_shape.c != k {
                return Err(Error::Model(format!(
                    "the model puts out {} channels but the masks hold {k} classes",
                    out_shape.c
                )));
            }
            out_shape.h * out_shape.w
        }
    };
    if model.input != data.sample {
        return Err(Error::Model(format!("the model takes {} but the samples are {}", model.input, data.sample)));
    }
    let mut b = Builder { buffers: Vec::new() };
    let labels_per = if let Target::Classes(_) = data.target { 1 } else { per_target };
    let train_index = if data.mirrored { 2 * data.train_n } else { data.train_n };
    let train_data = b.data("train", data.train_n, data.sample.len(), labels_per, train_index);
    let test_data = b.data("test", data.test_n, data.sample.len(), labels_per, data.test_n);
    let pass = b.pass("", opts.batch, layers, &shapes, per_target);
    let per_sample = b.per_sample(&pass, opts.batch);
    let eval_batch =
        opts.batch * (EVAL_BYTES / (4 * per_sample * opts.batch)).clamp(1, data.test_n.div_ceil(opts.batch));
    let eval_pass =
        if eval_batch == opts.batch { pass.clone() } else { b.pass("eval.", eval_batch, layers, &shapes, per_target) };

    let mut params = Vec::new();
    let specs = model.params()?;
    for spec in &specs {
        let value = b.param(format!("param.{}", spec.key), spec.len(), ParamSet::Value);
        let grad = b.param(format!("grad.{}", spec.key), spec.len(), ParamSet::Grad);
        let state = (0..opts.optimizer.state_count())
            .map(|i| b.param(format!("state{i}.{}", spec.key), spec.len(), ParamSet::State(i as u8)))
            .collect();
        params.push(PlanParam { spec: spec.clone(), value, grad, state });
    }
    let param_of = |layer: usize| -> (BufId, BufId, BufId, BufId) {
        let w = params.iter().position(|p| p.spec.layer == layer).expect("every layer with weights has params");
        (params[w].value, params[w + 1].value, params[w].grad, params[w + 1].grad)
    };

    // Gradients of the training pass's activations: grads[i] is that of layer i's input.
    let grad = |b: &mut Builder, name: String, shape: Shape| b.buf(name, opts.batch * shape.len(), Dtype::F32);
    let mut grads = vec![if opts.input_grad { Some(grad(&mut b, "grad.input".into(), model.input)) } else { None }];
    for (i, layer) in layers.iter().enumerate() {
        grads.push(match layer {
            Layer::Flatten => grads[i],
            _ => Some(grad(&mut b, format!("grad.act.{i}"), shapes[i + 1])),
        });
    }
    let (acts, aux) = (&pass.acts, &pass.aux);
    let metrics_len = slot::len(data.target.pixel_classes());
    let train_metrics = b.buf("metrics.train", metrics_len, Dtype::F32);
    let test_metrics = b.buf("metrics.test", metrics_len, Dtype::F32);
    let confusion = match data.target {
        Target::Classes(k) => Some(b.buf("confusion", k * k, Dtype::F32)),
        Target::Mask | Target::Segments(_) => None,
    };

    let forward = |pass: &Pass, train: bool| -> Vec<Op> {
        let (acts, aux) = (&pass.acts, &pass.aux);
        let mut ops = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let (x, y, s) = (acts[i], acts[i + 1], shapes[i]);
            let geom = |c_out, k| ConvGeom { c_in: s.c, c_out, h: s.h, w: s.w, k };
            match *layer {
                Layer::Dense { units, .. } => {
                    let (w, bias, _, _) = param_of(i);
                    ops.push(Op::Dense { x, w, b: bias, y, n_in: s.len(), n_out: units });
                }
                Layer::Conv2d { filters, kernel, .. } => {
                    let (w, bias, _, _) = param_of(i);
                    ops.push(Op::Conv2d { x, w, b: bias, y, g: geom(filters, kernel) });
                }
                Layer::Conv2dTranspose { filters, .. } => {
                    let (w, bias, _, _) = param_of(i);
                    ops.push(Op::ConvTranspose2d { x, w, b: bias, y, g: geom(filters, 2) });
                }
                Layer::MaxPool2d => {
                    ops.push(Op::MaxPool2d { x, y, argmax: aux[i].expect("pool has argmax"), shape: s })
                }
                Layer::AvgPool2d => ops.push(Op::AvgPool2d { x, y, shape: s }),
                Layer::Activation(act) => ops.push(Op::Activation { act, x, y, per: s.len() }),
                Layer::Flatten => {}
                // In evaluation (rate 0) the mask is all ones.
                Layer::Dropout(rate) => ops.push(Op::Dropout {
                    x,
                    y,
                    mask: aux[i].expect("dropout has a mask"),
                    per: s.len(),
                    rate: if train { rate } else { 0.0 },
                    seed: opts.dropout_seed.wrapping_add(i as u32),
                }),
            }
        }
        ops
    };

    // The metrics add one batch per training batch, in every pass.
    let loss_op = |pass: &Pass, grad: Option<BufId>, metrics: BufId| {
        let (logits, target, probs, batch) = (pass.acts[layers.len()], pass.target, pass.probs, opts.batch);
        match data.target {
            Target::Classes(k) => Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, batch },
            Target::Mask => Op::SigmoidBce { logits, target, probs, grad, metrics, per: per_target, batch },
            Target::Segments(classes) => {
                Op::PixelSoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes, per: per_target, batch }
            }
        }
    };
    let l2_ops = |train: bool, metrics: BufId| -> Vec<Op> {
        params
            .iter()
            .filter(|p| p.spec.l2 > 0.0)
            .map(|p| Op::L2 {
                w: p.value,
                grad: train.then_some(p.grad),
                metrics,
                lambda: p.spec.l2,
                len: p.spec.len(),
            })
            .collect()
    };
    let gather = |d: &DataBufs, pass: &Pass| {
        let target = pass.target;
        let x = Op::Gather {
            data: d.x,
            index: d.index,
            out: pass.acts[0],
            shape: data.sample,
            scale: 1.0 / 255.0,
            binarize: false,
            mirrored: if d.index_len > d.n { d.n } else { 0 },
        };
        let y = match data.target {
            Target::Classes(classes) => Op::GatherOneHot { labels: d.y, index: d.index, out: target, classes },
            Target::Mask | Target::Segments(_) => Op::Gather {
                data: d.y,
                index: d.index,
                out: target,
                // One class index per pixel, or one 0/1 value per output value.
                shape: match data.target {
                    Target::Segments(_) => Shape::new(1, out_shape.h, out_shape.w),
                    _ => out_shape,
                },
                scale: 1.0,
                binarize: data.target == Target::Mask,
                mirrored: if d.index_len > d.n { d.n } else { 0 },
            },
        };
        vec![x, y]
    };

    let mut backward = Vec::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        let (x, y, s) = (acts[i], acts[i + 1], shapes[i]);
        // Only a leading Flatten has no output gradient; it needs no op.
        let Some(gy) = grads[i + 1] else { continue };
        let gx = grads[i];
        let geom = |c_out, k| ConvGeom { c_in: s.c, c_out, h: s.h, w: s.w, k };
        match *layer {
            Layer::Dense { units, .. } => {
                let (w, _, gw, gb) = param_of(i);
                backward.push(Op::DenseBackward { x, w, gy, gx, gw, gb, n_in: s.len(), n_out: units });
            }
            Layer::Conv2d { filters, kernel, .. } => {
                let (w, _, gw, gb) = param_of(i);
                backward.push(Op::Conv2dBackward { x, w, gy, gx, gw, gb, g: geom(filters, kernel) });
            }
            Layer::Conv2dTranspose { filters, .. } => {
                let (w, _, gw, gb) = param_of(i);
                backward.push(Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, g: geom(filters, 2) });
            }
            _ => {
                let Some(gx) = gx else { continue };
                match *layer {
                    Layer::MaxPool2d => backward.push(Op::MaxPool2dBackward {
                        gy,
                        argmax: aux[i].expect("pool has argmax"),
                        gx,
                        shape: s,
                    }),
                    Layer::AvgPool2d => backward.push(Op::AvgPool2dBackward { gy, gx, shape: s }),
                    Layer::Activation(act) => backward.push(Op::ActivationBackward { act, y, gy, gx, per: s.len() }),
                    Layer::Dropout(_) => backward.push(Op::DropoutBackward {
                        gy,
                        mask: aux[i].expect("dropout has a mask"),
                        gx,
                        per: s.len(),
                    }),
                    _ => {} // Flatten: its gradient buffer is its input's
                }
            }
        }
    }

    // The penalty's gradient is added once the backward pass has written the weight gradients.
    backward.extend(l2_ops(true, train_metrics));
    let loss = vec![loss_op(&pass, grads[layers.len()], train_metrics)];
    let update = params.iter().map(|p| opts.optimizer.update_op(p.value, p.grad, &p.state, p.spec.len())).collect();
    let mut eval = gather(&test_data, &eval_pass);
    eval.extend(forward(&eval_pass, false));
    eval.push(loss_op(&eval_pass, None, test_metrics));
    eval.extend(l2_ops(false, test_metrics));
    if let Some(counts) = confusion {
        let Target::Classes(classes) = data.target else { unreachable!("confusion exists for classes") };
        eval.push(Op::Confusion { probs: eval_pass.probs, target: eval_pass.target, counts, classes });
    }
    let train = TrainOps { gather: gather(&train_data, &pass), forward: forward(&pass, true), loss, backward, update };
    Ok(Plan {
        batch: opts.batch,
        input: pass.acts[0],
        target: pass.target,
        logits: pass.acts[layers.len()],
        probs: pass.probs,
        eval_batch,
        eval_probs: eval_pass.probs,
        input_grad: grads[0],
        params,
        train_data,
        test_data,
        train_metrics,
        test_metrics,
        confusion,
        train,
        eval,
        buffers: b.buffers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{defaults, input_shape, model, Task};

    /// The test pass takes as many training batches per step as fit in EVAL_BYTES, and no more
    /// than the test set needs.
    #[test]
    fn the_test_pass_runs_in_the_largest_steps_that_fit() {
        for (task, target, test_n) in [
            (Task::MnistMlp, Target::Classes(10), 10_000),
            (Task::MnistCnn, Target::Classes(10), 10_000),
            (Task::Warwick, Target::Mask, 60),
        ] {
            let (d, sample) = (defaults(task), input_shape(task));
            let data = DataSpec { train_n: 1000, test_n, sample, target, mirrored: false };
            let opts = PlanOptions { batch: d.batch, optimizer: d.optimizer, input_grad: false, dropout_seed: 0 };
            let plan = build(&model(task, d.variant, sample), data, opts).unwrap();
            let (batches, bytes) = (plan.eval_batch / d.batch, |b: &BufDesc| 4 * b.len);
            let eval: usize = plan.buffers.iter().filter(|b| b.name.starts_with("eval.")).map(bytes).sum();
            println!("{task:?}: test steps of {} samples, {eval} bytes", plan.eval_batch);
            assert_eq!(plan.eval_batch % d.batch, 0);
            assert!(batches <= test_n.div_ceil(d.batch));
            assert!(eval <= EVAL_BYTES);
            if batches < test_n.div_ceil(d.batch) {
                assert!(eval / batches * (batches + 1) > EVAL_BYTES, "{task:?}: one more batch would fit");
            }
        }
    }
}
