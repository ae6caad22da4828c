//! `gpu-train reproduce --quick` end to end: every experiment in report.json, every file the
//! HTML references present, and the best MNIST model's confusion matrix consistent with its
//! accuracy.

mod common;

use common::{text, tmp};
use std::process::Command;

/// `reproduce --quick` on the CPU into `out` with `extra` flags.
fn quick(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["reproduce", "--quick", "--backend", "cpu", "--data", d, "--out", o];
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).args(extra).output().unwrap()
}

/// In two processes at a time (the CI's sequential run, `.ci/run`, covers `--jobs 1`).
#[test]
fn quick_reproduce_writes_a_complete_report() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("reproduce");
    let r = quick(&data, &out, &["--jobs", "2"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(out.join("logs/1.2.log").is_file(), "each process's output is kept");

    let listed = Command::new(env!("CARGO_BIN_EXE_gpu-train")).arg("experiments").output().unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 13, "{names:?}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["quick"], true);
    let experiments = report["experiments"].as_array().unwrap();
    let found: Vec<&str> = experiments.iter().map(|e| e["experiment"]["name"].as_str().unwrap()).collect();
    assert_eq!(found, names, "every experiment, in order");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("quick"), "the title says the report is quick");
    let sources: Vec<&str> = html.split("src=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    assert!(sources.len() >= 30, "{} images", sources.len());
    for src in &sources {
        let img = image::open(out.join(src)).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(img.width() > 100, "{src}");
    }
    for name in &names {
        assert!(html.contains(&format!("<td>{name}</td>")), "{name} in the table");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("| 1.") || l.starts_with("| 2.")).count(), 13);

    // The best MNIST model's confusion matrix: sums to the test set, diagonal = accuracy.
    let best = experiments
        .iter()
        .filter(|e| e["metric"] == "acc")
        .max_by(|a, b| a["final_test"].as_f64().unwrap().total_cmp(&b["final_test"].as_f64().unwrap()))
        .unwrap();
    let csv = std::fs::read_to_string(out.join(best["run_folder"].as_str().unwrap()).join("confusion.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    let total: f64 = rows.iter().flatten().sum();
    let diagonal: f64 = (0..10).map(|i| rows[i][i]).sum();
    assert_eq!(total, 200.0, "the quick test set");
    assert!((diagonal / total - best["final_test"].as_f64().unwrap()).abs() < 1e-9, "{csv}");
}

#[test]
fn a_report_is_never_overwritten_unasked_and_a_failed_start_leaves_no_folder() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("reproduce-twice");
    let r = quick(&data, &out, &["--only", "1.1"]);
    assert!(r.status.success(), "{}", text(&r));
    let before = std::fs::read(out.join("report.json")).unwrap();
    let r = quick(&data, &out, &["--only", "1.1"]);
    assert!(!r.status.success() && text(&r).contains("holds a report"), "{}", text(&r));
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), before);
    std::fs::write(out.join("runs/1.1/stale.txt"), "from the old report").unwrap();
    let r = quick(&data, &out, &["--only", "2.1", "--overwrite"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(!out.join("runs/1.1").exists() && out.join("runs/2.1/dice.png").is_file(), "only the new report");

    let none = tmp("reproduce-no-data");
    let r = quick(&none.join("no-such-data"), &none, &[]);
    assert!(!r.status.success() && text(&r).contains("data not found"), "{}", text(&r));
    assert!(!none.exists(), "no report folder is left behind");
}

/// An experiment that fails is named in the report and the exit status; the others finish.
#[test]
fn a_failed_experiment_is_named_and_the_others_finish() {
    let Some(data) = common::data_dir() else { return };
    let root = tmp("reproduce-half-data");
    std::fs::create_dir_all(root.join("warwick/Train")).unwrap();
    std::fs::create_dir_all(root.join("warwick/Test")).unwrap();
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    for f in std::fs::read_dir(data.join("mnist")).unwrap().flatten() {
        std::fs::copy(f.path(), root.join("mnist").join(f.file_name())).unwrap();
    }
    for jobs in ["1", "2"] {
        let out = root.join(format!("report-{jobs}"));
        let r = quick(&root, &out, &["--only", "1.1,2.1", "--jobs", jobs]);
        assert!(!r.status.success(), "{}", text(&r));
        assert!(text(&r).contains("1 of 2 experiments failed: 2.1"), "{}", text(&r));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["experiments"][0]["experiment"]["name"], "1.1");
        assert_eq!(report["failed"][0]["name"], "2.1");
        assert!(report["failed"][0]["error"].as_str().unwrap().contains("Train"), "{report}");
        assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("Failed experiments"));
    }
}
