//! A training run from resolved settings: data, model, session, progress, and the run folder.

use crate::backend::choice;
pub use crate::backend::choice::{backend_factory, make_backend, BackendChoice};
use crate::checkpoint;
use crate::checkpoint::RunState;
use crate::data::{folders, idx, masks, mnist, warwick, DataKind, Dataset};
use crate::error::{Error, Result};
use crate::files::atomic_write;
use crate::folder::{Claim, Held, Kind};
use crate::graph::Target;
use crate::model::file::{to_toml, ModelText};
use crate::model::{Act, Model, Shape};
use crate::optim::Optimizer;
use crate::report::pictures::{misclassified, worst_segmentations, write_curves};
use crate::report::{plot, write_class_scores, write_confusion, EpochRecord, History};
use crate::tasks::{self, Task, Variant};
use crate::train::{EpochEnd, Metrics, Session, SessionOptions};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Every setting of a run, as written to config.json.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub task: Task,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub variant: Variant,
    /// A model file trained instead of the task's built-in network.
    #[serde(default)]
    pub model: Option<ModelText>,
    pub seed: u64,
    pub shuffle: bool,
    /// Append a left-right mirror image of every training sample (and its mask).
    pub hflip: bool,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// Warwick: resize every image and label to this side.
    #[serde(default)]
    pub image_size: Option<u32>,
    /// Warwick: pictures of this many test images with the lowest Dice.
    #[serde(default = "default_show_worst")]
    pub show_worst: usize,
    /// Write the checkpoint every this many epochs (and after the last); `None`: after an epoch
    /// that ends [`CHECKPOINT_INTERVAL`] or more after the last checkpoint.
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    pub init: Option<PathBuf>,
    pub data: Option<PathBuf>,
    /// What `data` holds when it is not the task's built-in set.
    #[serde(default)]
    pub dataset: Option<DataKind>,
    /// `--dataset classes` without train/ and test/ folders: the fraction of each class tested.
    #[serde(default)]
    pub test_split: Option<f32>,
    /// `--dataset classes`: 1 (grey) or 3 (RGB) channels.
    #[serde(default)]
    pub channels: Option<usize>,
    /// `--dataset masks`: classes of pixels (2: binary).
    #[serde(default)]
    pub classes: Option<usize>,
    pub backend: BackendChoice,
    pub out: PathBuf,
    /// How `out` is taken: a new or empty folder, a unique name from a stem, or replacing a run.
    #[serde(skip)]
    pub claim: Claim,
}

fn default_show_worst() -> usize {
    3
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
        if self.checkpoint_every == Some(0) {
            return Err(Error::Config("--checkpoint-every must be at least 1".into()));
        }
        let v = &self.variant;
        if !(0.0..1.0).contains(&v.dropout) {
            return Err(Error::Config(format!("--dropout must be in [0, 1), got {}", v.dropout)));
        }
        if !(v.l2.is_finite() && v.l2 >= 0.0) {
            return Err(Error::Config(format!("--l2 must be a number ≥ 0, got {}", v.l2)));
        }
        if v.act_after_pool && self.task != Task::MnistCnn {
            return Err(Error::Config("--act-after-pool applies to --task mnist-cnn only".into()));
        }
        if v.activation == Act::Softmax {
            return Err(Error::Config("--activation softmax is only for the output layer".into()));
        }
        match (self.image_size, self.dataset) {
            (Some(side), Some(DataKind::Classes)) if side == 0 || side > 4096 => {
                return Err(Error::Config(format!("--image-size must be 1 to 4096, got {side}")))
            }
            (Some(_), Some(DataKind::Classes)) => {}
            // Masks are segmented; a classifier's task is refused with them when the data loads.
            (Some(side), Some(DataKind::Masks)) => {
                check_image_size(if self.task.segments() { self.task } else { Task::Warwick }, side)?
            }
            (Some(side), _) => check_image_size(self.task, side)?,
            (None, _) => {}
        }
        if (self.test_split.is_some() || self.channels.is_some()) && self.dataset != Some(DataKind::Classes) {
            return Err(Error::Config("--test-split and --channels apply to --dataset classes only".into()));
        }
        if self.classes.is_some() && self.dataset != Some(DataKind::Masks) {
            return Err(Error::Config("--classes applies to --dataset masks only".into()));
        }
        if self.channels.is_some_and(|c| c != 1 && c != 3) {
            return Err(Error::Config(format!(
                "--channels must be 1 (grey) or 3 (RGB), got {}",
                self.channels.unwrap_or(0)
            )));
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return Err(Error::Config("--train-limit and --test-limit must be at least 1".into()));
        }
        self.optimizer.validate()
    }
}

/// `--image-size` is for the segmenters, whose poolings and up-convolutions need a multiple of
/// 4 (the FCN) or 8 (the U-Net).
pub(crate) fn check_image_size(task: Task, side: u32) -> Result<()> {
    if !task.segments() {
        return Err(Error::Config("--image-size applies to --task warwick and warwick-unet only".into()));
    }
    let m = task.side_multiple();
    if side == 0 || !side.is_multiple_of(m) || side > 4096 {
        return Err(Error::Config(format!("--image-size must be a positive multiple of {m} up to 4096, got {side}")));
    }
    Ok(())
}

/// Where a run's data come from: the task's built-in set, or a folder of the user's.
#[derive(Clone, Debug, Default)]
pub struct DataSource {
    pub data: Option<PathBuf>,
    pub kind: Option<DataKind>,
    pub test_split: Option<f32>,
    pub channels: Option<usize>,
    pub classes: Option<usize>,
    /// Splits a folder of classes (`test_split`).
    pub seed: u64,
}

impl TrainConfig {
    pub fn source(&self) -> DataSource {
        DataSource {
            data: self.data.clone(),
            kind: self.dataset,
            test_split: self.test_split,
            channels: self.channels,
            classes: self.classes,
            seed: self.seed,
        }
    }
}

/// The task's data, or a set of the user's, cut to the limits; images resized to `image_size`
/// if given. Also the class names, where the data name them (folders of classes).
pub fn load_data(
    task: Task,
    source: &DataSource,
    (train_limit, test_limit): (Option<usize>, Option<usize>),
    image_size: Option<u32>,
) -> Result<(Dataset, Vec<String>)> {
    let (data, mut names) = (source.data.as_deref(), Vec::new());
    let flat = |c, h, w| if task == Task::MnistMlp { Shape::flat(c * h * w) } else { Shape::new(c, h, w) };
    let dir = |kind: &str| {
        data.ok_or_else(|| Error::Config(format!("--dataset {kind} needs --data DIR, the folder of the set")))
    };
    let mut d = match (source.kind, task) {
        (Some(DataKind::Masks), t) if t.segments() => {
            let (set, skipped) = masks::load(dir("masks")?, &masks::FOLDERS, image_size, source.classes)?;
            say_skipped(&skipped);
            set
        }
        (Some(DataKind::Masks), _) => {
            return Err(Error::Config("--dataset masks holds masks to segment: use --task warwick".into()))
        }
        (Some(kind), t) if t.segments() => {
            return Err(Error::Config(format!(
                "--dataset {} holds classes, and --task warwick segments images: use mnist-mlp or mnist-cnn",
                if kind == DataKind::Idx { "idx" } else { "classes" }
            )))
        }
        (Some(DataKind::Classes), _) => {
            let o = folders::Options {
                image_size,
                channels: source.channels.unwrap_or(1),
                test_split: source.test_split,
                seed: source.seed,
            };
            let f = folders::load(dir("classes")?, o)?;
            say_skipped(&f.skipped);
            names = f.classes;
            let Shape { c, h, w } = f.sample;
            Dataset { train: f.train, test: f.test, sample: flat(c, h, w), target: Target::Classes(names.len()) }
        }
        (Some(DataKind::Idx), _) => {
            let set = idx::load_dir(dir("idx")?)?;
            Dataset {
                train: set.train,
                test: set.test,
                sample: flat(1, set.h, set.w),
                target: Target::Classes(set.classes),
            }
        }
        (None, Task::MnistMlp | Task::MnistCnn) => mnist::load(data, tasks::input_shape(task))?,
        (None, Task::Warwick | Task::WarwickUnet) => warwick::load(data, image_size)?,
    };
    d.limit(train_limit, test_limit)?;
    Ok((d, names))
}

/// Says which files of a folder of the user's were passed over.
fn say_skipped(skipped: &[PathBuf]) {
    if let Some(line) = crate::data::skipped_line(skipped) {
        say(line);
    }
}

/// `runs/<task>-<UTC date>-<time>`: the stem of a run's default folder ([`Claim::Unique`] adds
/// `-2`, `-3`, … for runs started in the same second).
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
    PathBuf::from(format!(
        "runs/{}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        task.name(),
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Where progress bars and epoch lines go: a [`MultiProgress`] shared with an overall bar when
/// one is set (by `reproduce`), else the terminal directly.
pub static DISPLAY: OnceLock<MultiProgress> = OnceLock::new();

/// Prints a line above the progress bars (plainly when they are hidden: not a terminal).
pub fn say(line: String) {
    match DISPLAY.get() {
        Some(multi) if !multi.is_hidden() => multi.println(line).unwrap_or(()),
        _ => println!("{line}"),
    }
}

fn progress(total: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let bar = match DISPLAY.get() {
        Some(multi) => multi.add(bar),
        None => bar,
    };
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
    /// The backend that ran it, as `backend:` lines say.
    pub backend: String,
}

/// Trains as `cfg` says, printing one line per epoch and keeping the run folder current.
/// Set by the Ctrl-C handler: a run stops after the step in progress and writes a checkpoint.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The run folder's checkpoint: parameters, optimiser state, progress and history.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Without `--checkpoint-every`, the shortest time between two checkpoints written after epochs
/// (short epochs would otherwise spend more time writing checkpoints than training).
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Trains from the start.
pub fn train(cfg: &TrainConfig) -> Result<RunResult> {
    run(cfg, None)
}

/// Continues the run in `dir` from its checkpoint, with its own settings (and `data` or
/// `backend` if given: the data may have moved, and the result does not depend on the backend
/// beyond float rounding).
pub fn resume(dir: &Path, data: Option<PathBuf>, backend: Option<BackendChoice>) -> Result<RunResult> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut cfg: TrainConfig =
        serde_json::from_str(&text).map_err(|e| Error::bad_file(&path, format!("not a run's config.json: {e}")))?;
    cfg.out = dir.to_path_buf();
    cfg.data = data.or(cfg.data);
    cfg.backend = backend.unwrap_or(cfg.backend);
    let ckpt = dir.join(CHECKPOINT);
    if !ckpt.is_file() {
        return Err(Error::bad_file(&ckpt, "is missing: the run stopped before its first checkpoint"));
    }
    run(&cfg, Some(&ckpt))
}

fn run(cfg: &TrainConfig, checkpoint: Option<&Path>) -> Result<RunResult> {
    cfg.validate()?;
    let mut folder = match checkpoint {
        Some(_) => Held::reopen(&cfg.out)?,
        None => Held::claim(&cfg.out, Kind::Run, cfg.claim)?,
    };
    let cfg = &TrainConfig { out: folder.path().to_path_buf(), ..cfg.clone() };
    // The device opens while the data loads.
    let mut opening = choice::Opening::start(cfg.backend);
    let (data, class_names) = load_data(cfg.task, &cfg.source(), (cfg.train_limit, cfg.test_limit), cfg.image_size)?;
    let samples = data.train.n * if cfg.hflip { 2 } else { 1 };
    if cfg.batch_size > samples {
        return Err(Error::Config(format!(
            "--batch-size {} is larger than the training set ({samples} samples)",
            cfg.batch_size
        )));
    }
    let model = match &cfg.model {
        Some(file) => file.model()?,
        None => tasks::model_for(cfg.task, cfg.variant, data.sample, data.target),
    };
    let init = match (&cfg.init, checkpoint) {
        (Some(path), None) => Some(checkpoint::match_params(path, &checkpoint::load(path)?, &model.saved()?)?),
        _ => None,
    };
    let saved = checkpoint.map(checkpoint::load_run).transpose()?;
    let opts = SessionOptions {
        batch: cfg.batch_size,
        optimizer: cfg.optimizer,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
        mirrored: cfg.hflip,
        init,
    };
    let mut session = Session::new(&model, &data, opts, |descs| {
        let (be, why) = choice::make(opening.take()?, descs)?;
        say(format!("backend: {} — {why}", be.describe()));
        Ok(be)
    })?;
    say(data_line(&data, session.backend().buffer_budget()));
    let metric = cfg.task.metric();
    let mut history = History {
        task: cfg.task.name().into(),
        metric: metric.into(),
        backend: session.backend_name(),
        epochs: Vec::new(),
    };
    let mut done = 0;
    if let (Some((state, tensors)), Some(path)) = (saved, checkpoint) {
        session.restore(&state.progress, &tensors, &path.display().to_string())?;
        (history, done) = (History { backend: history.backend, ..state.history }, state.epochs_done);
        let partial = match state.progress.batch {
            0 => String::new(),
            b => format!(" and {b} batches of epoch {}", done + 1),
        };
        say(format!("resuming {} after epoch {done}{partial}", cfg.out.display()));
    } else {
        folder.clear()?;
        atomic_write(&cfg.out.join("config.json"), &serde_json::to_vec_pretty(cfg).expect("config serialises"))?;
        let trained = to_toml(&model, &format!("The model of the run in {}.", cfg.out.display()));
        atomic_write(&cfg.out.join("model.toml"), trained.as_bytes())?;
        if !class_names.is_empty() {
            atomic_write(&cfg.out.join("classes.json"), &serde_json::to_vec_pretty(&class_names).expect("names"))?;
        }
        save_checkpoint(cfg, &mut session, &history, 0)?;
        folder.commit();
    }
    let (mut probs, mut saved_at) = (Vec::new(), Instant::now());
    for epoch in done + 1..=cfg.epochs {
        let start = Instant::now();
        let bar = progress(session.train_batches(), epoch, cfg.epochs);
        let end = session.train_epoch(
            &mut |done, _| {
                bar.set_position(done as u64);
                !INTERRUPTED.load(Ordering::Relaxed)
            },
            false,
        )?;
        bar.finish_and_clear();
        if end != EpochEnd::Done {
            return Err(interrupted(cfg, &mut session, &history, epoch - 1));
        }
        // The last epoch's test pass also keeps the outputs, for the pictures below.
        let (train, test, p) = session.end_epoch(epoch == cfg.epochs)?;
        if !train.loss.is_finite() {
            return Err(diverged(cfg, &mut session, epoch, train.loss));
        }
        if epoch == cfg.epochs {
            probs = p;
            if !test.classes.is_empty() {
                write_class_scores(&cfg.out, &test.classes)?;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let iou = test.mean_iou().map(|v| format!(" - test_mean_iou {v:.4}")).unwrap_or_default();
        say(format!(
            "Epoch {epoch}/{} - {seconds:.2}s - loss {:.4} - {metric} {:.4} - test_loss {:.4} - test_{metric} {:.4}{iou}",
            cfg.epochs, train.loss, train.metric, test.loss, test.metric
        ));
        history.epochs.push(EpochRecord {
            epoch,
            loss: train.loss,
            metric: train.metric,
            test_loss: test.loss,
            test_metric: test.metric,
            test_dice_whole: test.dice_whole,
            test_mean_iou: test.mean_iou(),
            seconds,
        });
        if checkpoint_due(cfg.checkpoint_every, (epoch, cfg.epochs), saved_at.elapsed()) {
            save_checkpoint(cfg, &mut session, &history, epoch)?;
            saved_at = Instant::now();
        }
        if INTERRUPTED.load(Ordering::Relaxed) && epoch < cfg.epochs {
            return Err(interrupted(cfg, &mut session, &history, epoch));
        }
    }
    write_curves(&cfg.out, &history)?;
    if probs.is_empty() {
        // Resumed after the last epoch: no test pass ran in this process.
        probs = session.predict_test()?.1;
    }
    write_pictures(cfg, &data, &mut session, &probs)?;
    Ok(RunResult { history, out: cfg.out.clone(), backend: session.backend_name() })
}

/// What the run holds of the data, and where: the `data:` line.
fn data_line(data: &Dataset, budget: Option<u64>) -> String {
    let bytes = |d: &crate::data::Split| d.x.len() + d.y.len();
    let sample = match data.sample {
        Shape { c, h: 1, w: 1 } => format!("{c} values"),
        Shape { c, h, w } => format!("{c}x{h}x{w}"),
    };
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let held = match budget {
        Some(b) => format!(
            " (largest buffer {:.1} MiB, within the budget of {:.1} MiB per buffer)",
            mib(data.train.x.len().max(data.test.x.len()) as f64),
            mib(b as f64)
        ),
        None => " in host memory".into(),
    };
    format!(
        "data: {} training and {} test samples of {sample}, {:.1} MB held by the backend for the whole run{held}",
        data.train.n,
        data.test.n,
        (bytes(&data.train) + bytes(&data.test)) as f64 / 1e6,
    )
}

/// The pictures of the last test pass (`probs`): the confusion matrix and the misclassified
/// samples of a classifier, or the worst segmentations.
fn write_pictures(cfg: &TrainConfig, data: &Dataset, session: &mut Session, probs: &[f32]) -> Result<()> {
    match (session.confusion()?, data.target) {
        (Some(counts), Target::Classes(k)) => {
            write_confusion(&cfg.out, &counts, k)?;
            let title = format!("{}: confusion on {} test images", cfg.task.name(), data.test.n);
            plot::confusion(&cfg.out.join("confusion.png"), &title, &counts, k)?;
            misclassified(&cfg.out, data, probs, k)?;
        }
        (_, target) => worst_segmentations(&cfg.out, data, probs, target.pixel_classes(), cfg.show_worst)?,
    }
    Ok(())
}

/// Whether the checkpoint is written after epoch `epoch` of `epochs`, `since` the last one, with
/// `--checkpoint-every` at `every`.
fn checkpoint_due(every: Option<usize>, (epoch, epochs): (usize, usize), since: std::time::Duration) -> bool {
    epoch == epochs
        || match every {
            Some(every) => epoch.is_multiple_of(every),
            None => since >= CHECKPOINT_INTERVAL,
        }
}

/// Writes the run's checkpoint after `epochs_done` epochs (and any steps of the next),
/// `model.safetensors` (the parameters and running statistics alone) and the history files,
/// which then agree.
fn save_checkpoint(cfg: &TrainConfig, session: &mut Session, history: &History, epochs_done: usize) -> Result<()> {
    history.write(&cfg.out)?;
    let (progress, tensors) = session.progress()?;
    let state = RunState { epochs_done, progress, history: history.clone() };
    checkpoint::save_run(&cfg.out.join(CHECKPOINT), &tensors, &state)?;
    let plan = &session.plan;
    let specs = plan.params.iter().map(|p| &p.spec).chain(plan.running.iter().map(|r| &r.0));
    let keys: std::collections::HashSet<String> = specs.map(|s| s.key.clone()).collect();
    let params = tensors.into_iter().filter(|(k, _)| keys.contains(k)).collect();
    checkpoint::save(&cfg.out.join("model.safetensors"), &params)
}

/// After Ctrl-C: the checkpoint holds every step taken; the error says how to go on.
fn interrupted(cfg: &TrainConfig, session: &mut Session, history: &History, epochs_done: usize) -> Error {
    if let Err(e) = save_checkpoint(cfg, session, history, epochs_done) {
        return e;
    }
    Error::Interrupted(format!(
        "interrupted after step {} (epoch {} of {}); the checkpoint holds every step so far. Resume with:\n  \
         gpu-train --resume {}",
        session.steps(),
        epochs_done + 1,
        cfg.epochs,
        cfg.out.display()
    ))
}

/// The error for a non-finite loss in `epoch`. The checkpoint is replayed step by step (the
/// replay is exact) to name the step where the loss stopped being finite; the checkpoint itself
/// is left as it was.
fn diverged(cfg: &TrainConfig, session: &mut Session, epoch: usize, loss: f64) -> Error {
    let path = cfg.out.join(CHECKPOINT);
    let replay = |session: &mut Session| -> Result<Option<(usize, u32, usize)>> {
        let (state, tensors) = checkpoint::load_run(&path)?;
        session.restore(&state.progress, &tensors, &path.display().to_string())?;
        for e in state.epochs_done + 1..=epoch {
            if let EpochEnd::Diverged { step, batch } = session.train_epoch(&mut |_, _| true, true)? {
                return Ok(Some((e, step, batch)));
            }
        }
        Ok(None)
    };
    let at = match replay(session) {
        Ok(Some((e, step, batch))) => {
            format!("in epoch {e} at step {step} (batch {batch} of {})", session.train_batches())
        }
        _ => format!("in epoch {epoch}"),
    };
    Error::Diverged(format!(
        "training diverged {at}: the loss became {loss}. The checkpoint in {}, from before the divergence, is \
         left as it was; try a smaller --lr",
        cfg.out.display()
    ))
}

/// The model of the run a checkpoint belongs to: `model.toml` beside it, which every run
/// writes; `None` for a checkpoint without one (the task's network is then assumed).
pub fn model_beside(checkpoint: &Path) -> Result<Option<Model>> {
    let file = checkpoint.with_file_name("model.toml");
    match file.exists() {
        true => crate::model::file::load(&file).map(Some),
        false => Ok(None),
    }
}

/// Test loss and metric of a checkpoint, without training; the network is the run's
/// (`model.toml` beside the checkpoint), else the task's in `variant`.
pub fn evaluate(
    task: Task,
    variant: Variant,
    model_path: &Path,
    source: &DataSource,
    batch: usize,
    (test_limit, image_size): (Option<usize>, Option<u32>),
    backend: BackendChoice,
) -> Result<Metrics> {
    let (data, _) = load_data(task, source, (Some(1), test_limit), image_size)?;
    let model = match model_beside(model_path)? {
        Some(m) => m,
        None => tasks::model_for(task, variant, data.sample, data.target),
    };
    let init = checkpoint::match_params(model_path, &checkpoint::load(model_path)?, &model.saved()?)?;
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
pub fn bench(choice: BackendChoice, json: Option<&Path>, opts: &crate::bench::Options) -> Result<()> {
    let report = crate::bench::run(choice, opts)?;
    write_json(json, &report)
}

/// Writes `value` as pretty JSON to `path`, if given, and says so.
pub fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        atomic_write(path, &serde_json::to_vec_pretty(value).expect("results serialise"))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checkpoints_follow_the_flag_or_the_clock_and_always_end_the_run() {
        let (soon, late) = (Duration::from_millis(50), CHECKPOINT_INTERVAL);
        let due = |every, epoch, since| checkpoint_due(every, (epoch, 250), since);
        assert!(!due(None, 3, soon) && due(None, 3, late) && due(None, 250, soon));
        assert!(due(Some(1), 3, soon) && !due(Some(5), 3, late) && due(Some(5), 10, soon) && due(Some(7), 250, soon));
    }
}
