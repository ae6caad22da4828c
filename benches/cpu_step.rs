//! Time per training step of each task's network on the CPU backend, on random data of the
//! real shapes: `cargo bench --bench cpu_step`. Steps are timed after a warm-up; the median of
//! several runs is printed.

use gpu_train::backend::cpu::CpuBackend;
use gpu_train::backend::Backend;
use gpu_train::data::{Dataset, Split};
use gpu_train::graph::Target;
use gpu_train::rng::Rng;
use gpu_train::tasks::{self, Task};
use gpu_train::train::{Session, SessionOptions};
use std::time::Instant;

fn synthetic(task: Task, n: usize, rng: &mut Rng) -> Dataset {
    let sample = tasks::input_shape(task);
    let (target, label_len) = match task {
        Task::Warwick => (Target::Mask, sample.h * sample.w),
        _ => (Target::Classes(10), 1),
    };
    let split = |rng: &mut Rng| Split {
        x: (0..n * sample.len()).map(|_| rng.next_u32() as u8).collect(),
        y: (0..n * label_len).map(|_| (rng.next_u32() % 10) as u8).collect(),
        n,
    };
    Dataset { train: split(rng), test: split(rng), sample, target }
}

fn main() {
    let mut rng = Rng::new(1);
    println!("{:<10} {:>6} {:>12} {:>14}", "task", "batch", "ms/step", "samples/s");
    for task in [Task::MnistMlp, Task::MnistCnn, Task::Warwick] {
        let d = tasks::defaults(task);
        let steps = 20;
        let data = synthetic(task, d.batch * steps, &mut rng);
        let model = tasks::model(task, d.variant, data.sample);
        let opts = SessionOptions {
            batch: d.batch,
            optimizer: d.optimizer,
            seed: 1,
            shuffle: false,
            mirrored: false,
            init: None,
        };
        let mut s = Session::new(&model, &data, opts, |b| Ok(Box::new(CpuBackend::new(b)) as Box<dyn Backend>))
            .expect("plan builds");
        s.train_epoch(1, &mut |_, _| {}).expect("warm-up epoch");
        let mut times: Vec<f64> = (0..5)
            .map(|e| {
                let t = Instant::now();
                s.train_epoch(e + 2, &mut |_, _| {}).expect("epoch runs");
                t.elapsed().as_secs_f64() / steps as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let ms = times[2] * 1e3;
        println!("{:<10} {:>6} {:>12.3} {:>14.0}", task.name(), d.batch, ms, d.batch as f64 / times[2]);
    }
}
