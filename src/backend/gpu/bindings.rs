//! What a launch binds, per kernel family: its parameters (`struct P` at binding 1 of its WGSL
//! file, field for field) and its storage buffers (bindings 2.., by their WGSL names). The
//! encoder and the passes build launches from these types only; `tests/shaders.rs` checks them
//! against the WGSL with naga.

use super::shaders::Family;

/// A field of a `#[repr(C)]` mirror of a WGSL struct: name, byte offset, bytes, Rust type.
pub type Field = (&'static str, usize, usize, &'static str);

/// A `#[repr(C)]` mirror of a WGSL struct.
pub trait Mirror: bytemuck::Pod {
    const FIELDS: &'static [Field];
}

macro_rules! mirror {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $(pub $field: $ty),*
        }
        impl Mirror for $name {
            const FIELDS: &'static [Field] = &[$((
                stringify!($field),
                std::mem::offset_of!($name, $field),
                std::mem::size_of::<$ty>(),
                stringify!($ty),
            )),*];
        }
    };
}

mirror! {
    /// `dense.wgsl`; `lr` is the SGD step's rate where a weight gradient takes it (`UPDATE`).
    DenseP { n_in: u32, n_out: u32, lr: f32 }
}
mirror! {
    /// `conv2d.wgsl`: input `[c_in, h, w]`, `c_out` filters of side `k`, `pad` zeros on each side
    /// and `stride`, output `[c_out, oh, ow]`.
    ConvP { c_in: u32, c_out: u32, h: u32, w: u32, k: u32, lr: f32, pad: u32, stride: u32, oh: u32, ow: u32 }
}
mirror! {
    /// `conv_transpose.wgsl`; `rows_at`: where `weight_and_bias` starts the bias gradient's
    /// slices in the scratch.
    ConvTransposeP { c_in: u32, c_out: u32, h: u32, w: u32, rows_at: u32, lr: f32 }
}
mirror! {
    /// `maxpool.wgsl` and `avgpool.wgsl`: the input `[c, h, w]`.
    PoolP { c: u32, h: u32, w: u32 }
}
mirror! {
    /// `merge.wgsl`: values per sample copied or summed, and where a copy's part starts in a
    /// sample of its source and of its destination, and their sizes.
    MergeP { per: u32, src_at: u32, src_whole: u32, dst_at: u32, dst_whole: u32 }
}
mirror! {
    /// `batchnorm.wgsl`: channels, values per channel of a sample, whether training, and the
    /// running statistics' momentum and the ε added to the variance.
    BatchNormP { c: u32, hw: u32, train: u32, momentum: f32, eps: f32 }
}
mirror! {
    /// `batchnorm_backward.wgsl`.
    BatchNormBackwardP { c: u32, hw: u32 }
}
mirror! {
    /// `activation.wgsl`: elements per sample, and dropout's rate and seed.
    ActP { per: u32, rate: f32, seed: u32 }
}
mirror! {
    /// `loss.wgsl`: classes or elements per sample, whether the gradient is written, the
    /// training batch; the layer a loss runs (its inputs per sample, where its bias starts after
    /// its weights; `pixel_softmax_ce`: the classes in `n_in`), and the SGD step's rate.
    LossP { per: u32, has_grad: u32, batch: u32, n_in: u32, bias_at: u32, lr: f32 }
}
mirror! {
    /// `optim.wgsl`.
    OptimP { len: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, has_grad: u32 }
}
mirror! {
    /// One part of a gather (`Part` in `gather.wgsl`): elements per sample, the image width (for
    /// mirroring), the scale, the kind (0 values, 1 binarized, 2 one-hot rows), the first
    /// mirrored index.
    GatherPart { per: u32, w: u32, scale: f32, kind: u32, mirrored: u32, pad0: u32, pad1: u32, pad2: u32 }
}
mirror! {
    /// `gather.wgsl`: up to two parts (a batch's inputs and its targets).
    GatherP { parts: [GatherPart; 2] }
}
mirror! {
    /// One product's slices in a sum of slices (`Segment` in `reduce.wgsl`).
    Segment { head: [u32; 4], shape: [u32; 4], outs: [u32; 4] }
}

/// Segments of one sum-of-slices launch (`MAX_SEGMENTS` in `reduce.wgsl`).
pub const SEGMENTS: usize = 16;

mirror! {
    /// `reduce.wgsl`: (segments, the optimiser step taken: 0 none, 1 SGD, 2 Adam, its output
    /// binding, its rate as f32 bits), Adam's (β1, β2, ε), and the segments.
    ReduceP { count: [u32; 4], adam: [f32; 4], seg: [Segment; SEGMENTS] }
}

/// `params.$get()` and `params.$get_mut()`: the parameters of one family, which a launch of
/// another family does not have.
macro_rules! accessors {
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty) => {
        pub fn $get(&self) -> &$ty {
            match self {
                Params::$variant(p) => p,
                other => panic!("{other:?} has no {}", stringify!($ty)),
            }
        }
        pub fn $get_mut(&mut self) -> &mut $ty {
            match self {
                Params::$variant(p) => p,
                other => panic!("{other:?} has no {}", stringify!($ty)),
            }
        }
    };
}

/// A launch's parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Params {
    Dense(DenseP),
    Conv(ConvP),
    ConvTranspose(ConvTransposeP),
    Pool(PoolP),
    Act(ActP),
    Loss(LossP),
    Optim(OptimP),
    Gather(GatherP),
    Reduce(Box<ReduceP>),
    Merge(MergeP),
    BatchNorm(BatchNormP),
    BatchNormBackward(BatchNormBackwardP),
}

impl Params {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Params::Dense(p) => bytemuck::bytes_of(p),
            Params::Conv(p) => bytemuck::bytes_of(p),
            Params::ConvTranspose(p) => bytemuck::bytes_of(p),
            Params::Pool(p) => bytemuck::bytes_of(p),
            Params::Act(p) => bytemuck::bytes_of(p),
            Params::Loss(p) => bytemuck::bytes_of(p),
            Params::Optim(p) => bytemuck::bytes_of(p),
            Params::Gather(p) => bytemuck::bytes_of(p),
            Params::Reduce(p) => bytemuck::bytes_of(&**p),
            Params::Merge(p) => bytemuck::bytes_of(p),
            Params::BatchNorm(p) => bytemuck::bytes_of(p),
            Params::BatchNormBackward(p) => bytemuck::bytes_of(p),
        }
    }

    accessors!(dense, dense_mut, Dense, DenseP);
    accessors!(conv, conv_mut, Conv, ConvP);
    accessors!(loss, loss_mut, Loss, LossP);
    accessors!(optim, optim_mut, Optim, OptimP);
    accessors!(gather, gather_mut, Gather, GatherP);
    accessors!(pool, pool_mut, Pool, PoolP);

    /// Sets the SGD step's rate of a product or loss that takes the step.
    pub fn set_lr(&mut self, lr: f32) {
        match self {
            Params::Dense(p) => p.lr = lr,
            Params::Conv(p) => p.lr = lr,
            Params::ConvTranspose(p) => p.lr = lr,
            Params::Loss(p) => p.lr = lr,
            other => panic!("{other:?} takes no SGD step"),
        }
    }
}

/// Storage bindings of a family, numbered from 2 in the order of their WGSL declarations.
macro_rules! slots {
    ($(#[$doc:meta])* $name:ident { $($slot:ident = $wgsl:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name {
            $($slot),*
        }
        impl $name {
            pub const ALL: &'static [($name, &'static str)] = &[$(($name::$slot, $wgsl)),*];
        }
        impl From<$name> for u32 {
            fn from(s: $name) -> u32 {
                s as u32 + 2
            }
        }
    };
}

slots! {
    /// `matmul.wgsl`: the product's operands and result, the weight-gradient slices, and an
    /// epilogue's output and extra input.
    Gemm { A = "a", B = "b", Bias = "bias", C = "c", Part = "part", ActOut = "act_out", ActIn = "act_in" }
}
slots! {
    /// `loss.wgsl`.
    Loss {
        Logits = "logits",
        Truth = "truth",
        Probs = "probs",
        Grad = "grad",
        Metrics = "metrics",
        Aux = "aux",
        LayerX = "layer_x",
        LayerGx = "layer_gx",
        ActGx = "act_gx",
        Layer = "layer",
    }
}
slots! {
    /// `maxpool.wgsl`: with a fused activation's backward, its forward output and its gradient.
    MaxPool { Src = "src", Argmax = "argmax", Dst = "dst", ActIn = "act_in", ActOut = "act_out" }
}
slots! {
    /// `avgpool.wgsl`.
    AvgPool { Src = "src", Dst = "dst" }
}
slots! {
    /// `batchnorm.wgsl`: with a fused activation, its output.
    BatchNorm {
        X = "x",
        Gamma = "gamma",
        Beta = "beta",
        Y = "y",
        Stats = "stats",
        RunningMean = "running_mean",
        RunningVar = "running_var",
        Count = "count",
        ActOut = "act_out",
    }
}
slots! {
    /// `batchnorm_backward.wgsl`.
    BatchNormBackward { X = "x", Gamma = "gamma", Stats = "stats", Gy = "gy", Gx = "gx", GGamma = "ggamma", GBeta = "gbeta" }
}
slots! {
    /// `merge.wgsl`.
    Merge { Src = "src", Other = "other", Dst = "dst" }
}
slots! {
    /// `activation.wgsl`.
    Act { A = "a", B = "b", C = "c", D = "d" }
}
slots! {
    /// `gather.wgsl`.
    Gather { Data0 = "data0", Index = "index", Out0 = "out0", Data1 = "data1", Out1 = "out1" }
}
slots! {
    /// `optim.wgsl`.
    Optim { W = "w", G = "g", M = "m", V = "v" }
}
slots! {
    /// `reduce.wgsl`.
    Reduce { Part = "part", O0 = "o0", O1 = "o1", O2 = "o2", Values = "values", StateM = "state_m", StateV = "state_v" }
}

/// The products' modes (`MODE` in `matmul.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `y = x·w + b`.
    Forward = 0,
    /// The input's gradient.
    DataGrad = 1,
    /// The weight gradient, summed over the batch.
    WeightGrad = 2,
    /// The bias gradient as row sums.
    RowSums = 3,
}

impl Mode {
    pub fn of(code: u32) -> Option<Mode> {
        [Mode::Forward, Mode::DataGrad, Mode::WeightGrad, Mode::RowSums].into_iter().find(|m| *m as u32 == code)
    }
}

/// A mirrored struct: its WGSL name, fields and bytes.
pub type Mirrored = (&'static str, &'static [Field], usize);

/// A family's parameter structs (`P` and the structs inside it) and storage bindings (number,
/// WGSL name), as `tests/shaders.rs` compares them with the WGSL.
pub fn declared(family: Family) -> (Vec<Mirrored>, Vec<(u32, &'static str)>) {
    fn mirror<T: Mirror>(name: &'static str) -> Mirrored {
        (name, T::FIELDS, std::mem::size_of::<T>())
    }
    fn slots<S: Copy + Into<u32>>(all: &[(S, &'static str)]) -> Vec<(u32, &'static str)> {
        all.iter().map(|&(s, name)| (s.into(), name)).collect()
    }
    match family {
        Family::Gather => (vec![mirror::<GatherP>("P"), mirror::<GatherPart>("Part")], slots(Gather::ALL)),
        Family::Dense => (vec![mirror::<DenseP>("P")], slots(Gemm::ALL)),
        Family::Conv2d => (vec![mirror::<ConvP>("P")], slots(Gemm::ALL)),
        Family::ConvTranspose => (vec![mirror::<ConvTransposeP>("P")], slots(Gemm::ALL)),
        Family::MaxPool => (vec![mirror::<PoolP>("P")], slots(MaxPool::ALL)),
        Family::AvgPool => (vec![mirror::<PoolP>("P")], slots(AvgPool::ALL)),
        Family::Activation => (vec![mirror::<ActP>("P")], slots(Act::ALL)),
        Family::Loss => (vec![mirror::<LossP>("P")], slots(Loss::ALL)),
        Family::Optim => (vec![mirror::<OptimP>("P")], slots(Optim::ALL)),
        Family::Reduce => (vec![mirror::<ReduceP>("P"), mirror::<Segment>("Segment")], slots(Reduce::ALL)),
        Family::Merge => (vec![mirror::<MergeP>("P")], slots(Merge::ALL)),
        Family::BatchNorm => (vec![mirror::<BatchNormP>("P")], slots(BatchNorm::ALL)),
        Family::BatchNormBackward => (vec![mirror::<BatchNormBackwardP>("P")], slots(BatchNormBackward::ALL)),
    }
}
