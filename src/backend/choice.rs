//! Choosing a backend: `--backend auto|gpu|cpu`, and the one line that says which and why.

use super::cpu::CpuBackend;
use super::gpu::{self, Gpu, GpuBackend};
use super::Backend;
use crate::error::{Error, Result};
use crate::graph::BufDesc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// A hardware GPU when there is one, else the CPU.
    Auto,
    /// The GPU, even a software one (lavapipe); an error when there is no adapter.
    Gpu,
    Cpu,
}

/// The chosen backend for a plan's buffers, and why it was chosen.
pub fn make_backend(choice: BackendChoice, descs: &[BufDesc]) -> Result<(Box<dyn Backend>, String)> {
    if choice == BackendChoice::Cpu {
        return Ok((Box::new(CpuBackend::new(descs)), "asked for".into()));
    }
    Ok(match (choice, gpu::adapter()) {
        (BackendChoice::Gpu, Err(e)) => {
            return Err(Error::Gpu(format!(
                "--backend gpu: no GPU adapter ({e}); install a Vulkan driver (mesa-vulkan-drivers gives a \
                 software one) or use --backend cpu"
            )))
        }
        (BackendChoice::Gpu, Ok(a)) => (Box::new(GpuBackend::new(Gpu::open(a)?, descs)?), "asked for".into()),
        (_, Ok(a)) if !gpu::is_software(&a.get_info()) => {
            (Box::new(GpuBackend::new(Gpu::open(a)?, descs)?), "hardware adapter found".into())
        }
        (_, Ok(a)) => (
            Box::new(CpuBackend::new(descs)),
            format!("the only GPU adapter is software ({}); --backend gpu uses it", a.get_info().name),
        ),
        (_, Err(e)) => (Box::new(CpuBackend::new(descs)), format!("no GPU adapter: {e}")),
    })
}

/// Makes the chosen backend and says on one line which it is and why.
pub fn backend_factory(choice: BackendChoice) -> impl FnOnce(&[BufDesc]) -> Result<Box<dyn Backend>> {
    move |descs| {
        let (be, why) = make_backend(choice, descs)?;
        eprintln!("backend: {} — {why}", be.describe());
        Ok(be)
    }
}
