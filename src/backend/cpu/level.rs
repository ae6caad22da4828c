//! The instruction-set level the CPU kernels run at: the best this CPU has, or a lower one asked
//! for with `GPU_TRAIN_CPU=scalar|avx2|avx512` (`neon` on ARM), to measure and test what other
//! machines run. Read once per process.

use crate::error::{Error, Result};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust, vectorised by the compiler for the target's baseline (SSE2 on x86-64).
    Scalar,
    /// ARM's 128-bit vectors.
    Neon,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512F: the hand-written kernels of `avx512.rs`.
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Every level this CPU can run, lowest first.
    pub fn available() -> Vec<Level> {
        let best = best();
        [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= best && (l != Level::Neon || best == Level::Neon))
            .collect()
    }
}

/// The best level this CPU has.
pub fn best() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512::available() {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return Level::Neon;
    }
    Level::Scalar
}

fn from_env() -> std::result::Result<Level, String> {
    let Ok(asked) = std::env::var("GPU_TRAIN_CPU") else { return Ok(best()) };
    let levels = Level::available();
    let names: Vec<&str> = levels.iter().map(|l| l.name()).collect();
    match levels.iter().find(|l| l.name() == asked) {
        Some(&l) => Ok(l),
        None => Err(format!("GPU_TRAIN_CPU={asked:?}: this CPU runs {}", names.join(", "))),
    }
}

static LEVEL: OnceLock<std::result::Result<Level, String>> = OnceLock::new();

/// The level of this process, or why `GPU_TRAIN_CPU` cannot be met.
pub fn checked() -> Result<Level> {
    LEVEL.get_or_init(from_env).clone().map_err(Error::Config)
}

/// The level of this process ([`checked`]; scalar when the setting is invalid, which opening
/// the backend reports).
pub fn level() -> Level {
    *LEVEL.get_or_init(from_env).as_ref().unwrap_or(&Level::Scalar)
}

/// Loops written for the compiler to vectorise, with their operands, for [`at_level`]; `run`
/// must be `#[inline(always)]` (a closure or a function passed as a value is not inlined into
/// a function with more instructions than its own, and would run at the baseline's).
pub trait Vectorised {
    type Out;
    fn run(self) -> Self::Out;
}

/// `v.run()` inlined into a function compiled for `level`'s instructions: the same operations at
/// each level, and so the same bits, in wider vectors.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub fn at_level<V: Vectorised>(level: Level, v: V) -> V::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<V: Vectorised>(v: V) -> V::Out {
            v.run()
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<V: Vectorised>(v: V) -> V::Out {
            v.run()
        }
        match level {
            // SAFETY: a level is only chosen on a CPU that has its instructions.
            Level::Avx2 => return unsafe { avx2(v) },
            Level::Avx512 => return unsafe { avx512(v) },
            _ => {}
        }
    }
    v.run()
}

/// Whether the AVX-512 kernels run.
pub fn avx512() -> bool {
    level() == Level::Avx512
}
