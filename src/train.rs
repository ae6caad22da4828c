//! A training session: a plan on a backend, the data uploaded once, the seeded generator, and
//! the epoch loop that reads metrics back only at the end of an epoch.

use crate::backend::Backend;
use crate::checkpoint::Tensor;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::{build, slot, BufDesc, BufId, DataSpec, Op, Plan, PlanOptions, Step, Target};
use crate::model::{init_params, Model};
use crate::optim::Optimizer;
use crate::rng::{Rng, RngState};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub batch: usize,
    pub optimizer: Optimizer,
    pub seed: u64,
    pub shuffle: bool,
    /// Train on each sample and its mirror image.
    pub mirrored: bool,
    /// Initial values of the parameters then the running statistics, in plan order ([`Model::saved`]);
    /// drawn from the seed when `None`.
    pub init: Option<Vec<Vec<f32>>>,
}

/// One pass's figures, as Keras reports them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Mean loss per sample (L2 penalty included).
    pub loss: f64,
    /// Accuracy over all samples, or the mean of per-batch Dice.
    pub metric: f64,
    /// Dice over every pixel of the pass at once (segmentation only); with classes of pixels,
    /// the mean of [`ClassScore::dice`] over the classes present.
    pub dice_whole: Option<f64>,
    /// Each class's scores over the whole pass (masks of classes only).
    pub classes: Vec<ClassScore>,
}

/// One class of pixels over a whole pass, the prediction being the most probable class.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ClassScore {
    /// `2·both/(truth + predicted)`, `None` when the class is in neither.
    pub dice: Option<f64>,
    /// `both/(truth + predicted - both)`, `None` likewise.
    pub iou: Option<f64>,
    /// Pixels of the class in the truth.
    pub pixels: u64,
}

impl Metrics {
    /// The mean of [`ClassScore::iou`] over the classes present (masks of classes only).
    pub fn mean_iou(&self) -> Option<f64> {
        let present: Vec<f64> = self.classes.iter().filter_map(|c| c.iou).collect();
        (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
    }

    /// From a metrics buffer (`m`, [`slot`] layout) of `classes` classes of pixels; `per_batch`
    /// says whether `METRIC` is summed per batch (segmentation) or per sample (accuracy).
    fn read(m: &[f32], per_batch: bool, classes: usize) -> Metrics {
        let samples = m[slot::SAMPLES] as f64;
        let metric = m[slot::METRIC] as f64 / if per_batch { m[slot::BATCHES] as f64 } else { samples };
        let counts: Vec<[f64; 3]> =
            (0..classes).map(|c| std::array::from_fn(|j| m[slot::CLASS_COUNTS + 3 * c + j] as f64)).collect();
        let classes: Vec<ClassScore> = counts
            .iter()
            .map(|&[both, t, p]| {
                let present = t + p > 0.0;
                ClassScore {
                    dice: present.then(|| 2.0 * both / (t + p)),
                    iou: present.then(|| both / (t + p - both)),
                    pixels: t as u64,
                }
            })
            .collect();
        let dice_whole = match (per_batch, classes.is_empty()) {
            (false, _) => None,
            (true, true) => Some(2.0 * m[slot::YP] as f64 / (m[slot::Y] as f64 + m[slot::P] as f64)),
            (true, false) => Some(slot::mean_dice(counts.into_iter())),
        };
        Metrics { loss: m[slot::LOSS] as f64 / samples, metric, dice_whole, classes }
    }
}

pub struct Session {
    pub plan: Plan,
    /// The ops of a training step, in order.
    pub train_ops: Vec<Op>,
    backend: Box<dyn Backend>,
    rng: Rng,
    /// Optimiser updates so far.
    steps: u32,
    shuffle: bool,
    order: Vec<u32>,
    /// Batches done in the epoch in progress (0 between epochs).
    batch: usize,
    classes: bool,
    /// Classes of pixels the metrics count (masks of classes), else 0.
    pixel_classes: usize,
}

/// Where a session stands between two steps, beyond its tensors: with them, enough to go on
/// exactly as an uninterrupted session would.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub steps: u32,
    /// Batches done in the epoch in progress (0 between epochs).
    pub batch: usize,
    pub rng: RngState,
    /// The training order of the epoch in progress (the next epoch shuffles it again).
    pub order: Vec<u32>,
}

/// How a call to [`Session::train_epoch`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every batch done; [`Session::end_epoch`] gives the metrics.
    Done,
    /// Stopped between two steps when asked; [`Session::train_epoch`] picks up from there.
    Stopped,
    /// The running loss stopped being finite at this step (only when watching every step).
    Diverged { step: u32, batch: usize },
}

/// Checkpoint key of a parameter's `i`-th optimiser state tensor.
fn state_key(key: &str, i: usize) -> String {
    format!("optimizer.{key}.{i}")
}

const TRAIN_METRICS: &str = "train_metrics";

impl Session {
    /// Plans `model` for `data`, makes the backend for the plan's buffers, uploads data and
    /// initial parameters.
    pub fn new(
        model: &Model,
        data: &Dataset,
        opts: SessionOptions,
        make_backend: impl FnOnce(&[BufDesc]) -> Result<Box<dyn Backend>>,
    ) -> Result<Self> {
        opts.optimizer.validate()?;
        let mut rng = Rng::new(opts.seed);
        let dropout_seed = rng.next_u32();
        let spec = DataSpec {
            train_n: data.train.n,
            test_n: data.test.n,
            sample: data.sample,
            target: data.target,
            mirrored: opts.mirrored,
        };
        let plan = build(
            model,
            spec,
            PlanOptions { batch: opts.batch, optimizer: opts.optimizer, input_grad: false, dropout_seed },
        )?;
        let mut backend = make_backend(&plan.buffers)?;
        for (bufs, split) in [(plan.train_data, &data.train), (plan.test_data, &data.test)] {
            backend.upload_u8(bufs.x, &split.x)?;
            backend.upload_u8(bufs.y, &split.y)?;
        }
        backend.upload_u32(plan.test_data.index, &(0..data.test.n as u32).collect::<Vec<_>>())?;
        // Parameters, then running statistics (which draw nothing from the generator).
        let specs: Vec<_> = plan.params.iter().map(|p| p.spec.clone()).collect();
        let running: Vec<_> = plan.running.iter().map(|(s, _)| s.clone()).collect();
        let values = match opts.init {
            Some(v) => v,
            None => [init_params(&specs, &mut rng), init_params(&running, &mut rng)].concat(),
        };
        let bufs = plan.params.iter().map(|p| p.value).chain(plan.running.iter().map(|r| r.1));
        for (buf, v) in bufs.zip(&values) {
            backend.upload_f32(buf, v)?;
        }
        let order = (0..plan.train_data.index_len as u32).collect();
        let (classes, pixel_classes) = (matches!(data.target, Target::Classes(_)), data.target.pixel_classes());
        let train_ops: Vec<Op> = plan.train.all().cloned().collect();
        Ok(Session {
            plan,
            train_ops,
            backend,
            rng,
            steps: 0,
            shuffle: opts.shuffle,
            order,
            batch: 0,
            classes,
            pixel_classes,
        })
    }

    pub fn backend_name(&self) -> String {
        self.backend.describe()
    }

    /// The backend, for running the plan's ops directly (benchmarks).
    pub fn backend(&mut self) -> &mut dyn Backend {
        &mut *self.backend
    }

    /// Optimiser updates so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Batches in one training epoch.
    pub fn train_batches(&self) -> usize {
        self.order.len().div_ceil(self.plan.batch)
    }

    fn zero(&mut self, buf: BufId) -> Result<()> {
        let len = self.plan.buffers[buf.0].len;
        self.backend.upload_f32(buf, &vec![0.0; len])
    }

    /// The metrics of the given metrics buffers, read back together (one wait for the device).
    fn metrics(&mut self, bufs: &[BufId]) -> Result<Vec<Metrics>> {
        let read = self.backend.download_all(bufs)?;
        Ok(read.iter().map(|m| Metrics::read(m, !self.classes, self.pixel_classes)).collect())
    }

    /// Steps until the end of the epoch (starting one if none is in progress, picking up a
    /// stopped one otherwise). `go_on(done, total)` after each step is queued: false stops
    /// there. With `watch`, the running loss is read after every step and the first non-finite
    /// one ends the call (slow on a GPU; used to find where a run diverged).
    pub fn train_epoch(&mut self, go_on: &mut dyn FnMut(usize, usize) -> bool, watch: bool) -> Result<EpochEnd> {
        if self.batch == 0 {
            // Both programs' kernels built at once, before the first step needs them.
            self.backend.prepare(&[&self.train_ops, &self.plan.eval])?;
            if self.shuffle {
                self.rng.shuffle(&mut self.order);
            }
            self.backend.upload_u32(self.plan.train_data.index, &self.order)?;
            self.zero(self.plan.train_metrics)?;
        }
        let total = self.train_batches();
        while self.batch < total {
            let offset = self.batch * self.plan.batch;
            self.steps += 1;
            self.batch += 1;
            let n = self.plan.batch.min(self.order.len() - offset);
            self.backend.run(&self.train_ops, Step { n, offset, t: self.steps })?;
            if watch && !self.backend.download_f32(self.plan.train_metrics)?[slot::LOSS].is_finite() {
                return Ok(EpochEnd::Diverged { step: self.steps, batch: self.batch });
            }
            if !go_on(self.batch, total) && self.batch < total {
                return Ok(EpochEnd::Stopped);
            }
        }
        self.batch = 0;
        Ok(EpochEnd::Done)
    }

    /// The test pass after an epoch, and the metrics (training, test) read back together: the
    /// device is waited for once, not after training and again after testing. With
    /// `keep_probs`, also the output probabilities as [`Self::predict_test`] gives them.
    pub fn end_epoch(&mut self, keep_probs: bool) -> Result<(Metrics, Metrics, Vec<f32>)> {
        let probs = self.test_steps(keep_probs)?;
        let Ok([train, test]) =
            <[Metrics; 2]>::try_from(self.metrics(&[self.plan.train_metrics, self.plan.test_metrics])?)
        else {
            unreachable!("two buffers read")
        };
        Ok((train, test, probs))
    }

    /// A whole epoch with no stopping and its test pass: (training, test) metrics. A
    /// non-finite loss is an error.
    pub fn run_epoch(&mut self) -> Result<(Metrics, Metrics)> {
        self.train_epoch(&mut |_, _| true, false)?;
        let (train, test, _) = self.end_epoch(false)?;
        if !train.loss.is_finite() {
            return Err(Error::Diverged(format!("the loss became non-finite by step {}", self.steps)));
        }
        Ok((train, test))
    }

    /// The session's progress and its tensors: parameters (by checkpoint key), optimiser state
    /// and the running training metrics.
    pub fn progress(&mut self) -> Result<(Progress, BTreeMap<String, Tensor>)> {
        let mut wanted = self.param_values();
        for p in &self.plan.params {
            for (i, &buf) in p.state.iter().enumerate() {
                wanted.push((state_key(&p.spec.key, i), p.spec.shape.clone(), buf));
            }
        }
        let metrics_len = self.plan.buffers[self.plan.train_metrics.0].len;
        wanted.push((TRAIN_METRICS.into(), vec![metrics_len], self.plan.train_metrics));
        let tensors = self.read(wanted)?;
        let progress =
            Progress { steps: self.steps, batch: self.batch, rng: self.rng.state(), order: self.order.clone() };
        Ok((progress, tensors))
    }

    /// Puts the session back where [`Self::progress`] found one; `what` names the source in
    /// errors.
    pub fn restore(&mut self, p: &Progress, tensors: &BTreeMap<String, Tensor>, what: &str) -> Result<()> {
        let bad = |msg: String| Error::Checkpoint(format!("{what}: {msg}"));
        let get = |key: &str, len: usize| match tensors.get(key) {
            Some(t) if t.data.len() == len => Ok(t.data.as_slice()),
            Some(t) => Err(bad(format!("{key} holds {} values, expected {len}", t.data.len()))),
            None => Err(bad(format!("{key} is missing"))),
        };
        let mut order = p.order.clone();
        order.sort_unstable();
        if order.iter().enumerate().any(|(i, &j)| i as u32 != j) || p.batch > self.train_batches() {
            return Err(bad("the training order does not fit this data set".into()));
        }
        for param in self.plan.params.clone() {
            let len = param.spec.len();
            self.backend.upload_f32(param.value, get(&param.spec.key, len)?)?;
            for (i, &buf) in param.state.iter().enumerate() {
                self.backend.upload_f32(buf, get(&state_key(&param.spec.key, i), len)?)?;
            }
        }
        for (spec, buf) in self.plan.running.clone() {
            self.backend.upload_f32(buf, get(&spec.key, spec.len())?)?;
        }
        let metrics_len = self.plan.buffers[self.plan.train_metrics.0].len;
        self.backend.upload_f32(self.plan.train_metrics, get(TRAIN_METRICS, metrics_len)?)?;
        self.rng = Rng::from_state(&p.rng).ok_or_else(|| bad("the generator state is malformed".into()))?;
        (self.steps, self.batch, self.order) = (p.steps, p.batch, p.order.clone());
        self.backend.upload_u32(self.plan.train_data.index, &self.order)
    }

    /// Samples per test step: up to the plan's `eval_batch` where the backend wants large steps,
    /// else one training batch (the metrics are the same either way).
    pub fn test_batch(&self) -> usize {
        if self.backend.large_steps() {
            self.plan.eval_batch
        } else {
            self.plan.batch
        }
    }

    /// The test pass, in steps of [`Self::test_batch`] samples; its metrics as in batches of
    /// the training batch size.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        self.test_pass(false).map(|(m, _)| m)
    }

    /// The test pass, also returning the output probabilities of every test sample
    /// (`[n, outputs]`, read back batch by batch).
    pub fn predict_test(&mut self) -> Result<(Metrics, Vec<f32>)> {
        self.test_pass(true)
    }

    fn test_pass(&mut self, keep_probs: bool) -> Result<(Metrics, Vec<f32>)> {
        let probs = self.test_steps(keep_probs)?;
        Ok((self.metrics(&[self.plan.test_metrics])?.remove(0), probs))
    }

    /// Runs the test pass's steps; with `keep_probs`, returns the probabilities of every sample.
    fn test_steps(&mut self, keep_probs: bool) -> Result<Vec<f32>> {
        self.zero(self.plan.test_metrics)?;
        if let Some(c) = self.plan.confusion {
            self.zero(c)?;
        }
        let (n, mut probs) = (self.plan.test_data.n, Vec::new());
        let batch = self.test_batch();
        let per = self.plan.buffers[self.plan.eval_probs.0].len / self.plan.eval_batch;
        for offset in (0..n).step_by(batch) {
            let step = Step { n: batch.min(n - offset), offset, t: self.steps };
            self.backend.run(&self.plan.eval, step)?;
            if keep_probs {
                probs.extend_from_slice(&self.backend.download_f32(self.plan.eval_probs)?[..step.n * per]);
            }
        }
        Ok(probs)
    }

    /// The last test pass's confusion matrix `[true][predicted]` (classification only).
    pub fn confusion(&mut self) -> Result<Option<Vec<f32>>> {
        self.plan.confusion.map(|c| self.backend.download_f32(c)).transpose()
    }

    /// Every parameter and running statistic by checkpoint key.
    pub fn params(&mut self) -> Result<BTreeMap<String, Tensor>> {
        let wanted = self.param_values();
        self.read(wanted)
    }

    /// (checkpoint key, shape, buffer) of every parameter's value and running statistic.
    fn param_values(&self) -> Vec<(String, Vec<usize>, BufId)> {
        let params = self.plan.params.iter().map(|p| (&p.spec, p.value));
        params
            .chain(self.plan.running.iter().map(|(s, b)| (s, *b)))
            .map(|(s, b)| (s.key.clone(), s.shape.clone(), b))
            .collect()
    }

    /// The `wanted` buffers, read back together, by key.
    fn read(&mut self, wanted: Vec<(String, Vec<usize>, BufId)>) -> Result<BTreeMap<String, Tensor>> {
        let bufs: Vec<BufId> = wanted.iter().map(|w| w.2).collect();
        let data = self.backend.download_all(&bufs)?;
        Ok(wanted.into_iter().zip(data).map(|((key, shape, _), data)| (key, Tensor { shape, data })).collect())
    }
}
