//! Checkpoints and resuming: a run stopped by SIGKILL or Ctrl-C and resumed ends exactly where
//! an uninterrupted run ends; divergence names its step and leaves the checkpoint from before it.

mod common;

use common::{text, tmp};

use gpu_train::checkpoint::{self, load_run};
use gpu_train::report::History;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpu-train"))
}

/// A CNN run long enough to be stopped mid-epoch, with dropout so that the generator matters,
/// and a checkpoint after every epoch.
fn args(data: &Path, out: &Path, backend: &str) -> Vec<String> {
    let task: &[&str] = match backend {
        "cpu" => &["--task", "mnist-cnn", "--train-limit", "3000", "--epochs", "4"],
        _ => &["--task", "mnist-mlp", "--train-limit", "1000", "--epochs", "4"],
    };
    let rest = ["--test-limit", "200", "--dropout", "0.3", "--seed", "3", "--checkpoint-every", "1"];
    task.iter()
        .chain(&rest)
        .chain(&["--backend", backend])
        .map(|s| s.to_string())
        .chain(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()])
        .collect()
}

/// Parameter bits by key, and (loss, metric, test loss, test metric) per epoch.
type Finished = (Vec<(String, Vec<u32>)>, Vec<(f64, f64, f64, f64)>);

fn finished(out: &Path) -> Finished {
    let params = checkpoint::load(&out.join("model.safetensors")).unwrap();
    let bits = params.into_iter().map(|(k, t)| (k, t.data.iter().map(|v| v.to_bits()).collect())).collect();
    let h = History::read(out).unwrap();
    (bits, h.epochs.iter().map(|e| (e.loss, e.metric, e.test_loss, e.test_metric)).collect())
}

/// Waits until the run's checkpoint records at least one finished epoch.
fn wait_for_epoch(child: &mut Child, out: &Path) {
    let start = Instant::now();
    loop {
        if let Ok((state, _)) = load_run(&out.join("checkpoint.safetensors")) {
            if state.epochs_done >= 1 {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be stopped");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resume(out: &Path) -> Output {
    let r = bin().args(["--resume", out.to_str().unwrap()]).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("resuming"), "{}", text(&r));
    r
}

fn stopped_and_resumed_equals_uninterrupted(backend: &str, signal: &str) {
    let Some(data) = common::data_dir() else { return };
    let whole = tmp(&format!("whole-{backend}-{signal}"));
    let r = bin().args(args(&data, &whole, backend)).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));

    let cut = tmp(&format!("cut-{backend}-{signal}"));
    let mut child = bin()
        .args(args(&data, &cut, backend))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_epoch(&mut child, &cut);
    std::thread::sleep(Duration::from_millis(60));
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    if signal == "-INT" {
        let log = text(&o);
        assert_eq!(o.status.code(), Some(130), "{log}");
        assert!(log.contains("gpu-train --resume") && !log.contains("panicked"), "{log}");
    } else {
        assert!(!o.status.success());
    }
    resume(&cut);
    let (a, b) = (finished(&whole), finished(&cut));
    assert_eq!(a.1, b.1, "histories differ");
    assert!(a.0 == b.0, "final parameters differ");
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    stopped_and_resumed_equals_uninterrupted("cpu", "-KILL");
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_equals_an_uninterrupted_run() {
    stopped_and_resumed_equals_uninterrupted("cpu", "-INT");
}

#[test]
fn ctrl_c_and_resume_on_the_gpu_backend() {
    stopped_and_resumed_equals_uninterrupted("gpu", "-INT");
}

#[test]
fn divergence_names_the_step_and_keeps_the_last_good_checkpoint() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("diverge");
    let a = ["--task", "mnist-cnn", "--lr", "1e30", "--epochs", "3", "--train-limit", "500", "--test-limit", "100"];
    let r = bin()
        .args(a)
        .args(["--backend", "cpu", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let log = text(&r);
    assert!(!r.status.success() && !log.contains("panicked"), "{log}");
    assert!(
        log.contains("training diverged in epoch 1 at step 2 (batch 2 of 5)") && log.contains("try a smaller --lr"),
        "{log}"
    );
    let (state, _) = load_run(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(state.epochs_done, 0, "the checkpoint keeps the start");
    assert!(checkpoint::load(&out.join("model.safetensors"))
        .unwrap()
        .values()
        .all(|t| t.data.iter().all(|v| v.is_finite())));
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let empty = tmp("no-checkpoint");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--resume", "/nonexistent/run"], "/nonexistent/run/config.json".into()),
        (vec!["--resume", empty.to_str().unwrap()], "config.json".into()),
        (vec!["--resume", empty.to_str().unwrap(), "--epochs", "3"], "cannot be used with".into()),
    ];
    for (a, want) in cases {
        let r = bin().args(&a).output().unwrap();
        assert!(
            !r.status.success() && text(&r).contains(&want) && !text(&r).contains("panicked"),
            "{a:?}: {}",
            text(&r)
        );
    }
    // A config without a checkpoint, and a checkpoint that is not one.
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let r = bin().args(["--resume", empty.to_str().unwrap()]).output().unwrap();
    assert!(text(&r).contains("not a run's config.json"), "{}", text(&r));
}
