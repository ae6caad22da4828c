//! A training session: a plan on a backend, the data uploaded once, the seeded generator, and
//! the epoch loop that reads metrics back only at the end of an epoch.

use crate::backend::Backend;
use crate::checkpoint::Tensor;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::{build, slot, BufDesc, BufId, DataSpec, Plan, PlanOptions, Step, Target};
use crate::model::{init_params, Model};
use crate::optim::Optimizer;
use crate::rng::Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub batch: usize,
    pub optimizer: Optimizer,
    pub seed: u64,
    pub shuffle: bool,
    /// Train on each sample and its mirror image.
    pub mirrored: bool,
    /// Initial parameter values in plan order; drawn from the seed when `None`.
    pub init: Option<Vec<Vec<f32>>>,
}

/// One pass's figures, as Keras reports them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Mean loss per sample (L2 penalty included).
    pub loss: f64,
    /// Accuracy over all samples, or the mean of per-batch Dice.
    pub metric: f64,
    /// Dice over every pixel of the pass at once (segmentation only).
    pub dice_whole: Option<f64>,
}

pub struct Session {
    pub plan: Plan,
    backend: Box<dyn Backend>,
    rng: Rng,
    /// Optimiser updates so far.
    steps: u32,
    shuffle: bool,
    order: Vec<u32>,
    classes: bool,
}

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
        let specs: Vec<_> = plan.params.iter().map(|p| p.spec.clone()).collect();
        let values = match opts.init {
            Some(v) => v,
            None => init_params(&specs, &mut rng),
        };
        for (p, v) in plan.params.iter().zip(&values) {
            backend.upload_f32(p.value, v)?;
        }
        let order = (0..plan.train_data.index_len as u32).collect();
        let classes = matches!(data.target, Target::Classes(_));
        Ok(Session { plan, backend, rng, steps: 0, shuffle: opts.shuffle, order, classes })
    }

    pub fn backend_name(&self) -> String {
        self.backend.describe()
    }

    /// The backend, for running the plan's ops directly (benchmarks).
    pub fn backend(&mut self) -> &mut dyn Backend {
        &mut *self.backend
    }

    /// Batches in one training epoch.
    pub fn train_batches(&self) -> usize {
        self.order.len().div_ceil(self.plan.batch)
    }

    fn zero(&mut self, buf: BufId) -> Result<()> {
        let len = self.plan.buffers[buf.0].len;
        self.backend.upload_f32(buf, &vec![0.0; len])
    }

    fn metrics(&mut self, buf: BufId) -> Result<Metrics> {
        let m = self.backend.download_f32(buf)?;
        let samples = m[slot::SAMPLES] as f64;
        let metric = if self.classes {
            m[slot::METRIC] as f64 / samples
        } else {
            m[slot::METRIC] as f64 / m[slot::BATCHES] as f64
        };
        let dice_whole = (!self.classes).then(|| 2.0 * m[slot::YP] as f64 / (m[slot::Y] as f64 + m[slot::P] as f64));
        Ok(Metrics { loss: m[slot::LOSS] as f64 / samples, metric, dice_whole })
    }

    /// One epoch of training; `on_batch(done, total)` after each batch is queued.
    pub fn train_epoch(&mut self, epoch: usize, on_batch: &mut dyn FnMut(usize, usize)) -> Result<Metrics> {
        if self.shuffle {
            self.rng.shuffle(&mut self.order);
        }
        self.backend.upload_u32(self.plan.train_data.index, &self.order)?;
        self.zero(self.plan.train_metrics)?;
        let ops: Vec<_> = self.plan.train.all().cloned().collect();
        let total = self.train_batches();
        for (b, offset) in (0..self.order.len()).step_by(self.plan.batch).enumerate() {
            self.steps += 1;
            let n = self.plan.batch.min(self.order.len() - offset);
            self.backend.run(&ops, Step { n, offset, t: self.steps })?;
            on_batch(b + 1, total);
        }
        let m = self.metrics(self.plan.train_metrics)?;
        if !m.loss.is_finite() {
            return Err(Error::Diverged(format!(
                "training diverged in epoch {epoch}: the loss became {} (steps {}..{}); try a smaller --lr",
                m.loss,
                self.steps as usize - total + 1,
                self.steps
            )));
        }
        Ok(m)
    }

    /// The test pass in batches of the training batch size.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        self.test_pass(false).map(|(m, _)| m)
    }

    /// The test pass, also returning the output probabilities of every test sample
    /// (`[n, outputs]`, read back batch by batch).
    pub fn predict_test(&mut self) -> Result<(Metrics, Vec<f32>)> {
        self.test_pass(true)
    }

    fn test_pass(&mut self, keep_probs: bool) -> Result<(Metrics, Vec<f32>)> {
        self.zero(self.plan.test_metrics)?;
        if let Some(c) = self.plan.confusion {
            self.zero(c)?;
        }
        let (n, mut probs) = (self.plan.test_data.n, Vec::new());
        let per = self.plan.buffers[self.plan.probs.0].len / self.plan.batch;
        for offset in (0..n).step_by(self.plan.batch) {
            let step = Step { n: self.plan.batch.min(n - offset), offset, t: self.steps };
            self.backend.run(&self.plan.eval, step)?;
            if keep_probs {
                probs.extend_from_slice(&self.backend.download_f32(self.plan.probs)?[..step.n * per]);
            }
        }
        Ok((self.metrics(self.plan.test_metrics)?, probs))
    }

    /// The last test pass's confusion matrix `[true][predicted]` (classification only).
    pub fn confusion(&mut self) -> Result<Option<Vec<f32>>> {
        self.plan.confusion.map(|c| self.backend.download_f32(c)).transpose()
    }

    /// Every parameter by checkpoint key.
    pub fn params(&mut self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for p in self.plan.params.clone() {
            let data = self.backend.download_f32(p.value)?;
            out.insert(p.spec.key.clone(), Tensor { shape: p.spec.shape.clone(), data });
        }
        Ok(out)
    }
}
