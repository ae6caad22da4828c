//! Choosing a backend: `--backend auto|gpu|cpu|reference`, and the one line that says which and why.

use super::cpu::CpuBackend;
use super::gpu::{self, Gpu, GpuBackend};
use super::reference::ReferenceBackend;
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
    /// The plain reference kernels (f64 sums, one thread): slow; the oracle for the others.
    Reference,
}

/// What `--backend` chose before any buffer exists: an open device, or the CPU; and why.
pub enum Opened {
    Gpu(Box<Gpu>, String),
    Cpu(String),
    Reference,
}

/// Finds the adapter and opens the device the choice asks for (the slow part of making a GPU
/// backend, which a run does while it loads its data).
pub fn open(choice: BackendChoice) -> Result<Opened> {
    match choice {
        BackendChoice::Cpu => return Ok(Opened::Cpu("asked for".into())),
        BackendChoice::Reference => return Ok(Opened::Reference),
        _ => {}
    }
    Ok(match (choice, gpu::adapter()) {
        (BackendChoice::Gpu, Err(e)) => {
            return Err(Error::Gpu(format!(
                "--backend gpu: no GPU adapter ({e}); install a Vulkan driver (mesa-vulkan-drivers gives a \
                 software one) or use --backend cpu"
            )))
        }
        (BackendChoice::Gpu, Ok(a)) => Opened::Gpu(Box::new(Gpu::open(a)?), "asked for".into()),
        (_, Ok(a)) if !gpu::is_software(&a.get_info()) => match gpu::unfit(&a) {
            None => Opened::Gpu(Box::new(Gpu::open(a)?), "hardware adapter found".into()),
            Some(why) => Opened::Cpu(why),
        },
        (_, Ok(a)) => {
            Opened::Cpu(format!("the only GPU adapter is software ({}); --backend gpu uses it", a.get_info().name))
        }
        (_, Err(e)) => Opened::Cpu(format!("no GPU adapter: {e}")),
    })
}

/// A device being opened on another thread ([`open`]). Dropping it waits for the thread: a
/// thread inside a driver must not outlive the run.
pub struct Opening(Option<std::thread::JoinHandle<Result<Opened>>>);

impl Opening {
    pub fn start(choice: BackendChoice) -> Self {
        Opening(Some(std::thread::spawn(move || open(choice))))
    }

    /// What the thread opened (once).
    pub fn take(&mut self) -> Result<Opened> {
        let failed = || Error::Gpu("opening the device failed".into());
        self.0.take().ok_or_else(failed)?.join().map_err(|_| failed())?
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The backend for a plan's buffers on what [`open`] chose, and why it was chosen.
pub fn make(opened: Opened, descs: &[BufDesc]) -> Result<(Box<dyn Backend>, String)> {
    Ok(match opened {
        Opened::Gpu(gpu, why) => (Box::new(GpuBackend::new(*gpu, descs)?), why),
        Opened::Cpu(why) => {
            crate::backend::cpu::level::checked()?;
            (Box::new(CpuBackend::new(descs)), why)
        }
        Opened::Reference => (Box::new(ReferenceBackend::new(descs)), "asked for (slow: the oracle)".into()),
    })
}

/// The chosen backend for a plan's buffers, and why it was chosen.
pub fn make_backend(choice: BackendChoice, descs: &[BufDesc]) -> Result<(Box<dyn Backend>, String)> {
    make(open(choice)?, descs)
}

/// Makes the chosen backend and says on one line which it is and why.
pub fn backend_factory(choice: BackendChoice) -> impl FnOnce(&[BufDesc]) -> Result<Box<dyn Backend>> {
    move |descs| {
        let (be, why) = make_backend(choice, descs)?;
        eprintln!("backend: {} — {why}", be.describe());
        Ok(be)
    }
}
