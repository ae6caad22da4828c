//! A training run from resolved settings: data, model, session, progress, and the run folder.

use crate::backend::gpu::{self, Gpu, GpuBackend};
use crate::backend::{cpu::CpuBackend, Backend};
use crate::checkpoint;
use crate::data::{mnist, warwick, Dataset};
use crate::error::{Error, Result};
use crate::files::atomic_write;
use crate::graph::Target;
use crate::model::Act;
use crate::optim::Optimizer;
use crate::report::{write_confusion, EpochRecord, History};
use crate::tasks::{self, Task, Variant};
use crate::train::{Metrics, Session, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// A hardware GPU when there is one, else the CPU.
    Auto,
    /// The GPU, even a software one (lavapipe); an error when there is no adapter.
    Gpu,
    Cpu,
}

/// Every setting of a run, as written to config.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainConfig {
    pub task: Task,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub variant: Variant,
    pub seed: u64,
    pub shuffle: bool,
    /// Append a left-right mirror image of every training sample (and its mask).
    pub hflip: bool,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub init: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub backend: BackendChoice,
    pub out: PathBuf,
}

impl TrainConfig {
    /// Rejects settings that cannot make a sensible run, before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        let v = &self.variant;
        if !(0.0..1.0).contains(&v.dropout) {
            return Err(Error::Config(format!("--dropout must be in [0, 1), got {}", v.dropout)));
        }
        if !(v.l2.is_finite() && v.l2 >= 0.0) {
            return Err(Error::Config(format!("--l2 must be a number ≥ 0, got {}", v.l2)));
        }
        if v.activation == Act::Softmax {
            return Err(Error::Config("--activation softmax is only for the output layer".into()));
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return Err(Error::Config("--train-limit and --test-limit must be at least 1".into()));
        }
        self.optimizer.validate()
    }
}

/// The task's data, cut to the limits.
pub fn load_data(
    task: Task,
    data: Option<&Path>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<Dataset> {
    let mut d = match task {
        Task::MnistMlp | Task::MnistCnn => mnist::load(data, tasks::input_shape(task))?,
        Task::Warwick => warwick::load(data)?,
    };
    d.limit(train_limit, test_limit)?;
    Ok(d)
}

/// The chosen backend for a plan's buffers, and why it was chosen.
pub fn make_backend(choice: BackendChoice, descs: &[crate::graph::BufDesc]) -> Result<(Box<dyn Backend>, String)> {
    Ok(match (choice, gpu::adapter()) {
        (BackendChoice::Cpu, _) => (Box::new(CpuBackend::new(descs)), "asked for".into()),
        (BackendChoice::Gpu, Err(e)) => {
            return Err(Error::Gpu(format!(
                "--backend gpu: no GPU adapter ({e}); install a Vulkan driver (mesa-vulkan-drivers gives a \
                 software one) or use --backend cpu"
            )))
        }
        (BackendChoice::Gpu, Ok(a)) => (Box::new(GpuBackend::new(Gpu::open(a)?, descs)?), "asked for".into()),
        (BackendChoice::Auto, Ok(a)) if !gpu::is_software(&a.get_info()) => {
            (Box::new(GpuBackend::new(Gpu::open(a)?, descs)?), "hardware adapter found".into())
        }
        (BackendChoice::Auto, Ok(a)) => (
            Box::new(CpuBackend::new(descs)),
            format!("the only GPU adapter is software ({}); --backend gpu uses it", a.get_info().name),
        ),
        (BackendChoice::Auto, Err(e)) => (Box::new(CpuBackend::new(descs)), format!("no GPU adapter: {e}")),
    })
}

/// Makes the chosen backend and says on one line which it is and why.
pub fn backend_factory(choice: BackendChoice) -> impl FnOnce(&[crate::graph::BufDesc]) -> Result<Box<dyn Backend>> {
    move |descs| {
        let (be, why) = make_backend(choice, descs)?;
        eprintln!("backend: {} — {why}", be.describe());
        Ok(be)
    }
}

/// `runs/<task>-<UTC date>-<time>`, made unique.
pub fn default_out(task: Task) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let base = format!("runs/{}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}", task.name(), rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = PathBuf::from(&base);
    for i in 2.. {
        if !out.exists() {
            break;
        }
        out = PathBuf::from(format!("{base}-{i}"));
    }
    out
}

fn progress(total: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let style =
        ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} batches {elapsed_precise} eta {eta}")
            .expect("valid template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// What a finished run gives back.
pub struct RunResult {
    pub history: History,
    pub out: PathBuf,
}

/// Trains as `cfg` says, printing one line per epoch and keeping the run folder current.
pub fn train(cfg: &TrainConfig) -> Result<RunResult> {
    cfg.validate()?;
    let data = load_data(cfg.task, cfg.data.as_deref(), cfg.train_limit, cfg.test_limit)?;
    let model = tasks::model(cfg.task, cfg.variant, data.sample);
    let init = match &cfg.init {
        Some(path) => Some(checkpoint::match_params(path, &checkpoint::load(path)?, &model.params()?)?),
        None => None,
    };
    let opts = SessionOptions {
        batch: cfg.batch_size,
        optimizer: cfg.optimizer,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
        mirrored: cfg.hflip,
        init,
    };
    let mut session = Session::new(&model, &data, opts, backend_factory(cfg.backend))?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    atomic_write(&cfg.out.join("config.json"), &serde_json::to_vec_pretty(cfg).expect("config serialises"))?;
    let metric = cfg.task.metric();
    let mut history = History { task: cfg.task.name().into(), metric: metric.into(), epochs: Vec::new() };
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let bar = progress(session.train_batches(), epoch, cfg.epochs);
        let train: Metrics = session.train_epoch(epoch, &mut |done, _| bar.set_position(done as u64))?;
        let test = session.evaluate()?;
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "Epoch {epoch}/{} - {seconds:.2}s - loss {:.4} - {metric} {:.4} - test_loss {:.4} - test_{metric} {:.4}",
            cfg.epochs, train.loss, train.metric, test.loss, test.metric
        );
        history.epochs.push(EpochRecord {
            epoch,
            loss: train.loss,
            metric: train.metric,
            test_loss: test.loss,
            test_metric: test.metric,
            test_dice_whole: test.dice_whole,
            seconds,
        });
        history.write(&cfg.out)?;
        checkpoint::save(&cfg.out.join("model.safetensors"), &session.params()?)?;
    }
    if let (Some(counts), Target::Classes(k)) = (session.confusion()?, data.target) {
        write_confusion(&cfg.out, &counts, k)?;
    }
    Ok(RunResult { history, out: cfg.out.clone() })
}

/// Test loss and metric of a checkpoint, without training.
pub fn evaluate(
    task: Task,
    variant: Variant,
    model_path: &Path,
    data: Option<&Path>,
    batch: usize,
    test_limit: Option<usize>,
    backend: BackendChoice,
) -> Result<Metrics> {
    let data = load_data(task, data, Some(1), test_limit)?;
    let model = tasks::model(task, variant, data.sample);
    let init = checkpoint::match_params(model_path, &checkpoint::load(model_path)?, &model.params()?)?;
    let opts = SessionOptions {
        batch,
        optimizer: tasks::defaults(task).optimizer,
        seed: 0,
        shuffle: false,
        mirrored: false,
        init: Some(init),
    };
    Session::new(&model, &data, opts, backend_factory(backend))?.evaluate()
}

/// `gpu-train bench`: every benchmark on one backend, printed, and written to `json` if given.
pub fn bench(choice: BackendChoice, json: Option<&Path>, quick: bool) -> Result<()> {
    let report = crate::bench::run(choice, &crate::bench::Options { quick })?;
    if let Some(path) = json {
        atomic_write(path, &serde_json::to_vec_pretty(&report).expect("report serialises"))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
