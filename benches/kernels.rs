//! `cargo bench`: the same benchmarks as `gpu-train bench --quick`, on the CPU backend and, when
//! there is an adapter (lavapipe counts), on the GPU backend.

use gpu_train::bench::{run, Options};
use gpu_train::run::BackendChoice;

fn main() {
    for choice in [BackendChoice::Cpu, BackendChoice::Gpu] {
        if let Err(e) = run(choice, &Options { quick: true, ops: false, profile: choice == BackendChoice::Gpu }) {
            println!("{choice:?}: {e}");
        }
        println!();
    }
}
