//! Helpers shared by the integration tests: golden fixtures, a rig that runs single ops on a
//! backend, and closeness checks.
#![allow(dead_code)]

use gpu_train::backend::cpu::CpuBackend;
use gpu_train::backend::gpu::{adapter, Gpu, GpuBackend};
use gpu_train::backend::reference::ReferenceBackend;
use gpu_train::backend::Backend;
use gpu_train::checkpoint::{load, Tensor};
use gpu_train::graph::{BufDesc, BufId, Dtype, Op, ParamSet, Step};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// `GPU_TRAIN_GOLDEN`, else `../shared/golden` beside the repository.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("GPU_TRAIN_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"))
}

/// A fixture from [`golden_dir`], or, for ops that set lacks, from the committed
/// `golden/fixtures/` (written by `golden/generate.py`).
pub fn golden(name: &str) -> BTreeMap<String, Tensor> {
    let file = format!("{name}.safetensors");
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/fixtures").join(&file);
    let path = Some(golden_dir().join(&file)).filter(|p| p.is_file()).unwrap_or(committed);
    load(&path).unwrap_or_else(|e| panic!("golden fixture {}: {e} (set GPU_TRAIN_GOLDEN)", path.display()))
}

/// `GPU_TRAIN_DATA`, else `../shared/data`; `None` (with a note) when absent.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("GPU_TRAIN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: data folder {} is absent (set GPU_TRAIN_DATA)", dir.display());
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cpu,
    Gpu,
    /// The plain f64 kernels: the oracle.
    Reference,
}

/// The GPU backend on the first adapter (lavapipe where there is no GPU). A missing adapter
/// fails the test: the test command is documented to need a Vulkan driver.
pub fn gpu(descs: &[BufDesc]) -> GpuBackend {
    let adapter =
        adapter().unwrap_or_else(|e| panic!("no GPU adapter ({e}); install a Vulkan driver (mesa-vulkan-drivers)"));
    GpuBackend::new(Gpu::open(adapter).unwrap(), descs).unwrap()
}

pub fn backend(kind: Kind, descs: &[BufDesc]) -> Box<dyn Backend> {
    match kind {
        Kind::Cpu => Box::new(CpuBackend::new(descs)),
        Kind::Gpu => Box::new(gpu(descs)),
        Kind::Reference => Box::new(ReferenceBackend::new(descs)),
    }
}

/// `#[test]`s in modules `cpu`, `gpu` and `reference` calling each named `fn(Kind)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(#[test] fn $name() { super::$name(super::Kind::Cpu) })*
        }
        mod gpu {
            $(#[test] fn $name() { super::$name(super::Kind::Gpu) })*
        }
        mod reference {
            $(#[test] fn $name() { super::$name(super::Kind::Reference) })*
        }
    };
}

/// Buffers for running ops outside a plan.
#[derive(Default)]
pub struct Rig {
    pub descs: Vec<BufDesc>,
    f32_init: Vec<(BufId, Vec<f32>)>,
    u8_init: Vec<(BufId, Vec<u8>)>,
    u32_init: Vec<(BufId, Vec<u32>)>,
    /// Buffers between two ops that a fast backend runs as one, which it need not store.
    pub unstored: Vec<BufId>,
}

impl Rig {
    fn buf(&mut self, len: usize, dtype: Dtype) -> BufId {
        self.descs.push(BufDesc { name: format!("b{}", self.descs.len()), len, dtype, set: None });
        BufId(self.descs.len() - 1)
    }
    pub fn f32(&mut self, data: &[f32]) -> BufId {
        let id = self.buf(data.len(), Dtype::F32);
        self.f32_init.push((id, data.to_vec()));
        id
    }
    pub fn zeros(&mut self, len: usize) -> BufId {
        self.buf(len, Dtype::F32)
    }
    /// Zeros that only an op fused into the one writing them reads (see [`Rig::unstored`]).
    pub fn between(&mut self, len: usize) -> BufId {
        let id = self.zeros(len);
        self.unstored.push(id);
        id
    }
    /// A parameter: a buffer of the parameter-value set, which the GPU lays out in one buffer
    /// with the other parameters, in order.
    pub fn param(&mut self, data: &[f32]) -> BufId {
        let id = self.f32(data);
        self.descs[id.0].set = Some(ParamSet::Value);
        id
    }
    /// A parameter's gradient: zeros in the gradient set, laid out as the parameters are.
    pub fn grad(&mut self, len: usize) -> BufId {
        let id = self.zeros(len);
        self.descs[id.0].set = Some(ParamSet::Grad);
        id
    }
    pub fn u8(&mut self, data: &[u8]) -> BufId {
        let id = self.buf(data.len(), Dtype::U8);
        self.u8_init.push((id, data.to_vec()));
        id
    }
    pub fn u32(&mut self, data: &[u32]) -> BufId {
        let id = self.buf(data.len(), Dtype::U32);
        self.u32_init.push((id, data.to_vec()));
        id
    }
    /// The same buffers with every f32 value replaced by its magnitude: run through a linear
    /// op on the reference backend, it gives each output's Σ|terms|.
    pub fn abs(&self) -> Rig {
        let f32_init = self.f32_init.iter().map(|(id, v)| (*id, v.iter().map(|x| x.abs()).collect())).collect();
        Rig {
            descs: self.descs.clone(),
            f32_init,
            u8_init: self.u8_init.clone(),
            u32_init: self.u32_init.clone(),
            unstored: self.unstored.clone(),
        }
    }
    /// The largest magnitude of any f32 buffer's initial values (1 when there are none).
    pub fn largest(&self) -> f32 {
        self.f32_init.iter().flat_map(|(_, v)| v.iter()).fold(1.0f32, |m, v| m.max(v.abs()))
    }
    /// A CPU backend holding these buffers with their initial values.
    pub fn cpu(&self) -> CpuBackend {
        let mut be = CpuBackend::new(&self.descs);
        self.fill(&mut be);
        be
    }
    /// A backend of `kind` holding these buffers with their initial values.
    pub fn on(&self, kind: Kind) -> Box<dyn Backend> {
        let mut be = backend(kind, &self.descs);
        self.fill(&mut *be);
        be
    }
    pub fn fill(&self, be: &mut dyn Backend) {
        for (id, v) in &self.f32_init {
            be.upload_f32(*id, v).unwrap();
        }
        for (id, v) in &self.u8_init {
            be.upload_u8(*id, v).unwrap();
        }
        for (id, v) in &self.u32_init {
            be.upload_u32(*id, v).unwrap();
        }
    }
}

pub fn run(be: &mut dyn Backend, ops: &[Op], n: usize) {
    be.run(ops, Step { n, offset: 0, t: 1 }).unwrap();
}

/// |got - want| ≤ atol + rtol·|want| elementwise, with the worst offender in the message.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 || excess.is_nan() {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= 0.0, "{what}: element {i} is {} but should be {} (rtol {rtol}, atol {atol})", got[i], want[i]);
}

/// The golden README's tolerances: forward 1e-5 relative + 1e-6 absolute; gradients 1e-4 + 1e-5.
pub const FWD: (f32, f32) = (1e-5, 1e-6);
pub const GRAD: (f32, f32) = (1e-4, 1e-5);

/// A process's stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fresh (removed) path in the temporary folder, unique to this test process; whatever the
/// test puts there is removed when the value is dropped.
pub struct TempPath(PathBuf);

impl TempPath {
    /// `gpu-train-{name}-{process id}` in the temporary folder.
    pub fn new(name: &str) -> Self {
        let path = TempPath(std::env::temp_dir().join(format!("gpu-train-{name}-{}", std::process::id())));
        path.remove();
        path
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        self.remove();
    }
}

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

/// Runs `gpu-train` with each case's flags, plus `--backend cpu` and `--out` a fresh folder:
/// each must fail with its message, without a panic, and leave no run folder.
pub fn assert_refused(cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        let out = tmp("refused-run");
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(*args)
            .args(["--backend", "cpu", "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            !r.status.success() && text(&r).contains(want) && !text(&r).contains("panicked"),
            "{args:?}: {}",
            text(&r)
        );
        assert!(!out.exists(), "{args:?} left a run folder");
    }
}

/// A [`TempPath`] for a test of the command line or a run.
pub fn tmp(name: &str) -> TempPath {
    TempPath::new(&format!("test-{name}"))
}

/// Two levels of a U-Net on 8x12 samples (`golden/generate.py` has its PyTorch twin): each
/// encoder level's output is read by its pooling and by a concatenation on the way up.
pub fn small_unet() -> gpu_train::model::Model {
    let conv = |name: &str, c: usize, k: usize| {
        format!("[[layers]]\nkind = \"conv2d\"\nname = \"{name}\"\nout_channels = {c}\nkernel_size = {k}\npadding = \"same\"\n")
    };
    let up = |name: &str, c: usize| {
        format!("[[layers]]\nkind = \"conv2d_transpose\"\nname = \"{name}\"\nout_channels = {c}\nkernel_size = 2\nstride = 2\n")
    };
    let layer = |kind: &str, extra: &str| format!("[[layers]]\nkind = \"{kind}\"\n{extra}");
    let pool = layer("max_pool2d", "kernel_size = 2\n");
    let text = [
        "input = [3, 8, 12]\n".to_string(),
        conv("down1", 4, 3),
        layer("relu", "name = \"skip1\"\n"),
        pool.clone(),
        conv("down2", 6, 3),
        layer("relu", "name = \"skip2\"\n"),
        pool,
        conv("bottom", 8, 3),
        layer("relu", ""),
        up("up2", 6),
        layer("concat", "inputs = [\"skip2\", \"up2\"]\n"),
        conv("mid", 6, 3),
        layer("relu", ""),
        up("up1", 4),
        layer("concat", "inputs = [\"up1\", \"skip1\"]\n"),
        conv("head", 1, 1),
        layer("sigmoid", ""),
    ]
    .join("\n");
    gpu_train::model::file::parse(&text, std::path::Path::new("small-unet.toml")).unwrap()
}

/// A residual path (`golden/generate.py` has its PyTorch twin): a value pooled, convolved,
/// upsampled back and added to itself.
pub fn pool_upsample_add() -> gpu_train::model::Model {
    let text = r#"
input = [3, 8, 12]
[[layers]]
kind = "conv2d"
name = "a"
out_channels = 4
kernel_size = 3
padding = "same"
[[layers]]
kind = "relu"
name = "skip"
[[layers]]
kind = "max_pool2d"
kernel_size = 2
[[layers]]
kind = "conv2d"
name = "b"
out_channels = 4
kernel_size = 3
padding = "same"
[[layers]]
kind = "upsample2d"
name = "up"
scale_factor = 2
[[layers]]
kind = "add"
inputs = ["skip", "up"]
[[layers]]
kind = "conv2d"
name = "head"
out_channels = 1
kernel_size = 1
padding = "same"
[[layers]]
kind = "sigmoid"
"#;
    gpu_train::model::file::parse(text, std::path::Path::new("pool-upsample-add.toml")).unwrap()
}

/// Convolutions of other paddings and strides on a 14x18 digit: 3x3 at stride 2 with one zero
/// each side (7x9), 3x3 with none (5x7), a max pooling that drops a row and a column (2x3), and
/// 2x2 at stride 2 with none (1x1), then ten classes.
pub fn strided() -> gpu_train::model::Model {
    let text = r#"
input = [1, 14, 18]
[[layers]]
kind = "conv2d"
name = "c1"
out_channels = 4
kernel_size = 3
padding = 1
stride = 2
[[layers]]
kind = "relu"
[[layers]]
kind = "conv2d"
name = "c2"
out_channels = 6
kernel_size = 3
padding = "valid"
[[layers]]
kind = "tanh"
[[layers]]
kind = "max_pool2d"
kernel_size = 2
[[layers]]
kind = "conv2d"
name = "c3"
out_channels = 5
kernel_size = 2
stride = 2
[[layers]]
kind = "flatten"
[[layers]]
kind = "dense"
name = "out"
out_features = 10
[[layers]]
kind = "softmax"
"#;
    gpu_train::model::file::parse(text, std::path::Path::new("strided.toml")).unwrap()
}
