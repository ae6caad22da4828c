//! Building a plan from a model, a data layout and an optimiser.

use super::layers::LayerIo;
use super::op::{slot, BufDesc, BufId, Dtype, Op, ParamSet};
use super::{DataBufs, Plan, PlanParam, TrainOps};
use crate::error::{Error, Result};
use crate::model::{Act, AuxOf, Layer, Model, ParamSpec, Shape};
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

/// The layers before the loss's activation, and the nodes each reads (see [`Node::inputs`]).
struct Body<'a> {
    layers: &'a [Layer],
    sources: Vec<Vec<usize>>,
}

/// The training pass's gradient buffers: `node[j]`, that of node `j`'s value, complete before
/// the backward of the layer that wrote the value; `edge[i]`, where layer `i`'s backward writes
/// its inputs' gradients: the node's own buffer where the layer is its only reader, else a
/// buffer of its own, which the ops `sums[j]` add up into `node[j]`.
struct Gradients {
    node: Vec<Option<BufId>>,
    edge: Vec<[Option<BufId>; 2]>,
    sums: Vec<Vec<Op>>,
}

/// The buffers of a forward pass over up to `batch` samples.
#[derive(Clone)]
struct Pass {
    /// `acts[j]` is node `j`'s value: the model's input, then each layer's output (Flatten's
    /// is its input's buffer); the last, the logits.
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
    fn pass(&mut self, prefix: &str, batch: usize, body: &Body, shapes: &[Shape], per_target: usize) -> Pass {
        let f32s = |b: &mut Self, name: String, len: usize| b.buf(format!("{prefix}{name}"), batch * len, Dtype::F32);
        let mut acts = vec![f32s(self, "input".into(), shapes[0].len())];
        let mut aux = Vec::new();
        for (i, layer) in body.layers.iter().enumerate() {
            let x = body.sources[i][0];
            let y = match layer {
                Layer::Flatten => acts[x],
                _ => f32s(self, format!("act.{i}"), shapes[i + 1].len()),
            };
            acts.push(y);
            aux.push(match layer.kind().aux() {
                Some(AuxOf::OutputIndices) => {
                    Some(self.buf(format!("{prefix}argmax.{i}"), batch * shapes[i + 1].len(), Dtype::U32))
                }
                Some(AuxOf::InputValues) => Some(f32s(self, format!("mask.{i}"), shapes[x].len())),
                Some(AuxOf::ChannelPairs) => Some(self.buf(format!("{prefix}stats.{i}"), 2 * shapes[x].c, Dtype::F32)),
                None => None,
            });
        }
        let target = f32s(self, "target".into(), per_target);
        let probs = f32s(self, "probs".into(), shapes[body.layers.len()].len());
        Pass { acts, aux, target, probs }
    }
    /// The training pass's gradients.
    fn gradients(&mut self, body: &Body, shapes: &[Shape], batch: usize, input_grad: bool) -> Gradients {
        let n = body.layers.len();
        let mut readers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n + 1];
        for (i, sources) in body.sources.iter().enumerate() {
            sources.iter().enumerate().for_each(|(slot, &j)| readers[j].push((i, slot)));
        }
        let name = |j: usize| if j == 0 { "input".to_string() } else { format!("act.{}", j - 1) };
        let grad =
            |b: &mut Self, label: String, j: usize| b.buf(format!("grad.{label}"), batch * shapes[j].len(), Dtype::F32);
        let mut node = vec![input_grad.then(|| grad(self, name(0), 0))];
        let mut edge = Vec::with_capacity(n);
        for (i, layer) in body.layers.iter().enumerate() {
            let mut e = [None, None];
            for (slot, &j) in body.sources[i].iter().enumerate() {
                e[slot] = match (node[j], readers[j].len()) {
                    (None, _) => None,
                    (Some(g), 1) => Some(g),
                    (Some(_), _) => Some(grad(self, format!("{}.to.{i}", name(j)), j)),
                };
            }
            node.push(match (layer, e[0]) {
                (Layer::Flatten, Some(g)) => Some(g),
                _ => Some(grad(self, name(i + 1), i + 1)),
            });
            edge.push(e);
        }
        let mut sums = vec![Vec::new(); n + 1];
        for (j, r) in readers.iter().enumerate().filter(|(_, r)| r.len() > 1) {
            let (Some(total), per) = (node[j], shapes[j].len()) else { continue };
            let parts: Vec<BufId> = r.iter().filter_map(|&(i, slot)| edge[i][slot]).collect();
            let mut acc = parts[0];
            for (k, &part) in parts.iter().enumerate().skip(1) {
                let y = if k + 1 == parts.len() { total } else { grad(self, format!("{}.sum.{k}", name(j)), j) };
                sums[j].push(Op::Sum { a: acc, b: part, y, per });
                acc = y;
            }
        }
        Gradients { node, edge, sums }
    }

    /// Values per sample in a pass's buffers.
    fn per_sample(&self, pass: &Pass, batch: usize) -> usize {
        let mut ids: Vec<BufId> = pass.acts.iter().chain(pass.aux.iter().flatten()).copied().collect();
        ids.extend([pass.target, pass.probs]);
        ids.dedup();
        ids.iter().map(|id| self.buffers[id.0].len / batch).sum()
    }
    /// Each parameter's value, gradient and optimiser states.
    fn params(&mut self, specs: &[ParamSpec], optimizer: &Optimizer) -> Vec<PlanParam> {
        let mut params = Vec::with_capacity(specs.len());
        for spec in specs {
            let value = self.param(format!("param.{}", spec.key), spec.len(), ParamSet::Value);
            let grad = self.param(format!("grad.{}", spec.key), spec.len(), ParamSet::Grad);
            let state = (0..optimizer.state_count())
                .map(|i| self.param(format!("state{i}.{}", spec.key), spec.len(), ParamSet::State(i as u8)))
                .collect();
            params.push(PlanParam { spec: spec.clone(), value, grad, state });
        }
        params
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

/// The layers before the output activation the loss is fused with.
fn split_head(model: &Model, target: Target) -> Result<Vec<Layer>> {
    let layers: Vec<Layer> = model.layers.iter().map(|n| n.layer.clone()).collect();
    let (head, body) = layers.split_last().ok_or_else(|| Error::Model("the model has no layers".into()))?;
    if model.sources(body.len()) != [body.len()] {
        return Err(Error::Model("the last layer (the loss's activation) must take the layer before it".into()));
    }
    if let Some(j) = (1..=body.len()).find(|&j| !(j..=body.len()).any(|i| model.sources(i).contains(&j))) {
        return Err(Error::Model(format!("the output of layer {} ({}) is not used", j - 1, model.key(j - 1))));
    }
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
    Ok(body.to_vec())
}

/// Builds the plan. Forward ops write one buffer per layer output (Flatten aliases its input);
/// backward ops overwrite each gradient once, so nothing needs zeroing between steps.
pub fn build(model: &Model, data: DataSpec, opts: PlanOptions) -> Result<Plan> {
    if opts.batch == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let layers = &split_head(model, data.target)?[..];
    let body = Body { layers, sources: (0..layers.len()).map(|i| model.sources(i)).collect() };
    let shapes = model.shapes()?;
    let out_shape = shapes[layers.len()];
    let per_target = per_target(out_shape, data.target, data.sample)?;
    if model.input != data.sample {
        return Err(Error::Model(format!("the model takes {} but the samples are {}", model.input, data.sample)));
    }
    let mut b = Builder { buffers: Vec::new() };
    let labels_per = if let Target::Classes(_) = data.target { 1 } else { per_target };
    let train_index = if data.mirrored { 2 * data.train_n } else { data.train_n };
    let train_data = b.data("train", data.train_n, data.sample.len(), labels_per, train_index);
    let test_data = b.data("test", data.test_n, data.sample.len(), labels_per, data.test_n);
    let pass = b.pass("", opts.batch, &body, &shapes, per_target);
    let per_sample = b.per_sample(&pass, opts.batch);
    let eval_batch =
        opts.batch * (EVAL_BYTES / (4 * per_sample * opts.batch)).clamp(1, data.test_n.div_ceil(opts.batch));
    let eval_pass =
        if eval_batch == opts.batch { pass.clone() } else { b.pass("eval.", eval_batch, &body, &shapes, per_target) };
    let params = b.params(&model.params()?, &opts.optimizer);
    let running: Vec<(ParamSpec, BufId)> = model
        .running()?
        .into_iter()
        .map(|s| {
            let buf = b.buf(format!("running.{}", s.key), s.len(), Dtype::F32);
            (s, buf)
        })
        .collect();

    let grads = b.gradients(&body, &shapes, opts.batch, opts.input_grad);
    let metrics_len = slot::len(data.target.pixel_classes());
    let train_metrics = b.buf("metrics.train", metrics_len, Dtype::F32);
    let test_metrics = b.buf("metrics.test", metrics_len, Dtype::F32);
    let confusion = match data.target {
        Target::Classes(k) => Some(b.buf("confusion", k * k, Dtype::F32)),
        Target::Mask | Target::Segments(_) => None,
    };

    // Layer i's buffers in a pass (its gradients in the training pass).
    let io = |pass: &Pass, i: usize| {
        let w = params.iter().position(|p| p.spec.layer == i);
        let sources = &body.sources[i];
        LayerIo {
            x: pass.acts[sources[0]],
            y: pass.acts[i + 1],
            s: shapes[sources[0]],
            aux: pass.aux[i],
            params: w.map(|w| (params[w].value, params[w + 1].value, params[w].grad, params[w + 1].grad)),
            gy: grads.node[i + 1],
            gx: grads.edge[i][0],
            second: sources.get(1).map(|&j| (pass.acts[j], shapes[j])),
            running: running.iter().position(|(s, _)| s.layer == i).map(|r| [0, 1, 2].map(|k| running[r + k].1)),
            gx2: grads.edge[i][1],
        }
    };
    let forward = |pass: &Pass, train: bool| -> Vec<Op> {
        let seed = |i: usize| opts.dropout_seed.wrapping_add(i as u32);
        layers.iter().enumerate().filter_map(|(i, l)| l.kind().forward(&io(pass, i), train, seed(i))).collect()
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
        let penalised = params.iter().filter(|p| p.spec.l2 > 0.0);
        let l2 = |p: &PlanParam| Op::L2 {
            w: p.value,
            grad: train.then_some(p.grad),
            metrics,
            lambda: p.spec.l2,
            len: p.spec.len(),
        };
        penalised.map(l2).collect()
    };

    // A value's gradient is summed from its readers' once the last of them has run.
    let mut backward = Vec::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        backward.extend(grads.sums[i + 1].iter().cloned());
        backward.extend(layer.kind().backward(&io(&pass, i)));
    }
    backward.extend(grads.sums[0].iter().cloned());
    // The penalty's gradient is added once the backward pass has written the weight gradients.
    backward.extend(l2_ops(true, train_metrics));
    let loss = vec![loss_op(&pass, grads.node[layers.len()], train_metrics)];
    let update = params.iter().map(|p| opts.optimizer.update_op(p.value, p.grad, &p.state, p.spec.len())).collect();
    let mut eval = gather_ops(&test_data, &eval_pass, &data, out_shape);
    eval.extend(forward(&eval_pass, false));
    eval.push(loss_op(&eval_pass, None, test_metrics));
    eval.extend(l2_ops(false, test_metrics));
    if let (Some(counts), Target::Classes(classes)) = (confusion, data.target) {
        eval.push(Op::Confusion { probs: eval_pass.probs, target: eval_pass.target, counts, classes });
    }
    let gather = gather_ops(&train_data, &pass, &data, out_shape);
    let train = TrainOps { gather, forward: forward(&pass, true), loss, backward, update };
    Ok(Plan {
        batch: opts.batch,
        input: pass.acts[0],
        target: pass.target,
        logits: pass.acts[layers.len()],
        probs: pass.probs,
        eval_batch,
        eval_probs: eval_pass.probs,
        input_grad: grads.node[0],
        params,
        running,
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

/// Target values per sample for a model putting out `out` against `target` (masks of the
/// `sample`'s height and width), or why they do not fit.
fn per_target(out: Shape, target: Target, sample: Shape) -> Result<usize> {
    let masks = matches!(target, Target::Mask | Target::Segments(_));
    if masks && (out.h, out.w) != (sample.h, sample.w) {
        return Err(Error::Model(format!(
            "the model puts out {out} but the masks are {}x{}: a segmentation model gives maps of its input's size",
            sample.h, sample.w
        )));
    }
    match target {
        Target::Classes(k) if out.len() != k => {
            Err(Error::Model(format!("the model puts out {} values but there are {k} classes", out.len())))
        }
        Target::Classes(k) => Ok(k),
        Target::Mask if out.c != 1 => {
            Err(Error::Model(format!("the model puts out {out} but binary masks take one channel")))
        }
        Target::Mask => Ok(out.len()),
        Target::Segments(k) if !(2..=MAX_PIXEL_CLASSES).contains(&k) => {
            Err(Error::Model(format!("masks of {k} classes: 2 to {MAX_PIXEL_CLASSES} are supported")))
        }
        Target::Segments(k) if out.c != k => {
            Err(Error::Model(format!("the model puts out {} channels but the masks hold {k} classes", out.c)))
        }
        Target::Segments(_) => Ok(out.h * out.w),
    }
}

/// A step's gathers from the split `d` into `pass`: its samples (scaled to 0..1) and targets
/// (one-hot labels, a binary mask of the output's shape, or a class index per pixel), mirrored
/// where the index list runs past the samples.
fn gather_ops(d: &DataBufs, pass: &Pass, data: &DataSpec, out: Shape) -> Vec<Op> {
    let mirrored = if d.index_len > d.n { d.n } else { 0 };
    let x = Op::Gather {
        data: d.x,
        index: d.index,
        out: pass.acts[0],
        shape: data.sample,
        scale: 1.0 / 255.0,
        binarize: false,
        mirrored,
    };
    let (index, target) = (d.index, pass.target);
    let y = match data.target {
        Target::Classes(classes) => Op::GatherOneHot { labels: d.y, index, out: target, classes },
        Target::Mask => Op::Gather { data: d.y, index, out: target, shape: out, scale: 1.0, binarize: true, mirrored },
        Target::Segments(_) => {
            let shape = Shape::new(1, out.h, out.w);
            Op::Gather { data: d.y, index, out: target, shape, scale: 1.0, binarize: false, mirrored }
        }
    };
    vec![x, y]
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
