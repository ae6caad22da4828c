//! The WGSL sources, one per op family, and the specialisations (entry point + override
//! constants) that the encoder asks for.

use super::bindings::Mode;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
const ACT: &str = include_str!("../../../shaders/act.wgsl");

/// Weight-gradient split counts the encoder may choose (see `matmul.wgsl`); 0 is a plain product.
pub const SPLITS: [u32; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// The most workgroup memory a kernel uses, in bytes: a transposed convolution's weight and bias
/// gradients in one launch, with the product's tiles and a summing tree (`tests/shaders.rs`
/// measures every kernel).
pub const WORKGROUP_BYTES: u32 = 21_504;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Gather,
    Dense,
    Conv2d,
    ConvTranspose,
    MaxPool,
    AvgPool,
    Activation,
    Loss,
    Optim,
    Reduce,
    Merge,
    BatchNorm,
    BatchNormBackward,
}

impl Family {
    pub const ALL: [Family; 13] = [
        Family::Gather,
        Family::Dense,
        Family::Conv2d,
        Family::ConvTranspose,
        Family::MaxPool,
        Family::AvgPool,
        Family::Activation,
        Family::Loss,
        Family::Optim,
        Family::Reduce,
        Family::Merge,
        Family::BatchNorm,
        Family::BatchNormBackward,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Gather => "gather.wgsl",
            Family::Dense => "dense.wgsl",
            Family::Conv2d => "conv2d.wgsl",
            Family::ConvTranspose => "conv_transpose.wgsl",
            Family::MaxPool => "maxpool.wgsl",
            Family::AvgPool => "avgpool.wgsl",
            Family::Activation => "activation.wgsl",
            Family::Loss => "loss.wgsl",
            Family::Optim => "optim.wgsl",
            Family::Reduce => "reduce.wgsl",
            Family::Merge => "merge.wgsl",
            Family::BatchNorm => "batchnorm.wgsl",
            Family::BatchNormBackward => "batchnorm_backward.wgsl",
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Family::Gather => include_str!("../../../shaders/gather.wgsl"),
            Family::Dense => include_str!("../../../shaders/dense.wgsl"),
            Family::Conv2d => include_str!("../../../shaders/conv2d.wgsl"),
            Family::ConvTranspose => include_str!("../../../shaders/conv_transpose.wgsl"),
            Family::MaxPool => include_str!("../../../shaders/maxpool.wgsl"),
            Family::AvgPool => include_str!("../../../shaders/avgpool.wgsl"),
            Family::Activation => include_str!("../../../shaders/activation.wgsl"),
            Family::Loss => include_str!("../../../shaders/loss.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
            Family::Reduce => include_str!("../../../shaders/reduce.wgsl"),
            Family::Merge => include_str!("../../../shaders/merge.wgsl"),
            Family::BatchNorm => include_str!("../../../shaders/batchnorm.wgsl"),
            Family::BatchNormBackward => include_str!("../../../shaders/batchnorm_backward.wgsl"),
        }
    }

    /// Whether the family is a set of index maps for the tiled matrix product.
    pub fn is_gemm(self) -> bool {
        matches!(self, Family::Dense | Family::Conv2d | Family::ConvTranspose)
    }

    /// The module's full text: the common prelude, the activations where used, the family, and
    /// the matrix product if used.
    pub fn source(self) -> String {
        let mut s = format!("{COMMON}\n");
        if self.is_gemm() || matches!(self, Family::Activation | Family::MaxPool | Family::Loss | Family::BatchNorm) {
            s.push_str(ACT);
            s.push('\n');
        }
        s.push_str(self.own_source());
        if self.is_gemm() {
            s.push('\n');
            s.push_str(MATMUL);
        }
        s
    }
}

/// One compute pipeline: a family's entry point with its override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub family: Family,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, u32)>,
}

impl Kernel {
    pub fn new(family: Family, entry: &'static str) -> Self {
        Kernel { family, entry, constants: Vec::new() }
    }
    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.constants.push((name, value));
        self
    }
    pub fn constant(&self, name: &str) -> Option<u32> {
        self.constants.iter().find(|c| c.0 == name).map(|c| c.1)
    }
    /// A product's mode.
    pub fn mode(&self) -> Option<Mode> {
        self.constant("MODE").and_then(Mode::of)
    }
    /// The override constants as the pipeline takes them.
    pub fn override_values(&self) -> Vec<(&'static str, f64)> {
        self.constants.iter().map(|&(k, v)| (k, v as f64)).collect()
    }
}

/// The tiled product of a family's `mode`, with `splits` slices (0: none) and (rows, columns)
/// tiles.
pub fn gemm(family: Family, mode: Mode, splits: u32, (tm, tn): (u32, u32)) -> Kernel {
    let (a, b) = k_fast(family, mode);
    Kernel::new(family, "matmul")
        .with("MODE", mode as u32)
        .with("SPLITS", splits)
        .with("TILE_M", tm)
        .with("TILE_N", tn)
        .with("A_K_FAST", a.into())
        .with("B_K_FAST", b.into())
}

/// Whether consecutive k are adjacent in memory in A and in B, as the family's index maps for
/// `mode` lay them out (see each family's `load_a` and `load_b`).
fn k_fast(family: Family, mode: Mode) -> (bool, bool) {
    match (family, mode) {
        (Family::Dense, Mode::Forward) => (true, true),
        (Family::Dense, Mode::DataGrad) => (true, false),
        (Family::Dense, _) => (false, false),
        (Family::Conv2d | Family::ConvTranspose, Mode::WeightGrad) => (true, true),
        (Family::ConvTranspose, Mode::Forward) => (false, false),
        _ => (true, false),
    }
}

/// A transposed convolution's weight-gradient product `k` that also sums the bias gradient, in
/// `rows` slices.
pub fn weight_and_bias(k: Kernel, rows: u32) -> Kernel {
    Kernel { entry: "weight_and_bias", ..k }.with("ROW_SPLITS", rows)
}

/// Bias gradients: a family's mode 3 as row sums.
pub fn row_sums(family: Family, splits: u32) -> Kernel {
    Kernel::new(family, "row_sums").with("MODE", Mode::RowSums as u32).with("SPLITS", splits)
}
