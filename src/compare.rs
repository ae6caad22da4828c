//! `gpu-train bench --compare`: each task's epoch time on gpu-train beside the Keras and PyTorch
//! reference trainers (a folder of peer scripts, by default ../shared/peers), run in turn on the
//! same machine, round after round, on synthetic data of the real sizes. The project does not
//! depend on Python: a missing interpreter or framework only drops that column. When the CPU
//! backend runs below this CPU's best instruction set (`GPU_TRAIN_CPU`), the peers' math
//! libraries are held to the same one, so that the figures are those of a machine that has
//! nothing better.

use crate::backend::choice::{make, open, Opened};
use crate::backend::cpu::level::{best, level, Level};
use crate::bench::synthetic;
use crate::error::{Error, Result};
use crate::run::{make_backend, BackendChoice};
use crate::tasks::{self, Task};
use crate::train::{Session, SessionOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub struct Options {
    /// The folder holding keras_ref.py and torch_ref.py.
    pub peers: PathBuf,
    /// The Python with TensorFlow and PyTorch installed.
    pub python: PathBuf,
    pub rounds: usize,
    pub backend: BackendChoice,
}

/// One task's epoch times in seconds (median of the steady epochs of each run), per round.
#[derive(Debug, Default, serde::Serialize)]
pub struct Row {
    pub task: String,
    pub epochs: usize,
    pub gpu_train: Vec<f64>,
    pub keras: Vec<f64>,
    /// PyTorch with 1 and with 2 threads; the faster counts.
    pub torch_1: Vec<f64>,
    pub torch_2: Vec<f64>,
    /// gpu-train's median over the faster peer's median (below 1: gpu-train is faster).
    pub ratio: Option<f64>,
}

/// The middle value, or the mean of the two middle ones.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        len if len % 2 == 1 => Some(v[mid]),
        _ => Some((v[mid - 1] + v[mid]) / 2.0),
    }
}

/// Epochs per run: the peers' own choice for these timings (3 for MNIST, 5 for Warwick).
fn epochs(task: Task) -> usize {
    if task.segments() {
        5
    } else {
        3
    }
}

/// gpu-train: `epochs` epochs (training and test pass) on synthetic data of the real sizes; the
/// median of all but the first.
fn ours(task: Task, backend: BackendChoice) -> Result<f64> {
    let (train, test) = if task.segments() { (85, 80) } else { (60_000, 10_000) };
    let data = synthetic(task, tasks::input_shape(task), train, test, 1);
    let d = tasks::defaults(task);
    let model = tasks::model(task, d.variant, data.sample);
    let opts =
        SessionOptions { batch: d.batch, optimizer: d.optimizer, seed: 1, shuffle: true, mirrored: false, init: None };
    let mut s = Session::new(&model, &data, opts, |descs| make_backend(backend, descs).map(|(be, _)| be))?;
    let mut times = Vec::new();
    for _ in 0..epochs(task) {
        let start = Instant::now();
        s.run_epoch()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&times[1..]).expect("at least two epochs"))
}

/// The settings that hold the peers to the instruction set `ours` when this CPU's best is
/// `best`: oneDNN (PyTorch's and TensorFlow's convolutions), ATen's own vector kernels and MKL
/// (PyTorch's matrix products). None when `ours` is the best, or has no such settings.
pub fn isa_caps(ours: Level, best: Level) -> Vec<(&'static str, &'static str)> {
    if ours == best {
        return Vec::new();
    }
    match ours {
        Level::Avx2 => {
            vec![("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2")]
        }
        Level::Scalar if cfg!(target_arch = "x86_64") => vec![
            ("ONEDNN_MAX_CPU_ISA", "SSE41"),
            ("ATEN_CPU_CAPABILITY", "default"),
            ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
        ],
        _ => Vec::new(),
    }
}

/// A peer script's steady epoch median, or `None` (with a note) when it cannot run; `caps` are
/// set in its environment.
fn peer(o: &Options, script: &str, task: Task, threads: Option<u32>, caps: &[(String, String)]) -> Option<f64> {
    let out = std::env::temp_dir().join(format!("gpu-train-peer-{}.json", std::process::id()));
    let mut cmd = Command::new(&o.python);
    cmd.envs(caps.iter().map(|(k, v)| (k, v)));
    cmd.arg(o.peers.join(script)).args(["--task", task.name(), "--synthetic", "--json-out"]).arg(&out);
    cmd.args(["--epochs", &epochs(task).to_string()]);
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let run = cmd.output();
    let parsed = std::fs::read(&out).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let _ = std::fs::remove_file(&out);
    match (run, parsed.and_then(|v| v["epoch_time_median_s"].as_f64())) {
        (Ok(r), Some(s)) if r.status.success() => Some(s),
        (Ok(r), _) => {
            let err = String::from_utf8_lossy(&r.stderr);
            eprintln!("note: {script} {}: failed: {}", task.name(), err.lines().last().unwrap_or(""));
            None
        }
        (Err(e), _) => {
            eprintln!("note: cannot run {}: {e}", o.python.display());
            None
        }
    }
}

fn check(path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::bad_file(path, "is missing: --peers names the folder of keras_ref.py and torch_ref.py"))
    }
}

/// Runs every task on gpu-train, Keras, and PyTorch with 1 and 2 threads, round after round,
/// printing each time as it comes, then the medians and ratios.
pub fn compare(o: &Options) -> Result<Vec<Row>> {
    check(&o.peers.join("keras_ref.py"))?;
    check(&o.peers.join("torch_ref.py"))?;
    let tasks = [Task::MnistMlp, Task::MnistCnn, Task::Warwick];
    let mut rows: Vec<Row> =
        tasks.iter().map(|t| Row { task: t.name().into(), epochs: epochs(*t), ..Default::default() }).collect();
    // The backend and, on the CPU, the instruction-set level the figures are for.
    let opened = open(o.backend)?;
    let on_cpu = matches!(opened, Opened::Cpu(_));
    println!("gpu-train backend: {}", make(opened, &[])?.0.describe());
    // A cap the user set already stays as it is.
    let caps: Vec<(String, String)> = match on_cpu {
        true => isa_caps(level(), best())
            .into_iter()
            .map(|(k, v)| (k.to_string(), std::env::var(k).unwrap_or_else(|_| v.to_string())))
            .collect(),
        false => Vec::new(),
    };
    if !caps.is_empty() {
        let set: Vec<String> = caps.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("peers held to {} as gpu-train is: {}", level().name(), set.join(" "));
    }
    for round in 1..=o.rounds {
        for (task, row) in tasks.iter().zip(&mut rows) {
            let t = ours(*task, o.backend)?;
            println!("round {round} {:<10} gpu-train   {t:.3} s/epoch", task.name());
            row.gpu_train.push(t);
            for (name, script, threads, col) in [
                ("keras", "keras_ref.py", None, &mut row.keras),
                ("torch 1t", "torch_ref.py", Some(1), &mut row.torch_1),
                ("torch 2t", "torch_ref.py", Some(2), &mut row.torch_2),
            ] {
                if let Some(t) = peer(o, script, *task, threads, &caps) {
                    println!("round {round} {:<10} {name:<11} {t:.3} s/epoch", task.name());
                    col.push(t);
                }
            }
        }
    }
    println!(
        "\n{:<10} {:>10} {:>10} {:>10} {:>10} {:>22}",
        "task", "gpu-train", "keras", "torch 1t", "torch 2t", "gpu-train / fastest"
    );
    let show = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
    for row in &mut rows {
        let fastest =
            [median(&row.keras), median(&row.torch_1), median(&row.torch_2)].into_iter().flatten().reduce(f64::min);
        row.ratio = median(&row.gpu_train).zip(fastest).map(|(a, b)| a / b);
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>22}",
            row.task,
            show(median(&row.gpu_train)),
            show(median(&row.keras)),
            show(median(&row.torch_1)),
            show(median(&row.torch_2)),
            row.ratio.map_or("–".to_string(), |r| format!("{r:.2}x"))
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_held_only_below_the_best_level() {
        let names = |caps: Vec<(&str, &str)>| caps.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(
            names(isa_caps(Level::Avx2, Level::Avx512)),
            ["ONEDNN_MAX_CPU_ISA=AVX2", "ATEN_CPU_CAPABILITY=avx2", "MKL_ENABLE_INSTRUCTIONS=AVX2"]
        );
        assert!(isa_caps(Level::Avx512, Level::Avx512).is_empty());
        assert!(isa_caps(Level::Avx2, Level::Avx2).is_empty());
        assert!(isa_caps(Level::Neon, Level::Neon).is_empty());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(isa_caps(Level::Scalar, Level::Avx2)[0], ("ONEDNN_MAX_CPU_ISA", "SSE41"));
        }
    }
}
