//! The command line end to end: short real runs, checkpoints, and bad flags.

mod common;

use common::{text, tmp};

use gpu_train::checkpoint;
use gpu_train::report::History;
use std::path::Path;
use std::process::{Command, Output};

fn gpu_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).output().expect("the binary runs")
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> History {
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["--data", d, "--out", o];
    for (flag, default) in [("--train-limit", "2000"), ("--test-limit", "500")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend(extra);
    let r = gpu_train(&args);
    assert!(r.status.success(), "{}", text(&r));
    History::read(out).unwrap()
}

#[test]
fn short_run_writes_a_loadable_checkpoint_and_history() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let out = tmp("mlp");
    let h = train(&data, &out, &["--task", "mnist-mlp", "--epochs", "2"]);
    assert_eq!(h.epochs.len(), 2);
    assert!(h.epochs[1].loss < h.epochs[0].loss, "loss falls: {h:?}");
    assert!(h.epochs[1].test_metric > 0.5, "far above the 0.1 of chance: {h:?}");
    for f in ["config.json", "metrics.csv", "confusion.csv"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let ckpt = checkpoint::load(&out.join("model.safetensors")).unwrap();
    let keys: Vec<_> = ckpt.keys().cloned().collect();
    assert_eq!(keys, ["0.bias", "0.weight", "2.bias", "2.weight"]);
    assert_eq!(ckpt["0.weight"].shape, [100, 784]);

    // Reloaded, the checkpoint gives the last epoch's test figures.
    let (m, d) = (out.join("model.safetensors"), data.to_str().unwrap().to_string());
    let r = gpu_train(&[
        "evaluate",
        "--task",
        "mnist-mlp",
        "--model",
        m.to_str().unwrap(),
        "--data",
        &d,
        "--test-limit",
        "500",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let last = &h.epochs[1];
    let want = format!("test_loss {:.4} - test_acc {:.4}", last.test_loss, last.test_metric);
    assert!(text(&r).contains(&want), "{} should contain {want}", text(&r));
}

#[test]
fn init_replaces_the_seeded_weights() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let first = tmp("cnn-a");
    train(&data, &first, &["--task", "mnist-cnn", "--epochs", "1", "--train-limit", "300"]);
    let init = first.join("model.safetensors");
    // Same start and data order, different seeds: identical runs, as the seed drew only the
    // initial weights that --init replaces.
    let runs: Vec<History> = ["1", "2"]
        .iter()
        .map(|seed| {
            train(
                &data,
                &tmp(&format!("cnn-init{seed}")),
                &[
                    "--task",
                    "mnist-cnn",
                    "--epochs",
                    "1",
                    "--train-limit",
                    "300",
                    "--init",
                    init.to_str().unwrap(),
                    "--no-shuffle",
                    "--seed",
                    seed,
                ],
            )
        })
        .collect();
    assert_eq!(runs[0].epochs[0].loss, runs[1].epochs[0].loss);
    assert_eq!(runs[0].epochs[0].test_metric, runs[1].epochs[0].test_metric);
}

#[test]
fn same_seed_same_history() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let a = train(&data, &tmp("seed-a"), &["--task", "mnist-mlp", "--epochs", "2", "--dropout", "0.3"]);
    let b = train(&data, &tmp("seed-b"), &["--task", "mnist-mlp", "--epochs", "2", "--dropout", "0.3"]);
    let strip =
        |h: &History| h.epochs.iter().map(|e| (e.loss, e.metric, e.test_loss, e.test_metric)).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn summary_counts_parameters() {
    for (task, total) in [("mnist-mlp", "79,510"), ("mnist-cnn", "21,578"), ("warwick", "8,625")] {
        let r = gpu_train(&["summary", "--task", task]);
        assert!(r.status.success() && text(&r).contains(&format!("Total params: {total}")), "{task}: {}", text(&r));
    }
}

/// Each bad input: non-zero exit, no panic, and a message naming the flag or file and the fault.
#[test]
fn bad_flags_are_refused_before_work() {
    let cases: &[(&[&str], &str)] = &[
        (&["--task", "mnist-mlp", "--batch-size", "0"], "--batch-size must be at least 1"),
        (&["--task", "mnist-mlp", "--epochs", "0"], "--epochs must be at least 1"),
        (&["--task", "mnist-mlp", "--lr", "-0.1"], "--lr must be a positive number, got -0.1"),
        (&["--task", "mnist-mlp", "--lr", "NaN"], "--lr must be a positive number, got NaN"),
        (&["--task", "mnist-mlp", "--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
        (&["--task", "mnist-mlp", "--l2", "-1"], "--l2 must be a number ≥ 0"),
        (&["--task", "mnist-mlp", "--momentum", "1"], "--momentum must be in [0, 1)"),
        (
            &["--task", "mnist-mlp", "--optimizer", "adam", "--momentum", "0.5"],
            "--momentum applies to --optimizer sgd only",
        ),
        (&["--task", "mnist-mlp", "--train-limit", "0"], "--train-limit and --test-limit must be at least 1"),
        (&["--task", "imagenet"], "invalid value 'imagenet' for '--task"),
        (&["--task", "mnist-cnn", "--activation", "swish"], "invalid value 'swish' for '--activation"),
        (&["--epochs", "3"], "--task is required"),
        (&["--task", "warwick", "--image-size", "30"], "--image-size must be a positive multiple of 4"),
        (&["--task", "warwick", "--image-size", "0"], "--image-size must be a positive multiple of 4"),
        (
            &["--task", "mnist-cnn", "--image-size", "64"],
            "--image-size applies to --task warwick and warwick-unet only",
        ),
        (&["--task", "warwick-unet", "--image-size", "36"], "--image-size must be a positive multiple of 8"),
        (&["--task", "warwick", "--act-after-pool"], "--act-after-pool applies to --task mnist-cnn only"),
        (&["--task", "mnist-mlp", "--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
    ];
    let out = tmp("bad");
    let empty = tmp("empty-folder");
    std::fs::create_dir_all(&empty).unwrap();
    let (e, m) = (empty.to_str().unwrap(), "/nonexistent/model.safetensors");
    if let Some(data) = common::data_dir() {
        let a = ["--task", "mnist-mlp", "--train-limit", "50", "--batch-size", "64", "--data", data.to_str().unwrap()];
        let r = gpu_train(&[&a[..], &["--out", out.to_str().unwrap()]].concat());
        assert!(text(&r).contains("--batch-size 64 is larger than the training set (50 samples)"), "{}", text(&r));
        assert!(!r.status.success() && !out.exists());
    }
    let others: &[(&[&str], &str)] = &[
        (&["reproduce", "--jobs", "0", "--out", e], "--jobs must be at least 1"),
        (&["--task", "mnist-mlp", "--overwrite"], "required arguments were not provided:\n  --out"),
        (&["predict", "--task", "mnist-cnn", "--model", m, "--input", e, "--output", e], "holds no PNG or JPEG images"),
        (&["predict", "--task", "warwick", "--model", m, "--input", e, "--output", e], "holds no .png images"),
        (&["predict", "--task", "warwick", "--model", m, "--input", "/nonexistent", "--output", e], "/nonexistent"),
    ];
    for (args, want) in others {
        let r = gpu_train(args);
        assert!(
            !r.status.success() && text(&r).contains(want) && !text(&r).contains("panicked"),
            "{args:?}: {}",
            text(&r)
        );
    }
    for (args, want) in cases {
        let mut a = args.to_vec();
        a.extend(["--out", out.to_str().unwrap(), "--data", "/nonexistent"]);
        let r = gpu_train(&a);
        let t = text(&r);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
        assert!(!out.exists(), "{args:?} wrote a run folder");
    }
}

#[test]
fn missing_data_and_bad_init_are_explained() {
    let out = tmp("nodata");
    let r = gpu_train(&["--task", "mnist-mlp", "--data", "/nonexistent/dir", "--out", out.to_str().unwrap()]);
    let t = text(&r);
    assert!(
        !r.status.success() && t.contains("/nonexistent/dir/mnist/train-images-idx3-ubyte.gz") && t.contains("Source:"),
        "{t}"
    );
    let Some(data) = common::data_dir() else {
        return;
    };
    // A checkpoint of the CNN does not fit the MLP: every mismatch is listed.
    let cnn = tmp("cnn-ckpt");
    train(&data, &cnn, &["--task", "mnist-cnn", "--epochs", "1", "--train-limit", "200"]);
    let init_mlp = |init: &Path| {
        let args = ["--task", "mnist-mlp", "--data", data.to_str().unwrap(), "--init", init.to_str().unwrap()];
        gpu_train(&[&args[..], &["--out", out.to_str().unwrap()]].concat())
    };
    let r = init_mlp(&cnn.join("model.safetensors"));
    let t = text(&r);
    assert!(!r.status.success(), "{t}");
    for want in [
        "missing \"2.weight\"",
        "\"0.weight\" has shape [8, 1, 3, 3], the model needs [100, 784]",
        "unexpected \"9.weight\"",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
    let bad = tmp("bad-init");
    std::fs::write(&bad, b"garbage").unwrap();
    let r = init_mlp(&bad);
    assert!(text(&r).contains("not a valid safetensors file"), "{}", text(&r));
}

#[test]
fn short_warwick_run_raises_dice_with_flips() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("warwick");
    let args = ["--task", "warwick", "--epochs", "12", "--train-limit", "40", "--batch-size", "2"];
    let h = train(&data, &out, &[&args[..], &["--augment", "hflip", "--backend", "cpu"]].concat());
    let (first, last) = (&h.epochs[0], &h.epochs[11]);
    assert!(last.test_metric > first.test_metric + 0.05, "test Dice should rise: {h:?}");
    assert!(last.test_dice_whole.is_some());
    let keys: Vec<_> = checkpoint::load(&out.join("model.safetensors")).unwrap().into_keys().collect();
    assert_eq!(keys.len(), 12);
    assert!(keys.contains(&"8.weight".to_string()) && keys.contains(&"12.bias".to_string()), "{keys:?}");
    for f in ["dice.png", "loss.png", "worst_1.png", "worst_2.png", "worst_3.png"] {
        let img = image::open(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(img.width() > 300 && img.height() > 200, "{f}");
    }
    assert!(!out.join("worst_4.png").exists());

    // The checkpoint segments a folder of images of any size into maps of the same sizes.
    let (input, maps) = (tmp("predict-in"), tmp("predict-out"));
    std::fs::create_dir_all(&input).unwrap();
    let test = data.join("warwick/Test");
    std::fs::copy(test.join("image_01.png"), input.join("a.png")).unwrap();
    let small =
        image::open(test.join("image_02.png")).unwrap().resize_exact(100, 60, image::imageops::FilterType::Triangle);
    small.save(input.join("b.png")).unwrap();
    let m = out.join("model.safetensors");
    let r = gpu_train(&[
        "predict",
        "--task",
        "warwick",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        maps.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    for (name, dims) in [("a.png", (128, 128)), ("b.png", (100, 60))] {
        let map = image::open(maps.join(name)).unwrap().to_luma8();
        assert_eq!(map.dimensions(), dims, "{name}");
        assert!(map.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255), "{name}: a binary map");
    }
}

/// `--backend gpu` on lavapipe: it says it is software, and one epoch of the MLP (20 steps of
/// sigmoid, a smooth network) and a short CNN epoch give the CPU's history within 1e-4
/// relative. (Over long ReLU + max-pool runs the two drift apart from the first near-tie in a
/// pooling window that f32 rounding breaks differently; the per-kernel tests bound each step.)
#[test]
fn gpu_backend_history_matches_cpu() {
    let Some(data) = common::data_dir() else {
        return;
    };
    for (task, limit) in [("mnist-mlp", "2000"), ("mnist-cnn", "500")] {
        let run = |backend: &str| {
            let out = tmp(&format!("{task}-{backend}"));
            let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
            let args =
                ["--task", task, "--backend", backend, "--epochs", "1", "--train-limit", limit, "--test-limit", "300"];
            let r = gpu_train(&[&args[..], &["--data", d, "--out", o]].concat());
            assert!(r.status.success(), "{}", text(&r));
            (text(&r), History::read(&out).unwrap())
        };
        let ((log, gpu), (_, cpu)) = (run("gpu"), run("cpu"));
        assert!(log.contains("backend: gpu (") && log.contains("software"), "{log}");
        let (g, c) = (&gpu.epochs[0], &cpu.epochs[0]);
        for (name, g, c) in [
            ("loss", g.loss, c.loss),
            ("acc", g.metric, c.metric),
            ("test_loss", g.test_loss, c.test_loss),
            ("test_acc", g.test_metric, c.test_metric),
        ] {
            assert!((g - c).abs() <= 1e-4 * c.abs(), "{task} {name}: gpu {g} cpu {c}");
        }
    }
}

/// With no Vulkan driver, `--backend gpu` is a clear error and `auto` falls back to the CPU,
/// saying why.
#[test]
fn no_adapter_is_explained() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let no_driver = |backend: &str| {
        let out = tmp(&format!("no-adapter-{backend}"));
        let args = ["--task", "mnist-mlp", "--backend", backend, "--epochs", "1", "--train-limit", "100"];
        let r = Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(args)
            .args(["--test-limit", "100", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .output()
            .unwrap();
        (r.status.success(), text(&r), out)
    };
    let (ok, log, out) = no_driver("gpu");
    assert!(!ok && log.contains("--backend gpu: no GPU adapter") && !log.contains("panicked"), "{log}");
    assert!(!out.exists(), "no run folder after the error");
    let (ok, log, _) = no_driver("auto");
    assert!(ok && log.contains("backend: cpu") && log.contains("no GPU adapter"), "{log}");
}

/// The FCN on the GPU backend, at 64x64 (resized) so that lavapipe is quick: the test Dice
/// rises above its start (0.490 to 0.531 here; the CPU takes the same path).
#[test]
fn short_warwick_run_on_the_gpu_raises_dice() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("warwick-gpu");
    let args = ["--task", "warwick", "--epochs", "10", "--train-limit", "40", "--batch-size", "4", "--lr", "0.003"];
    let more = ["--image-size", "64", "--test-limit", "20", "--backend", "gpu", "--show-worst", "1"];
    let h = train(&data, &out, &[&args[..], &more].concat());
    let (first, last) = (&h.epochs[0], &h.epochs[9]);
    assert!(last.test_metric > first.test_metric + 0.02, "test Dice should rise: {h:?}");
    assert!(out.join("worst_1.png").is_file() && !out.join("worst_2.png").exists());
}

/// Mesa's `XDG_RUNTIME_DIR is invalid` line does not reach a user who has not silenced it.
#[test]
fn no_mesa_runtime_dir_line_without_nodevice_select() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("no-xdg-line");
    let r = Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(["--task", "mnist-mlp", "--epochs", "1", "--train-limit", "200", "--test-limit", "100", "--backend"])
        .args(["gpu", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env_remove("NODEVICE_SELECT")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert!(!text(&r).contains("XDG_RUNTIME_DIR"), "{}", text(&r));
}

/// `--backend reference` trains every task, and ends where the CPU backend ends (one short
/// epoch: the losses agree to 1e-4, a thousand times the f32 noise the parity tests allow).
#[test]
fn the_reference_backend_trains_every_task() {
    let Some(data) = common::data_dir() else { return };
    for task in ["mnist-mlp", "mnist-cnn", "warwick"] {
        let mut losses = Vec::new();
        for backend in ["reference", "cpu"] {
            let out = tmp(&format!("reference-{task}-{backend}"));
            let limits = ["--train-limit", "200", "--test-limit", "50", "--epochs", "1", "--no-shuffle"];
            let extra = if task == "warwick" { vec!["--image-size", "32", "--batch-size", "5"] } else { vec![] };
            let h = train(&data, &out, &[&["--task", task, "--backend", backend][..], &limits, &extra].concat());
            let last = h.epochs.last().unwrap();
            assert!(last.loss.is_finite() && last.test_loss.is_finite(), "{task} on {backend}: {h:?}");
            losses.push((last.loss, last.test_loss));
        }
        let ((a, ta), (b, tb)) = (losses[0], losses[1]);
        assert!((a - b).abs() <= 1e-4 * b.abs() && (ta - tb).abs() <= 1e-4 * tb.abs(), "{task}: {losses:?}");
    }
}
