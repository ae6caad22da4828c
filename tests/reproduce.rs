//! `gpu-train reproduce --quick` end to end: every experiment in report.json, every file the
//! HTML references present, and the best MNIST model's confusion matrix consistent with its
//! accuracy.

mod common;

use common::{text, tmp};
use std::process::Command;

#[test]
fn quick_reproduce_writes_a_complete_report() {
    let Some(data) = common::data_dir() else { return };
    let out = tmp("reproduce");
    let r = Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args([
            "reproduce",
            "--quick",
            "--backend",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));

    let listed = Command::new(env!("CARGO_BIN_EXE_gpu-train")).arg("experiments").output().unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 12, "{names:?}");
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
    assert_eq!(md.lines().filter(|l| l.starts_with("| 1.") || l.starts_with("| 2.")).count(), 12);

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
