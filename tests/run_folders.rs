//! No run overwrites another: runs started together get folders of their own, `--out` refuses a
//! folder that holds anything (and one another process holds), and `--overwrite` leaves only the
//! new run's files. (A run killed with SIGKILL leaves its folder free for `--resume`:
//! `tests/resume.rs`.)

mod common;

use common::{text, tmp};
use gpu_train::folder::LOCK;
use gpu_train::report::History;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpu-train"))
}

/// A short CPU MLP run's flags: `epochs` epochs of 300 samples.
fn mlp(data: &Path, epochs: &str) -> Vec<String> {
    let flags = ["--task", "mnist-mlp", "--epochs", epochs, "--train-limit", "300", "--test-limit", "100"];
    let mut v: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    v.extend(["--backend".into(), "cpu".into(), "--data".into(), data.display().to_string()]);
    v
}

/// Every file under `dir` (the lock file aside) with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(contents(&p));
        } else if e.file_name() != LOCK {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn refused(args: &[String], dir: &Path, expect: &[&str]) -> Output {
    let before = contents(dir);
    let r = bin().args(args).output().unwrap();
    assert!(!r.status.success(), "{}", text(&r));
    for e in expect {
        assert!(text(&r).contains(e), "{:?} should contain {e:?}", text(&r));
    }
    assert!(!text(&r).contains("panicked"), "{}", text(&r));
    assert_eq!(contents(dir), before, "nothing in {} changed", dir.display());
    r
}

#[test]
fn runs_one_after_another_get_folders_of_their_own() {
    let Some(data) = common::data_dir() else { return };
    let cwd = tmp("together");
    std::fs::create_dir_all(&cwd).unwrap();
    let children: Vec<_> =
        ["1", "2", "3"].iter().map(|epochs| bin().args(mlp(&data, epochs)).current_dir(&cwd).output()).collect();
    // Each run takes well under a second, so their folder names usually collide; whether or not
    // they do, each run must end in its own folder.
    let mut folders = Vec::new();
    for (epochs, r) in (1..=3).zip(children) {
        let r = r.unwrap();
        assert!(r.status.success(), "{}", text(&r));
        let line =
            String::from_utf8_lossy(&r.stdout).lines().find_map(|l| l.strip_prefix("run folder: ").map(String::from));
        let folder = cwd.join(line.expect("the run names its folder"));
        let h = History::read(&folder).unwrap();
        assert_eq!(h.epochs.len(), epochs, "{} holds its own run's history", folder.display());
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["epochs"], epochs);
        assert_eq!(cfg["out"].as_str().map(|o| cwd.join(o)), Some(folder.clone()), "config.json names its folder");
        folders.push(folder);
    }
    folders.sort();
    folders.dedup();
    assert_eq!(folders.len(), 3, "{folders:?}");
}

#[test]
fn runs_started_at_once_in_parallel_never_share_a_folder() {
    let Some(data) = common::data_dir() else { return };
    let cwd = tmp("parallel");
    std::fs::create_dir_all(&cwd).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| bin().args(mlp(&data, "1")).current_dir(&cwd).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    let mut folders: Vec<String> = children
        .into_iter()
        .map(|c| {
            let r = c.wait_with_output().unwrap();
            assert!(r.status.success(), "{}", text(&r));
            String::from_utf8_lossy(&r.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("run folder: ").map(String::from))
                .unwrap()
        })
        .collect();
    folders.dedup();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for f in &folders {
        assert_eq!(History::read(&cwd.join(f)).unwrap().epochs.len(), 1);
        assert!(cwd.join(f).join("checkpoint.safetensors").is_file());
    }
}

#[test]
fn out_refuses_a_finished_run_other_files_and_a_held_folder() {
    let Some(data) = common::data_dir() else { return };
    let run = tmp("finished");
    let first = [mlp(&data, "1"), vec!["--out".into(), run.display().to_string()]].concat();
    let r = bin().args(&first).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));
    let again = [mlp(&data, "2"), vec!["--out".into(), run.display().to_string()]].concat();
    refused(&again, &run, &["holds a run", "--resume", "--overwrite"]);

    let other = tmp("other-files");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    std::fs::write(other.join("notes.txt"), "not a run").unwrap();
    let into_other = [mlp(&data, "1"), vec!["--out".into(), other.display().to_string()]].concat();
    refused(&into_other, &other, &["not empty", "notes.txt", "sub"]);
    // --overwrite replaces runs only, never a folder of other files.
    refused(&[into_other, vec!["--overwrite".into()]].concat(), &other, &["holds no run"]);

    // A folder another process holds: this test holds its lock, as a running gpu-train would.
    let mut lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(run.join(LOCK)).unwrap();
    lock.try_lock().unwrap();
    write!(lock, "{} (a test holding the folder)", std::process::id()).unwrap();
    let held = format!("is in use by process {}", std::process::id());
    let overwrite = [again.clone(), vec!["--overwrite".into()]].concat();
    refused(&overwrite, &run, &[&held]);
    refused(&["--resume".into(), run.display().to_string()], &run, &[&held]);
    let report = vec!["reproduce".into(), "--quick".into(), "--out".into(), run.display().to_string()];
    refused(&report, &run, &[&held]);
}

#[test]
fn overwrite_leaves_only_the_new_runs_files() {
    let Some(data) = common::data_dir() else { return };
    let dir = tmp("overwrite");
    std::fs::create_dir_all(&dir).unwrap();
    // An older Warwick run's files, as far as the new run can tell.
    for f in ["config.json", "checkpoint.safetensors", "dice.png", "worst_1.png", "history.json"] {
        std::fs::write(dir.join(f), "old").unwrap();
    }
    let args = [mlp(&data, "1"), vec!["--out".into(), dir.display().to_string(), "--overwrite".into()]].concat();
    let r = bin().args(&args).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let want = [
        LOCK,
        "acc.png",
        "checkpoint.safetensors",
        "config.json",
        "confusion.csv",
        "confusion.png",
        "history.json",
        "loss.png",
        "metrics.csv",
        "misclassified.png",
        "model.safetensors",
        "model.toml",
    ];
    assert_eq!(names, want);
    assert_eq!(History::read(&dir).unwrap().epochs.len(), 1);

    // A run that cannot start (no data) leaves the old run as it was.
    let before = contents(&dir);
    let mut bad = args.clone();
    let at = bad.iter().position(|a| a == "--data").unwrap();
    bad[at + 1] = dir.join("no-such-data").display().to_string();
    let r = bin().args(&bad).output().unwrap();
    assert!(!r.status.success() && text(&r).contains("data not found"), "{}", text(&r));
    assert_eq!(contents(&dir), before);
}

#[test]
fn a_run_that_fails_to_start_leaves_no_folder() {
    let cwd = tmp("no-start");
    std::fs::create_dir_all(&cwd).unwrap();
    let r = bin()
        .args(["--task", "mnist-mlp", "--data", "no-such-data", "--backend", "cpu"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(!r.status.success() && text(&r).contains("data not found"), "{}", text(&r));
    assert_eq!(std::fs::read_dir(cwd.join("runs")).map(|d| d.count()).unwrap_or(0), 0);
}
