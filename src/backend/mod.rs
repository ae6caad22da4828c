//! The seam between a plan and the hardware: a backend owns the plan's buffers and runs its ops.

pub mod choice;
pub mod cpu;
pub mod gpu;
pub mod host;
pub mod reference;

use crate::error::Result;
use crate::graph::{BufId, Op, Step};

/// Runs a plan's ops on buffers it owns. Buffers are created once, from the plan's descriptors,
/// when the backend is made; `run` may queue work, and reads (`download_f32`) wait for it.
pub trait Backend {
    /// What runs the ops, for the user: e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;
    fn upload_f32(&mut self, buf: BufId, data: &[f32]) -> Result<()>;
    fn upload_u8(&mut self, buf: BufId, data: &[u8]) -> Result<()>;
    fn upload_u32(&mut self, buf: BufId, data: &[u32]) -> Result<()>;
    fn download_f32(&mut self, buf: BufId) -> Result<Vec<f32>>;
    /// Several buffers at once (on a GPU: one copy and one wait).
    fn download_all(&mut self, bufs: &[BufId]) -> Result<Vec<Vec<f32>>> {
        bufs.iter().map(|&b| self.download_f32(b)).collect()
    }
    /// Runs `ops` in order for one step.
    fn run(&mut self, ops: &[Op], step: Step) -> Result<()>;
    /// Gets ready to run each of these op lists, ahead of their first step (a GPU builds their
    /// kernels, all at once).
    fn prepare(&mut self, _lists: &[&[Op]]) -> Result<()> {
        Ok(())
    }
    /// Waits until every queued op has run (for timing).
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    /// Bytes of device memory this backend has allocated (0 where it does not count them).
    /// The most bytes one buffer may hold, where the backend has such a limit (a device's
    /// largest binding); the data's buffers must each fit it.
    fn buffer_budget(&self) -> Option<u64> {
        None
    }
    fn allocated_bytes(&self) -> u64 {
        0
    }
    /// Time spent building kernels (GPU pipelines) so far.
    fn build_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Kernel launches that one run of `ops` takes, once `ops` has run (`None` on the CPU).
    fn launches(&self, _ops: &[Op]) -> Option<usize> {
        None
    }
    /// Each kernel launch of one run of `ops`, timed on the device over `reps` runs (the GPU,
    /// where the adapter can time them); else why not.
    fn profile(&mut self, _ops: &[Op], _step: Step, _reps: usize) -> Result<Profile> {
        Ok(Profile::Unavailable("the CPU backend runs no kernels: `bench --ops` times its ops".into()))
    }
    /// Whether a test step should take as many samples as the plan allows: on a GPU, where a
    /// launch costs more than the work of a small step, but not on a CPU, where steps of one
    /// training batch keep their buffers in cache.
    fn large_steps(&self) -> bool {
        false
    }
}

/// One kernel launch's device time: the median over the profiled runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    /// Its place in the step's launches.
    pub launch: usize,
    /// `family::entry [specialisation constants]`.
    pub kernel: String,
    pub ms: f64,
}

/// What [`Backend::profile`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub enum Profile {
    Times(Vec<KernelTime>),
    Unavailable(String),
}
