//! Headless benchmarks of a backend: matrix products, the report's convolution layers, and
//! training steps and epochs of each task on synthetic data of the real sizes. Every timing
//! waits for the device to finish, after a warm-up run; first use (kernel building) is timed
//! apart.

use crate::backend::{Backend, KernelTime, Profile};
use crate::data::{Dataset, Split};
use crate::error::Result;
use crate::graph::{BufDesc, BufId, ConvGeom, Dtype, Op, Step, Target};
use crate::model::Shape;
use crate::rng::Rng;
use crate::run::{make_backend, BackendChoice};
use crate::tasks::{self, Task};
use crate::train::{Session, SessionOptions};
use std::time::{Duration, Instant};

/// Makes a backend for a plan's buffers.
type Factory<'a> = &'a dyn Fn(&[BufDesc]) -> Result<Box<dyn Backend>>;

#[derive(Debug, serde::Serialize)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ms: f64,
    pub gflops: f64,
    /// `gflops` over the adapter's f32 peak, where the card is one of [`PEAKS`].
    pub peak_fraction: Option<f64>,
}

/// Published f32 (non-tensor) peaks in GFLOP/s at boost clock, by adapter name.
const PEAKS: &[(&str, f64)] = &[
    ("H100 80GB HBM3", 66_900.0),
    ("H100 PCIe", 51_200.0),
    ("H200", 66_900.0),
    ("A100", 19_500.0),
    ("L4", 30_300.0),
    ("RTX 4090", 82_600.0),
];

/// The f32 peak of the adapter `describe` names, if it is a card we know.
fn peak_gflops(describe: &str) -> Option<f64> {
    PEAKS.iter().find(|(name, _)| describe.contains(name)).map(|&(_, peak)| peak)
}

#[derive(Debug, serde::Serialize)]
pub struct Layer {
    pub name: String,
    pub batch: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct TaskTiming {
    pub task: String,
    pub batch: usize,
    /// The first step: kernels built, buffers first touched.
    pub first_step_ms: f64,
    /// Kernel (pipeline) building within that first step; 0 on the CPU.
    pub build_ms: f64,
    pub step_ms: f64,
    pub samples_per_s: f64,
    pub epoch_samples: usize,
    /// One training epoch of `epoch_samples` and the test pass.
    pub epoch_s: f64,
    /// GPU kernel launches of a training step and of a test step, and test steps per epoch
    /// (`test_steps` of up to `test_batch` samples).
    pub train_launches: Option<usize>,
    pub test_launches: Option<usize>,
    pub test_steps: usize,
    pub test_batch: usize,
    /// With `--ops`: each op of the training step run alone, in step order.
    pub ops: Vec<OpTiming>,
    /// With `--profile`: each kernel launch of the training step timed on the device.
    pub profile: Option<Profile>,
}

#[derive(Debug, serde::Serialize)]
pub struct OpTiming {
    pub op: String,
    pub ms: f64,
}

/// An op's kind, as its variant's name.
fn op_name(op: &Op) -> String {
    let debug = format!("{op:?}");
    debug.split([' ', '{', '(']).next().unwrap_or_default().to_string()
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub backend: String,
    /// The adapter's f32 peak in GFLOP/s, where known.
    pub peak_gflops: Option<f64>,
    pub matmul: Vec<Matmul>,
    pub layers: Vec<Layer>,
    pub tasks: Vec<TaskTiming>,
}

pub struct Options {
    /// Smaller products and 2,000-sample MNIST epochs, for slow (software) devices.
    pub quick: bool,
    /// Also time each op of every task's training step on its own.
    pub ops: bool,
    /// Also time each kernel launch of every task's training step on the device.
    pub profile: bool,
}

/// Runs of a training step that `--profile` times (the first is a warm-up).
const PROFILE_RUNS: usize = 21;

/// Buffers with random contents for timing single ops.
#[derive(Default)]
struct Bufs {
    descs: Vec<BufDesc>,
    init: Vec<(BufId, Vec<f32>)>,
}

impl Bufs {
    fn add(&mut self, len: usize, rng: Option<&mut Rng>) -> BufId {
        let id = BufId(self.descs.len());
        self.descs.push(BufDesc { name: format!("b{}", id.0), len, dtype: Dtype::F32, set: None });
        if let Some(rng) = rng {
            self.init.push((id, (0..len).map(|_| rng.normal() * 0.1).collect()));
        }
        id
    }
}

/// Seconds per run of `ops` on a batch of `n`, after one warm-up run: enough repetitions for
/// about 0.2 s (at most 200), queued back to back, then waited for.
fn time_ops(be: &mut dyn Backend, ops: &[Op], n: usize) -> Result<f64> {
    let step = Step { n, offset: 0, t: 1 };
    be.run(ops, step)?;
    be.finish()?;
    let start = Instant::now();
    be.run(ops, step)?;
    be.finish()?;
    let once = start.elapsed().as_secs_f64();
    let reps = ((0.2 / once.max(1e-6)) as usize).clamp(1, 200);
    let start = Instant::now();
    for _ in 0..reps {
        be.run(ops, step)?;
    }
    be.finish()?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

fn with_backend(bufs: &Bufs, make: Factory) -> Result<Box<dyn Backend>> {
    let mut be = make(&bufs.descs)?;
    for (id, v) in &bufs.init {
        be.upload_f32(*id, v)?;
    }
    Ok(be)
}

fn matmul(make: Factory, size: usize, peak: Option<f64>, rng: &mut Rng) -> Result<Matmul> {
    let (m, n, k) = (size, size, size);
    let mut b = Bufs::default();
    let (x, w, bias) = (b.add(m * k, Some(rng)), b.add(n * k, Some(rng)), b.add(n, Some(rng)));
    let y = b.add(m * n, None);
    let mut be = with_backend(&b, make)?;
    let s = time_ops(&mut *be, &[Op::Dense { x, w, b: bias, y, n_in: k, n_out: n }], m)?;
    let gflops = 2.0 * (m * n * k) as f64 / s / 1e9;
    Ok(Matmul { m, n, k, ms: s * 1e3, gflops, peak_fraction: peak.map(|p| gflops / p) })
}

/// A convolution (`k` 3 or 1) or, with `transpose`, a 2x2 stride-2 transposed convolution.
fn conv(make: Factory, name: &str, batch: usize, g: ConvGeom, transpose: bool, rng: &mut Rng) -> Result<Layer> {
    let (hw, out_hw) = (g.h * g.w, if transpose { 4 * g.h * g.w } else { g.h * g.w });
    let mut b = Bufs::default();
    let x = b.add(batch * g.c_in * hw, Some(rng));
    let w = b.add(g.c_in * g.c_out * if transpose { 4 } else { g.k * g.k }, Some(rng));
    let bias = b.add(g.c_out, Some(rng));
    let gy = b.add(batch * g.c_out * out_hw, Some(rng));
    let y = b.add(batch * g.c_out * out_hw, None);
    let (gx, gw, gb) =
        (b.add(batch * g.c_in * hw, None), b.add(g.c_in * g.c_out * g.k * g.k, None), b.add(g.c_out, None));
    let (fwd, bwd) = if transpose {
        (Op::ConvTranspose2d { x, w, b: bias, y, g }, Op::ConvTranspose2dBackward { x, w, gy, gx: Some(gx), gw, gb, g })
    } else {
        (Op::Conv2d { x, w, b: bias, y, g }, Op::Conv2dBackward { x, w, gy, gx: Some(gx), gw, gb, g })
    };
    let mut be = with_backend(&b, make)?;
    let forward = time_ops(&mut *be, std::slice::from_ref(&fwd), batch)?;
    let backward = time_ops(&mut *be, std::slice::from_ref(&bwd), batch)?;
    Ok(Layer { name: name.into(), batch, forward_ms: forward * 1e3, backward_ms: backward * 1e3 })
}

/// The report's convolution layers at their training batch sizes.
fn layers() -> Vec<(&'static str, usize, ConvGeom, bool)> {
    let g = |c_in, c_out, h, k| ConvGeom::same(c_in, c_out, h, h, k);
    vec![
        ("cnn conv 1->8 28x28", 100, g(1, 8, 28, 3), false),
        ("cnn conv 8->16 14x14", 100, g(8, 16, 14, 3), false),
        ("cnn conv 16->32 7x7", 100, g(16, 32, 7, 3), false),
        ("fcn conv 3->8 128x128", 5, g(3, 8, 128, 3), false),
        ("fcn conv 8->16 64x64", 5, g(8, 16, 64, 3), false),
        ("fcn conv 16->32 32x32", 5, g(16, 32, 32, 3), false),
        ("fcn convT 32->16 32->64", 5, g(32, 16, 32, 2), true),
        ("fcn convT 16->8 64->128", 5, g(16, 8, 64, 2), true),
        ("fcn conv 8->1 1x1 128x128", 5, g(8, 1, 128, 1), false),
    ]
}

/// Seeded bytes shaped like a task's data, with samples of `sample`: `train` and `test` of them.
pub fn synthetic(task: Task, sample: Shape, train: usize, test: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let (target, label_len, classes) = match task {
        Task::Warwick | Task::WarwickUnet => (Target::Mask, sample.h * sample.w, 2),
        _ => (Target::Classes(10), 1, 10),
    };
    let mut split = |n: usize| Split {
        x: (0..n * sample.len()).map(|_| rng.next_u32() as u8).collect(),
        y: (0..n * label_len).map(|_| (rng.next_u32() % classes) as u8).collect(),
        n,
    };
    let train = split(train);
    Dataset { train, test: split(test), sample, target }
}

fn task_timing(make: Factory, task: Task, bench: &Options) -> Result<TaskTiming> {
    let d = tasks::defaults(task);
    let (train, test) = match task {
        Task::Warwick | Task::WarwickUnet => (85, 80),
        _ if bench.quick => (2_000, 1_000),
        _ => (60_000, 10_000),
    };
    let data = synthetic(task, tasks::input_shape(task), train, test, 1);
    let model = tasks::model(task, d.variant, data.sample);
    let opts =
        SessionOptions { batch: d.batch, optimizer: d.optimizer, seed: 1, shuffle: true, mirrored: false, init: None };
    let mut s = Session::new(&model, &data, opts, |descs| make(descs))?;
    let step = Step { n: d.batch, offset: 0, t: 1 };
    let ops = s.train_ops.clone();
    let start = Instant::now();
    s.backend().run(&ops, step)?;
    s.backend().finish()?;
    let first = start.elapsed();
    let build: Duration = s.backend().build_time();
    let step_s = time_ops(s.backend(), &ops, d.batch)?;
    let start = Instant::now();
    s.run_epoch()?;
    let epoch_s = start.elapsed().as_secs_f64();
    let eval = s.plan.eval.clone();
    let (train_launches, test_launches) = (s.backend().launches(&ops), s.backend().launches(&eval));
    let mut per_op = Vec::new();
    if bench.ops {
        for op in &ops {
            let ms = time_ops(s.backend(), std::slice::from_ref(op), d.batch)? * 1e3;
            per_op.push(OpTiming { op: op_name(op), ms });
        }
    }
    let profile = if bench.profile { Some(s.backend().profile(&ops, step, PROFILE_RUNS)?) } else { None };
    Ok(TaskTiming {
        profile,
        task: task.name().into(),
        batch: d.batch,
        first_step_ms: first.as_secs_f64() * 1e3,
        build_ms: build.as_secs_f64() * 1e3,
        step_ms: step_s * 1e3,
        samples_per_s: d.batch as f64 / step_s,
        epoch_samples: train,
        epoch_s,
        train_launches,
        test_launches,
        test_steps: test.div_ceil(s.test_batch()),
        test_batch: s.test_batch(),
        ops: per_op,
    })
}

/// Runs every benchmark on the chosen backend, printing each result as it comes.
pub fn run(choice: BackendChoice, opts: &Options) -> Result<Report> {
    let (probe, why) = make_backend(choice, &[])?;
    let describe = format!("{} — {why}", probe.describe());
    drop(probe);
    let make = |descs: &[BufDesc]| make_backend(choice, descs).map(|(be, _)| be);
    let make: Factory = &make;
    let mut rng = Rng::new(7);
    let peak = peak_gflops(&describe);
    println!("backend: {describe}");
    match peak {
        Some(p) => println!("f32 peak: {p:.0} GFLOP/s\n"),
        None => println!("f32 peak: not known for this adapter\n"),
    }
    println!("{:<28} {:>10} {:>10} {:>8}", "matmul (dense forward)", "ms", "GFLOP/s", "of peak");
    let sizes: &[usize] = if opts.quick { &[64, 128, 256] } else { &[256, 1024, 2048, 4096] };
    let mut matmuls = Vec::new();
    for &size in sizes {
        let m = matmul(make, size, peak, &mut rng)?;
        let of_peak = m.peak_fraction.map_or("-".into(), |f| format!("{:.1}%", f * 100.0));
        println!("{:<28} {:>10.3} {:>10.2} {:>8}", format!("{size}x{size}x{size}"), m.ms, m.gflops, of_peak);
        matmuls.push(m);
    }
    println!("\n{:<28} {:>6} {:>12} {:>12}", "layer", "batch", "forward ms", "backward ms");
    let mut convs = Vec::new();
    for (name, batch, g, transpose) in layers() {
        let l = conv(make, name, batch, g, transpose, &mut rng)?;
        println!("{:<28} {:>6} {:>12.3} {:>12.3}", l.name, l.batch, l.forward_ms, l.backward_ms);
        convs.push(l);
    }
    println!(
        "\n{:<10} {:>6} {:>14} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "task", "batch", "first step ms", "build ms", "ms/step", "samples/s", "epoch samples", "epoch s"
    );
    let mut timings = Vec::new();
    for task in [Task::MnistMlp, Task::MnistCnn, Task::Warwick, Task::WarwickUnet] {
        let t = task_timing(make, task, opts)?;
        println!(
            "{:<10} {:>6} {:>14.1} {:>10.1} {:>10.3} {:>12.0} {:>14} {:>10.2}",
            t.task, t.batch, t.first_step_ms, t.build_ms, t.step_ms, t.samples_per_s, t.epoch_samples, t.epoch_s
        );
        timings.push(t);
    }
    for t in &timings {
        if let (Some(train), Some(test)) = (t.train_launches, t.test_launches) {
            let steps = t.epoch_samples.div_ceil(t.batch);
            println!(
                "{:<10} launches: {train} per training step, {test} per test step ({} of up to {} samples); {} per epoch",
                t.task,
                t.test_steps,
                t.test_batch,
                steps * train + t.test_steps * test
            );
        }
    }
    for t in timings.iter().filter(|t| !t.ops.is_empty()) {
        println!("\n{} training step, op by op (each run alone)", t.task);
        for (i, o) in t.ops.iter().enumerate() {
            println!("{i:>4} {:<28} {:>10.3} ms", o.op, o.ms);
        }
        println!(
            "     {:<28} {:>10.3} ms (the whole step: {:.3} ms)",
            "sum",
            t.ops.iter().map(|o| o.ms).sum::<f64>(),
            t.step_ms
        );
    }
    for t in &timings {
        match &t.profile {
            Some(Profile::Times(times)) => print_profile(t, times),
            Some(Profile::Unavailable(why)) => println!("\n{} kernel profile: not available: {why}", t.task),
            None => {}
        }
    }
    Ok(Report { backend: describe, peak_gflops: peak, matmul: matmuls, layers: convs, tasks: timings })
}

/// Each kernel's device time and share of the step's, then the launches summed against the
/// step's wall time (the difference is what the launches cost beyond their kernels).
fn print_profile(t: &TaskTiming, times: &[KernelTime]) {
    let total: f64 = times.iter().map(|k| k.ms).sum();
    let width = times.iter().map(|k| k.kernel.len()).max().unwrap_or(0);
    println!("\n{} training step on the device, kernel by kernel (median of {} runs)", t.task, PROFILE_RUNS - 1);
    for k in times {
        let share = 100.0 * k.ms / total.max(1e-12);
        println!("{:>4} {:<width$} {:>10.4} ms {share:>6.1}%", k.launch, k.kernel, k.ms);
    }
    let launches = times.len();
    println!(
        "     {:<width$} {total:>10.4} ms in {launches} launches (the whole step: {:.4} ms wall)",
        "kernels", t.step_ms
    );
}
