//! The `gpu-train` command line: parsing only; the work is in the library.

use clap::{Args, Parser, Subcommand, ValueEnum};
use gpu_train::data::{manage, DataKind};
use gpu_train::folder::Claim;
use gpu_train::model::builtin::{Builtin, BUILTINS};
use gpu_train::model::file::ModelText;
use gpu_train::model::{summary, Act};
use gpu_train::optim::Optimizer;
use gpu_train::run::{self, BackendChoice, TrainConfig};
use gpu_train::tasks::{self, Task, Variant};
use gpu_train::{Error, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "gpu-train",
    version,
    about = "Train the report's MNIST and Warwick networks",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Never fetch a missing data set (as GPU_TRAIN_OFFLINE=1 does): say what is missing instead.
    #[arg(long, global = true)]
    no_download: bool,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the Keras-style layer table with parameter counts.
    Summary {
        #[command(flatten)]
        net: NetArgs,
        /// A model file instead of the task's built-in network.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// The built-in models: list them, or print one as a model file to copy and edit.
    Models {
        #[command(subcommand)]
        cmd: Option<ModelsCmd>,
    },
    /// Print the PyTorch module of a network (`class Model(torch.nn.Module)`), whose
    /// load_state_dict(strict=True) takes this network's checkpoints.
    ExportTorch {
        #[command(flatten)]
        net: NetArgs,
        /// A model file instead of the task's built-in network.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Test loss and metric of a checkpoint.
    Evaluate {
        #[command(flatten)]
        net: NetArgs,
        /// The checkpoint (model.safetensors of a run).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
        /// What --data holds instead of the task's built-in set (see the training flags).
        #[arg(long, value_enum)]
        dataset: Option<DataKind>,
        /// As the run was trained: --test-split and --seed pick its test images out of a folder
        /// of classes; --channels and --image-size read them.
        #[arg(long)]
        test_split: Option<f32>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        channels: Option<usize>,
        /// --dataset masks: the classes of pixels the masks hold, as in training.
        #[arg(long)]
        classes: Option<usize>,
        #[arg(long)]
        image_size: Option<u32>,
        /// Batches of the test pass: Dice is a mean over batches, so the training batch size
        /// gives the figures of the run's history [default: the task's training batch]
        #[arg(long)]
        batch_size: Option<usize>,
        #[arg(long)]
        test_limit: Option<usize>,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
    /// Segment a folder of PNG images with a Warwick checkpoint (one map PNG per image), or label
    /// a folder of PNG or JPEG images with a classifier's (a CSV: file, class, probability).
    Predict {
        #[arg(long, value_enum)]
        task: Task,
        /// The checkpoint (model.safetensors of a run).
        #[arg(long)]
        model: PathBuf,
        /// Folder of PNG images (any size; RGB, grey or RGBA).
        #[arg(long)]
        input: PathBuf,
        /// Warwick: folder for the maps (created; one `<name>.png` per input, 255 = gland). A
        /// classifier: the CSV file to write.
        #[arg(long)]
        output: PathBuf,
        /// The side the network sees [default: warwick 128, maps scaled back to each image's
        /// size; a classifier: its run's --image-size, else 28]
        #[arg(long)]
        image_size: Option<u32>,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
    /// Run the report's experiments in turn and write report.html, report.json and report.md.
    Reproduce {
        /// Folder for the report and every experiment's run folder.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Small subsets and two epochs: a smoke test, not the report's numbers.
        #[arg(long)]
        quick: bool,
        /// Only these experiments (comma-separated names, see `gpu-train experiments`).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Replace the report in --out (its files are removed just before the first experiment).
        #[arg(long)]
        overwrite: bool,
        /// Experiments run at once, each a process with an equal share of the cores.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// One experiment of `reproduce --jobs N`, run in a process of its own.
    #[command(hide = true)]
    ReproduceOne {
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        backend: BackendChoice,
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// List the report's experiments with their settings.
    Experiments,
    /// The data sets: fetch them, check them, or say where they would be read from.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Time matrix products, the report's layers, and each task's training step and epoch.
    Bench {
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Smaller products and 2,000-sample MNIST epochs (for software devices).
        #[arg(long)]
        quick: bool,
        /// Also time each op of every task's training step on its own.
        #[arg(long)]
        ops: bool,
        /// Also time each kernel launch of every task's training step on the device (GPU
        /// timestamp queries, where the adapter has them).
        #[arg(long)]
        profile: bool,
        /// Instead: each task's epoch beside the Keras and PyTorch reference trainers, in turn.
        #[arg(long)]
        compare: bool,
        /// The folder of the reference trainers (keras_ref.py, torch_ref.py).
        #[arg(long, default_value = "../shared/peers")]
        peers: PathBuf,
        /// The Python that has TensorFlow and PyTorch.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Rounds of the comparison (each runs every trainer once per task).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Print a built-in model's file.
    Show { name: String },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Fetch a set (or all) into the per-user cache or --dir, checking every file's SHA-256.
    Fetch {
        /// mnist, warwick or all.
        #[arg(default_value = "all")]
        set: String,
        /// A data root to fetch into (each set into DIR/<set>/) [default: the per-user cache]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check every file's SHA-256: a line per set (ok, missing, or which file is corrupt).
    Verify {
        /// A data root or a set's folder [default: the folders the data would be read from]
        dir: Option<PathBuf>,
    },
    /// Where each set would be read from, and why.
    Where {
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Hidden {
    Relu,
    Sigmoid,
    Tanh,
    LeakyRelu,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Augment {
    None,
    Hflip,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptName {
    Sgd,
    Adam,
}

/// What shapes the network.
#[derive(Args)]
struct NetArgs {
    #[arg(long, value_enum)]
    task: Option<Task>,
    /// Hidden activation [default: the task's: sigmoid for mnist-mlp, relu otherwise]
    #[arg(long, value_enum)]
    activation: Option<Hidden>,
    /// Dropout rate (0 = none).
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// L2 factor on every kernel (Keras l2(λ)).
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    /// CNN: activation after the pooling layer instead of before.
    #[arg(long)]
    act_after_pool: bool,
}

impl NetArgs {
    fn task(&self) -> Result<Task> {
        self.task.ok_or_else(|| {
            Error::Config("--task is required (mnist-mlp, mnist-cnn, warwick or warwick-unet); see --help".into())
        })
    }
    /// The network and a line that says where it comes from: the model file, else the task's
    /// built-in model in the variant the flags ask for.
    fn network(&self, file: Option<&PathBuf>) -> Result<(gpu_train::model::Model, String)> {
        match (file, self.task) {
            (Some(path), _) => {
                if self.activation.is_some() || self.dropout != 0.0 || self.l2 != 0.0 || self.act_after_pool {
                    return Err(Error::Config(VARIANT_WITH_FILE.into()));
                }
                Ok((gpu_train::model::file::load(path)?, format!("The model of {}.", path.display())))
            }
            (None, Some(task)) => {
                let m = tasks::model(task, self.variant(task), tasks::input_shape(task));
                Ok((m, format!("The network of gpu-train's {} task.", task.name())))
            }
            (None, None) => Err(Error::Config("give --task NAME or --model FILE; see --help".into())),
        }
    }
    fn variant(&self, task: Task) -> Variant {
        let d = tasks::defaults(task).variant;
        let activation = self.activation.map_or(d.activation, |a| match a {
            Hidden::Relu => Act::Relu,
            Hidden::Sigmoid => Act::Sigmoid,
            Hidden::Tanh => Act::Tanh,
            Hidden::LeakyRelu => Act::LeakyRelu,
        });
        Variant { activation, dropout: self.dropout, l2: self.l2, act_after_pool: self.act_after_pool }
    }
}

const VARIANT_WITH_FILE: &str =
    "--activation, --dropout, --l2 and --act-after-pool change a task's built-in network; with --model, edit the file instead";

#[derive(Args)]
struct TrainArgs {
    /// Task to train (required unless a subcommand is given).
    #[arg(long, value_enum)]
    task: Option<Task>,
    /// A model file to train instead of the task's built-in network; the task gives the data
    /// and the training defaults (`gpu-train models show NAME` prints one to start from).
    #[arg(long)]
    model: Option<PathBuf>,
    /// [default: 25 for mnist-mlp, 6 for mnist-cnn, 250 for warwick and warwick-unet]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 100 for MNIST, 5 for warwick]
    #[arg(long)]
    batch_size: Option<usize>,
    /// [default: 0.25 with sgd, 0.001 with adam]
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// [default: sgd for MNIST, adam for warwick]
    #[arg(long, value_enum)]
    optimizer: Option<OptName>,
    /// SGD momentum (Keras form).
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    #[arg(long, value_enum)]
    activation: Option<Hidden>,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    dropout: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    l2: f32,
    #[arg(long)]
    act_after_pool: bool,
    /// Seed of every random draw (initial weights, data order, dropout).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the ops run: auto (a hardware GPU, else the CPU), gpu (any adapter) or cpu [default: auto]
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// Data root or the task's own data folder [default: $GPU_TRAIN_DATA, else ./data, else the
    /// per-user cache, where a missing set is fetched]
    #[arg(long)]
    data: Option<PathBuf>,
    /// What --data holds instead of the task's built-in set: `idx`, a classification set laid
    /// out like MNIST (image size and classes from its files); `classes`, PNG or JPEG images in
    /// train/<class>/ and test/<class>/ folders (or <class>/ with --test-split)
    #[arg(long, value_enum)]
    dataset: Option<DataKind>,
    /// --dataset classes with only <class>/ folders: the fraction of each class tested, chosen
    /// with --seed
    #[arg(long)]
    test_split: Option<f32>,
    /// --dataset classes: 1 (grey) or 3 (RGB) channels per image [default: 1]
    #[arg(long)]
    channels: Option<usize>,
    /// --dataset masks: the classes of pixels, the masks' values being 0 to K-1 (2: a binary
    /// mask of any two values) [default: two values are a binary mask, more are class indices
    /// up to the largest]
    #[arg(long)]
    classes: Option<usize>,
    /// Run folder, which must be new or empty [default: runs/<task>-<date>-<time>, with -2, -3, …
    /// for runs started in the same second]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the run in --out: its files are removed just before the new run writes its first
    /// checkpoint (after its data loaded and its backend opened).
    #[arg(long, requires = "out")]
    overwrite: bool,
    /// Start from the weights of a checkpoint (safetensors with the model's keys).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Data augmentation: `hflip` appends a mirrored copy of every training image and map
    /// [default: hflip for warwick-unet, none otherwise]
    #[arg(long, value_enum)]
    augment: Option<Augment>,
    /// Keep the data order instead of shuffling every epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Train on the first N samples only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Test on the first N samples only.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Warwick: resize every image and label to NxN (images bilinear, labels nearest).
    #[arg(long)]
    image_size: Option<u32>,
    /// Warwick: pictures of the N test images with the lowest Dice.
    #[arg(long, default_value_t = 3)]
    show_worst: usize,
    /// Write the checkpoint (weights, optimiser state, progress, history) every N epochs and
    /// after the last [default: after each epoch that ends 10 s or more after the last checkpoint]
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue the run in this folder from its checkpoint, with its settings (only --data and
    /// --backend may be given with it).
    #[arg(long, conflicts_with_all = ["task", "model", "epochs", "batch_size", "optimizer", "lr", "momentum", "activation",
        "dropout", "l2", "act_after_pool", "seed", "out", "overwrite", "init", "augment", "no_shuffle", "train_limit",
        "test_limit", "image_size", "show_worst", "checkpoint_every", "dataset", "test_split", "channels", "classes"])]
    resume: Option<PathBuf>,
}

impl TrainArgs {
    fn config(self) -> Result<TrainConfig> {
        let task = self.task.ok_or_else(|| {
            Error::Config("--task is required (mnist-mlp, mnist-cnn, warwick or warwick-unet); see --help".into())
        })?;
        let d = tasks::defaults(task);
        let variant_given = self.activation.is_some() || self.dropout != 0.0 || self.l2 != 0.0 || self.act_after_pool;
        let model = match &self.model {
            Some(_) if variant_given => return Err(Error::Config(VARIANT_WITH_FILE.into())),
            Some(path) => Some(ModelText::read(path)?),
            None => None,
        };
        let net = NetArgs {
            task: Some(task),
            activation: self.activation,
            dropout: self.dropout,
            l2: self.l2,
            act_after_pool: self.act_after_pool,
        };
        let optimizer = match (self.optimizer, d.optimizer) {
            (None, Optimizer::Sgd { lr, .. }) | (Some(OptName::Sgd), Optimizer::Sgd { lr, .. }) => {
                Optimizer::Sgd { lr: self.lr.unwrap_or(lr), momentum: self.momentum }
            }
            (Some(OptName::Sgd), _) => Optimizer::Sgd { lr: self.lr.unwrap_or(0.01), momentum: self.momentum },
            (None, Optimizer::Adam { .. }) | (Some(OptName::Adam), _) => Optimizer::adam(self.lr.unwrap_or(1e-3)),
        };
        if self.momentum != 0.0 && matches!(optimizer, Optimizer::Adam { .. }) {
            return Err(Error::Config("--momentum applies to --optimizer sgd only".into()));
        }
        Ok(TrainConfig {
            task,
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch),
            optimizer,
            variant: net.variant(task),
            model,
            seed: self.seed,
            shuffle: !self.no_shuffle,
            hflip: self.augment.map_or(d.hflip, |a| a == Augment::Hflip),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            image_size: self.image_size,
            show_worst: self.show_worst,
            checkpoint_every: self.checkpoint_every,
            init: self.init,
            data: self.data,
            dataset: self.dataset,
            test_split: self.test_split,
            channels: self.channels,
            classes: self.classes,
            backend: self.backend.unwrap_or(BackendChoice::Auto),
            claim: match (&self.out, self.overwrite) {
                (None, _) => Claim::Unique,
                (Some(_), false) => Claim::New,
                (Some(_), true) => Claim::Overwrite,
            },
            out: self.out.unwrap_or_else(|| run::default_out(task)),
        })
    }
}

fn main() {
    // Mesa's device-selection layer prints a harmless `XDG_RUNTIME_DIR is invalid` line when
    // that variable is unset; its own switch silences it (set before any thread or instance).
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    // The main thread is one of the pool's workers, so that the CPU backend's parallel loops
    // start without handing work to another thread and sleeping until it is done.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    let cli = Cli::parse();
    if cli.no_download {
        std::env::set_var("GPU_TRAIN_OFFLINE", "1");
    }
    let result = match cli.cmd {
        Some(Cmd::Summary { net, model }) => {
            net.network(model.as_ref()).and_then(|(m, _)| summary(&m)).map(|s| print!("{s}"))
        }
        Some(Cmd::Models { cmd: None }) => {
            for b in BUILTINS {
                println!("{:<14}{}", b.name, b.about());
            }
            println!("\n`gpu-train models show NAME` prints one as a file to copy, edit and train with --model FILE.");
            Ok(())
        }
        Some(Cmd::Models { cmd: Some(ModelsCmd::Show { name }) }) => Builtin::get(&name).map(|b| print!("{}", b.text)),
        Some(Cmd::ExportTorch { net, model }) => net
            .network(model.as_ref())
            .and_then(|(m, title)| gpu_train::model::torch::export(&m, &title))
            .map(|s| print!("{s}")),
        Some(Cmd::Evaluate {
            net,
            model,
            data,
            dataset,
            test_split,
            seed,
            channels,
            classes,
            image_size,
            batch_size,
            test_limit,
            backend,
        }) => {
            let source = run::DataSource { data, kind: dataset, test_split, channels, classes, seed };
            let limits = (test_limit, image_size);
            net.task().and_then(|task| {
                let batch = batch_size.unwrap_or(tasks::defaults(task).batch);
                run::evaluate(task, net.variant(task), &model, &source, batch, limits, backend).map(|m| {
                    let iou = m.mean_iou().map(|v| format!(" - test_mean_iou {v:.4}")).unwrap_or_default();
                    println!("test_loss {:.4} - test_{} {:.4}{iou}", m.loss, task.metric(), m.metric);
                })
            })
        }
        Some(Cmd::Predict { task, model, input, output, image_size, backend }) if task.segments() => {
            gpu_train::predict::segment(task, &model, &input, &output, image_size, backend)
                .map(|n| println!("wrote {n} maps to {}", output.display()))
        }
        Some(Cmd::Predict { task, model, input, output, image_size, backend }) => {
            gpu_train::predict::classify(task, &model, &input, &output, image_size, backend)
                .map(|n| println!("wrote {n} rows to {}", output.display()))
        }
        Some(Cmd::Reproduce { out, backend, quick, only, data, overwrite, jobs }) => {
            on_ctrl_c();
            let o = gpu_train::reproduce::Options { out, backend, quick, only, data, overwrite, jobs };
            gpu_train::reproduce::reproduce(&o).map(|_| ())
        }
        Some(Cmd::ReproduceOne { name, out, backend, quick, data }) => {
            on_ctrl_c();
            let o = gpu_train::reproduce::Options { out, backend, quick, only: None, data, overwrite: false, jobs: 1 };
            gpu_train::reproduce::reproduce_one(&o, &name)
        }
        Some(Cmd::Data { cmd: DataCmd::Fetch { set, dir } }) => {
            manage::sets(&set).and_then(|sets| manage::fetch_into(&sets, dir.as_deref()))
        }
        Some(Cmd::Data { cmd: DataCmd::Verify { dir } }) => manage::verify(dir.as_deref()),
        Some(Cmd::Data { cmd: DataCmd::Where { data } }) => {
            manage::where_is(data.as_deref()).iter().for_each(|l| println!("{l}"));
            Ok(())
        }
        Some(Cmd::Experiments) => {
            print!("{}", gpu_train::reproduce::describe_all());
            Ok(())
        }
        Some(Cmd::Bench { backend, json, compare: true, peers, python, rounds, .. }) => {
            let o = gpu_train::compare::Options { peers, python, rounds: rounds.max(1), backend };
            gpu_train::compare::compare(&o).and_then(|rows| run::write_json(json.as_deref(), &rows))
        }
        Some(Cmd::Bench { backend, json, quick, ops, profile, .. }) => {
            run::bench(backend, json.as_deref(), &gpu_train::bench::Options { quick, ops, profile })
        }
        None => {
            on_ctrl_c();
            let r = match cli.train.resume.clone() {
                Some(dir) => run::resume(&dir, cli.train.data, cli.train.backend),
                None => cli.train.config().and_then(|cfg| run::train(&cfg)),
            };
            r.map(|r| println!("run folder: {}", r.out.display()))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(if matches!(e, Error::Interrupted(_)) { 130 } else { 1 });
    }
}

/// The first Ctrl-C asks the run to stop after the step in progress (it then writes a checkpoint
/// and says how to resume); a second one quits at once.
fn on_ctrl_c() {
    let handler = || {
        if run::INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step to write a checkpoint (Ctrl-C again quits at once)");
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("note: Ctrl-C will not write a checkpoint: {e}");
    }
}
