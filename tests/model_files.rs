//! Model files: the built-in ones, writing and reading back, the PyTorch twin's keys, and a
//! table of bad files, each of which must name the file, the line and the fault.

mod common;

use common::{text, tmp};
use gpu_train::model::builtin::BUILTINS;
use gpu_train::model::file::{parse, to_toml};
use gpu_train::model::torch::export;
use gpu_train::model::{Act, Model};
use gpu_train::tasks::{self, Task, Variant};
use std::path::Path;
use std::process::{Command, Output};

fn gpu_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).output().expect("the binary runs")
}

/// Every variant of every task's network, and a graph.
fn networks() -> Vec<Model> {
    let mut out = Vec::new();
    for task in [Task::MnistMlp, Task::MnistCnn, Task::Warwick, Task::WarwickUnet] {
        for activation in [Act::Relu, Act::LeakyRelu] {
            for (dropout, l2, act_after_pool) in [(0.0, 0.0, false), (0.25, 1e-4, true)] {
                let v = Variant { activation, dropout, l2, act_after_pool };
                out.push(tasks::model(task, v, tasks::input_shape(task)));
            }
        }
    }
    out.push(common::small_unet());
    out.push(common::pool_upsample_add());
    out.push(common::strided());
    out
}

#[test]
fn built_in_models_have_the_reports_parameter_counts() {
    let counts: Vec<(&str, usize)> = BUILTINS.iter().map(|b| (b.name, b.model().param_count().unwrap())).collect();
    // Keras' summaries of the report's networks.
    assert_eq!(
        counts,
        [("mnist-mlp", 79_510), ("mnist-cnn", 21_578), ("warwick-fcn", 8_625), ("warwick-unet", 483_441)]
    );
}

#[test]
fn a_written_model_reads_back_the_same() {
    for mut m in networks() {
        assert_eq!(parse(&to_toml(&m, "a title\nover two lines"), Path::new("m.toml")).unwrap(), m);
        // With names, which become the checkpoint keys.
        for (i, node) in m.layers.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
            node.name = Some(format!("layer_{i}"));
        }
        let back = parse(&to_toml(&m, ""), Path::new("m.toml")).unwrap();
        assert_eq!(back, m);
        let keys: std::collections::BTreeSet<String> = back.params().unwrap().into_iter().map(|p| p.key).collect();
        assert!(keys.contains("layer_0.weight") && keys.len() == back.params().unwrap().len(), "{keys:?}");
    }
}

/// The twin's modules are registered under exactly the checkpoint's key prefixes, so
/// `load_state_dict(strict=True)` finds every tensor and nothing else.
#[test]
fn the_pytorch_twin_has_the_checkpoint_keys() {
    for m in networks() {
        let py = export(&m, "t").unwrap();
        let modules: Vec<String> = py
            .lines()
            .filter_map(|l| l.trim().strip_prefix("self.add_module(\""))
            .map(|l| l.split('"').next().unwrap().to_string())
            .collect();
        let mut keys: Vec<String> = m.params().unwrap().iter().map(|p| p.key.clone()).collect();
        keys.dedup_by(|a, b| a.split('.').next() == b.split('.').next());
        let prefixes: Vec<String> = keys.iter().map(|k| k.split('.').next().unwrap().to_string()).collect();
        assert_eq!(modules, prefixes);
        let last = py.trim_end().lines().last().unwrap().trim().to_string();
        assert!(py.contains("class Model(nn.Module):") && last.starts_with("return "), "{py}");
    }
}

/// A file, the line its error must give (0: none), and words the error must hold.
const BAD: &[(&str, &str, usize, &str)] = &[
    ("empty", "", 0, "empty"),
    ("blank", "  \n\n", 0, "empty"),
    ("not TOML", "{\"input\": [784]}", 1, "invalid"),
    ("truncated", "input = [784]\n[[layers]]\nkind = \"dense\"\nout_features = ", 4, "string values must be quoted"),
    ("no input", "[[layers]]\nkind = \"relu\"\n", 1, "missing field `input`"),
    ("bad input shape", "input = [3, 0, 4]\n[[layers]]\nkind = \"relu\"\n", 1, "input must be"),
    ("no layers", "input = [784]\nlayers = []\n", 2, "no layers"),
    ("unknown top-level field", "input = [784]\nlayer = 3\n[[layers]]\nkind = \"relu\"\n", 2, "unknown field `layer`"),
    ("no kind", "input = [784]\n\n[[layers]]\nout_features = 10\n", 3, "no kind"),
    ("unknown kind", "input = [784]\n[[layers]]\nkind = \"dens\"\n", 2, "unknown kind \"dens\""),
    (
        "unknown field",
        "input = [784]\n[[layers]]\nkind = \"dense\"\nout_feature = 10\n",
        4,
        "dense (layer 0): unknown field `out_feature`",
    ),
    ("missing field", "input = [784]\n[[layers]]\nkind = \"dense\"\n", 2, "missing field `out_features`"),
    ("wrong type", "input = [784]\n[[layers]]\nkind = \"dense\"\nout_features = \"ten\"\n", 2, "invalid type"),
    (
        "even kernel with same padding",
        "input = [1, 8, 8]\n\n\n[[layers]]\nkind = \"conv2d\"\nname = \"down2\"\nout_channels = 4\nkernel_size = 4\npadding = \"same\"\n",
        4,
        "conv2d \"down2\": kernel_size 4 with padding \"same\" is not supported",
    ),
    (
        "same padding at stride 2",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nout_channels = 4\nkernel_size = 3\npadding = \"same\"\nstride = 2\n",
        2,
        "conv2d (layer 0): padding \"same\" with stride 2 is not supported",
    ),
    (
        "stride 3",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nout_channels = 4\nkernel_size = 3\nstride = 3\n",
        2,
        "stride 3 is not supported: convolutions take stride 1 or 2",
    ),
    (
        "padding as wide as the kernel",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nout_channels = 4\nkernel_size = 3\npadding = 3\n",
        2,
        "padding 3 with kernel_size 3 is not supported: at most 2",
    ),
    (
        "a kernel wider than its padded input",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"max_pool2d\"\nkernel_size = 2\n[[layers]]\nname = \"c\"\nkind = \"conv2d\"\n\
         out_channels = 4\nkernel_size = 5\npadding = \"valid\"\n",
        5,
        "conv2d \"c\": kernel_size 5 does not fit the 4x4 padded input (None, 1, 4, 4)",
    ),
    (
        "an unknown padding",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nout_channels = 4\nkernel_size = 3\npadding = \"full\"\n",
        2,
        "padding \"full\" is not one of",
    ),
    ("pooling window", "input = [1, 8, 8]\n[[layers]]\nkind = \"max_pool2d\"\nkernel_size = 3\n", 2, "kernel_size 3"),
    ("dropout rate", "input = [8]\n[[layers]]\nkind = \"dropout\"\np = 1.0\n", 2, "p must be in [0, 1)"),
    ("negative l2", "input = [8]\n[[layers]]\nkind = \"dense\"\nout_features = 2\nl2 = -1.0\n", 2, "l2 must be"),
    (
        "shapes that do not fit",
        "input = [1, 8, 8]\n[[layers]]\nkind = \"relu\"\n[[layers]]\nkind = \"dense\"\nout_features = 2\n",
        4,
        "dense (layer 1): Dense takes a flat input, got (None, 1, 8, 8)",
    ),
    (
        "unknown input",
        "input = [8]\n[[layers]]\nname = \"down1\"\nkind = \"relu\"\n[[layers]]\nkind = \"relu\"\ninputs = [\"dwon1\"]\n",
        5,
        "unknown input \"dwon1\"",
    ),
    (
        "a cycle",
        "input = [8]\n[[layers]]\nkind = \"relu\"\n[[layers]]\nname = \"b\"\nkind = \"relu\"\ninputs = [\"b\"]\n",
        4,
        "cannot take its own output",
    ),
    (
        "an output nobody reads",
        "input = [8]\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n[[layers]]\nkind = \"relu\"\n[[layers]]\nkind = \"relu\"\ninputs = [\"a\"]\n",
        5,
        "the output of layer 1 (\"1\") is not used",
    ),
    (
        "shapes that differ at a concat",
        "input = [3, 8, 8]\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n[[layers]]\nkind = \"max_pool2d\"\nkernel_size = 2\n\
         [[layers]]\nkind = \"concat\"\ninputs = [\"a\", \"1\"]\n",
        8,
        "concat (layer 2): the inputs must be of one height and width to join along the channels, got (None, 3, 8, 8) and (None, 3, 4, 4)",
    ),
    (
        "a concat of one",
        "input = [3, 8, 8]\n[[layers]]\nkind = \"relu\"\n[[layers]]\nkind = \"concat\"\n",
        4,
        "concat takes two inputs, got 1",
    ),
    (
        "two inputs into a one-input layer",
        "input = [3, 8, 8]\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n[[layers]]\nkind = \"relu\"\ninputs = [\"a\", \"input\"]\n",
        5,
        "relu (layer 1): activation takes one input, got 2",
    ),
    ("no inputs", "input = [8]\n[[layers]]\nkind = \"relu\"\ninputs = []\n", 2, "inputs is empty"),
    (
        "a batch norm of other channels",
        "input = [3, 8, 8]\n[[layers]]\nkind = \"batch_norm2d\"\nname = \"bn\"\nnum_features = 4\n",
        2,
        "batch_norm2d \"bn\": num_features 4, but its input has 3 channels: (None, 3, 8, 8)",
    ),
    (
        "a batch norm's momentum",
        "input = [3, 8, 8]\n[[layers]]\nkind = \"batch_norm2d\"\nmomentum = 0.0\n",
        2,
        "momentum must be in (0, 1], got 0",
    ),
    (
        "an add of two shapes",
        "input = [3, 8, 8]\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n[[layers]]\nkind = \"max_pool2d\"\nkernel_size = 2\n\
         [[layers]]\nkind = \"add\"\ninputs = [\"a\", \"1\"]\n",
        8,
        "add (layer 2): the inputs must be of one shape to add, got (None, 3, 8, 8) and (None, 3, 4, 4)",
    ),
    (
        "a 3x upsampling",
        "input = [3, 8, 8]\n[[layers]]\nkind = \"upsample2d\"\nscale_factor = 3\n",
        2,
        "scale_factor 3 with mode \"nearest\" is not supported",
    ),
    ("a batch norm's eps", "input = [3, 8, 8]\n[[layers]]\nkind = \"batch_norm2d\"\neps = -1.0\n", 2, "eps must be"),
    (
        "two layers of one name",
        "input = [8]\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n[[layers]]\nname = \"a\"\nkind = \"relu\"\n",
        5,
        "already named \"a\"",
    ),
    ("a name that is no Python name", "input = [8]\n[[layers]]\nname = \"1st\"\nkind = \"relu\"\n", 2, "a Python name"),
];

#[test]
fn bad_model_files_say_the_file_the_line_and_the_fault() {
    let dir = tmp("bad-models");
    std::fs::create_dir_all(&dir).unwrap();
    for (what, body, line, words) in BAD {
        let path = dir.join("net.toml");
        std::fs::write(&path, body).unwrap();
        let err = gpu_train::model::file::load(&path).map(|_| ()).expect_err(what).to_string();
        let at = match line {
            0 => format!("{}: ", path.display()),
            n => format!("{}:{n}: ", path.display()),
        };
        assert!(err.starts_with(&at), "{what}: {err:?} should start with {at:?}");
        assert!(err.contains(words), "{what}: {err:?} should say {words:?}");
    }
    std::fs::write(dir.join("latin1.toml"), b"input = [8] # caf\xe9\n").unwrap();
    let err = gpu_train::model::file::load(&dir.join("latin1.toml")).unwrap_err().to_string();
    assert!(err.contains("latin1.toml: not UTF-8"), "{err}");
    let err = gpu_train::model::file::load(&dir.join("absent.toml")).unwrap_err().to_string();
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn the_command_line_lists_shows_summarises_and_exports_models() {
    let r = gpu_train(&["models"]);
    assert!(r.status.success(), "{}", text(&r));
    for b in BUILTINS {
        assert!(text(&r).contains(b.name), "{}", text(&r));
        let shown = gpu_train(&["models", "show", b.name]);
        assert_eq!(String::from_utf8_lossy(&shown.stdout), b.text);
    }
    let r = gpu_train(&["models", "show", "resnet"]);
    assert!(!r.status.success() && text(&r).contains("no built-in model \"resnet\""), "{}", text(&r));

    // A shown model, edited and summarised: the table and the twin follow the file.
    let dir = tmp("model-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wide.toml");
    let edited = BUILTINS[0].text.replace("out_features = 100", "name = \"hidden\"\nout_features = 64");
    std::fs::write(&file, edited).unwrap();
    let f = file.to_str().unwrap();
    let r = gpu_train(&["summary", "--model", f]);
    assert!(text(&r).contains("hidden (Dense)") && text(&r).contains("Total params: 50,890"), "{}", text(&r));
    let r = gpu_train(&["export-torch", "--model", f]);
    assert!(text(&r).contains("self.add_module(\"hidden\", nn.Linear(784, 64))"), "{}", text(&r));
    let r = gpu_train(&["summary", "--model", f, "--dropout", "0.5"]);
    assert!(!r.status.success() && text(&r).contains("edit the file instead"), "{}", text(&r));
    let r = gpu_train(&["summary"]);
    assert!(!r.status.success() && text(&r).contains("--task NAME or --model FILE"), "{}", text(&r));
}

/// A model file trains with a task's data and defaults; the run keeps the model, and evaluate
/// reads it from beside the checkpoint.
#[test]
fn a_model_file_trains_and_its_run_evaluates() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let dir = tmp("model-run");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("small.toml");
    let small = BUILTINS[0].text.replace("out_features = 100", "name = \"hidden\"\nout_features = 32");
    std::fs::write(&file, small).unwrap();
    let (d, out) = (data.to_str().unwrap(), dir.join("run"));
    let o = out.to_str().unwrap();
    let args = ["--task", "mnist-mlp", "--model", file.to_str().unwrap(), "--data", d, "--out", o, "--epochs", "1"];
    let r = gpu_train(&[&args[..], &["--train-limit", "2000", "--test-limit", "500", "--backend", "cpu"]].concat());
    assert!(r.status.success(), "{}", text(&r));
    let saved = gpu_train::checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(saved["hidden.weight"].shape, [32, 784]);
    let ck = out.join("model.safetensors");
    let r = gpu_train(&[
        "evaluate",
        "--task",
        "mnist-mlp",
        "--model",
        ck.to_str().unwrap(),
        "--data",
        d,
        "--test-limit",
        "500",
    ]);
    assert!(r.status.success() && text(&r).contains("test_acc"), "{}", text(&r));
    let r = gpu_train(&["--task", "mnist-mlp", "--model", file.to_str().unwrap(), "--l2", "0.01"]);
    assert!(!r.status.success() && text(&r).contains("edit the file instead"), "{}", text(&r));
}

/// A graph model's run predicts with the model it trained (`model.toml` beside the checkpoint),
/// whatever its layers are named.
#[test]
fn a_graph_run_predicts_with_its_model() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let dir = tmp("graph-predict");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut model = common::pool_upsample_add();
    model.input = gpu_train::model::Shape::new(3, 128, 128);
    // Named so that the output layer's keys do not sort last.
    model.layers[6].name = Some("a_head".into());
    let file = dir.join("residual.toml");
    std::fs::write(&file, to_toml(&model, "a residual path")).unwrap();
    for name in ["image_01.png", "image_02.png"] {
        std::fs::copy(data.join("warwick/Test").join(name), dir.join("images").join(name)).unwrap();
    }
    let (d, run) = (data.to_str().unwrap(), dir.join("run"));
    let train = ["--task", "warwick", "--model", file.to_str().unwrap(), "--data", d, "--out", run.to_str().unwrap()];
    let r = gpu_train(
        &[&train[..], &["--epochs", "1", "--train-limit", "10", "--test-limit", "5", "--backend", "cpu"]].concat(),
    );
    assert!(r.status.success(), "{}", text(&r));
    let (ck, images, maps) = (run.join("model.safetensors"), dir.join("images"), dir.join("maps"));
    let args = ["predict", "--task", "warwick", "--model", ck.to_str().unwrap(), "--input", images.to_str().unwrap()];
    let r = gpu_train(&[&args[..], &["--output", maps.to_str().unwrap(), "--backend", "cpu"]].concat());
    assert!(r.status.success() && text(&r).contains("wrote 2 maps"), "{}", text(&r));
    // A model whose maps come out smaller than the images (a stride-2 convolution, nothing to
    // bring them back up) is refused before training, with both sizes.
    let shrinking = "input = [3, 128, 128]\n[[layers]]\nkind = \"conv2d\"\nout_channels = 1\nkernel_size = 3\n\
                     padding = 1\nstride = 2\n[[layers]]\nkind = \"sigmoid\"\n";
    std::fs::write(&file, shrinking).unwrap();
    let r =
        gpu_train(&[&train[..], &["--epochs", "1", "--train-limit", "10", "--backend", "cpu", "--overwrite"]].concat());
    let want = "the model puts out (None, 1, 64, 64) but the masks are 128x128";
    assert!(!r.status.success() && text(&r).contains(want), "{}", text(&r));
}
