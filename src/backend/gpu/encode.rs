//! What each op asks of the device: kernels, their parameters, buffers and dispatch sizes.
//! Pure data, built once per op list; `n` (the batch) is applied when a step is recorded.

use super::bindings::{
    self, ActP, BatchNormBackwardP, BatchNormP, ConvP, ConvTransposeP, DenseP, Gather, GatherP, GatherPart, Gemm,
    LossP, Merge, MergeP, Mode, OptimP, Params, PoolP,
};
use super::shaders::{self, Family, Kernel};
use crate::graph::{BufDesc, BufId, ConvGeom, Op, OpKind};
use crate::model::Act;

/// A count that may grow with the batch: `per_n·n + fixed`.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub per_n: u32,
    pub fixed: u32,
}

impl Size {
    pub(super) fn fixed(v: usize) -> Self {
        Size { per_n: 0, fixed: v as u32 }
    }
    pub(super) fn per_n(v: usize) -> Self {
        Size { per_n: v as u32, fixed: 0 }
    }
    pub fn at(self, n: usize) -> u32 {
        self.per_n * n as u32 + self.fixed
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Grid {
    /// One thread per element, in 256-wide workgroups.
    Flat(Size),
    /// `tm × tn` tiles of an `m × n` product, `z` deep.
    Tiles { m: Size, n: Size, z: Size, tm: u32, tn: u32 },
    /// One workgroup per element.
    PerElement(Size),
    /// `per` workgroups for each batch of `batch` samples in the step (the last may be short).
    Batches { batch: u32, per: u32 },
    /// One workgroup.
    Single,
}

impl Grid {
    /// Workgroup counts for a batch of `n`; 1-D dispatches fold into y above 65535 groups.
    pub fn groups(self, n: usize) -> [u32; 3] {
        match self {
            Grid::Flat(s) => fold(s.at(n).div_ceil(256).max(1)),
            Grid::PerElement(s) => fold(s.at(n).max(1)),
            Grid::Batches { batch, per } => fold((n as u32).div_ceil(batch) * per),
            Grid::Tiles { m, n: cols, z, tm, tn } => [cols.at(n).div_ceil(tn), m.at(n).div_ceil(tm), z.at(n)],
            Grid::Single => [1, 1, 1],
        }
    }
}

/// `g` workgroups, folded into y above 65535.
fn fold(g: u32) -> [u32; 3] {
    if g <= 65535 {
        [g, 1, 1]
    } else {
        [65535, g.div_ceil(65535), 1]
    }
}

/// A buffer for binding `slot` (2..); slots not listed get a dummy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    Buf(BufId),
    /// From the start of the first buffer to the end of the last, of one parameter set.
    Span(BufId, BufId),
    /// The backend's weight-gradient scratch.
    Scratch,
}

#[derive(Clone, Debug)]
pub struct Launch {
    pub kernel: Kernel,
    pub params: Params,
    pub binds: Vec<(u32, Bind)>,
    pub grid: Grid,
    /// Scratch floats this launch needs, and where they start in the scratch buffer.
    pub scratch: usize,
    pub scratch_at: usize,
    /// For a sum of slices: the products whose slices it adds.
    pub sums: Vec<Slices>,
    /// The op of the list it runs (its unit's first where it runs several).
    pub op: usize,
}

/// One product's weight-gradient slices (see `reduce.wgsl`), to be added into `w` (and the
/// bias column into `bias`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slices {
    /// Elements of the result, bias column included.
    pub(super) len: usize,
    pub(super) splits: u32,
    /// Columns of the weight gradient (the bias column not counted).
    pub(super) cols: usize,
    pub(super) w: BufId,
    pub(super) bias: Option<BufId>,
    /// Where the slices start in the scratch buffer: from the start of the region of the
    /// launch that writes them until `place_scratch` places that region.
    pub(super) at: usize,
}

impl Slices {
    /// The gradients it adds up: the weights' and the bias's, if any.
    pub(super) fn outputs(&self) -> impl Iterator<Item = BufId> {
        std::iter::once(self.w).chain(self.bias)
    }
}

pub(super) fn launch(kernel: Kernel, params: Params, binds: &[(u32, Bind)], grid: Grid) -> Launch {
    Launch { kernel, params, binds: binds.to_vec(), grid, scratch: 0, scratch_at: 0, sums: Vec::new(), op: 0 }
}

pub(super) fn buf(slot: impl Into<u32>, id: BufId) -> (u32, Bind) {
    (slot.into(), Bind::Buf(id))
}

/// Weight-gradient slices for a reduction of up to `k_max` terms: a power of two, about 128
/// terms per slice, at most 512, so that long sums spread over many workgroups; the slices are
/// then added by one workgroup per element.
pub(super) fn splits(k_max: usize) -> u32 {
    let s = (k_max / 128).clamp(1, 512) as u32;
    let s = 1 << s.ilog2();
    debug_assert!(shaders::SPLITS.contains(&s));
    s
}

/// Tile sides for an `m × n` result, `z` deep: 64 where a dimension is long enough, narrowed to
/// 16 while the grid would have fewer workgroups than a large GPU has cores.
fn tiles(m: usize, n: usize, z: usize) -> (u32, u32) {
    let side = |len: usize| if len <= 32 { 16 } else { 64 };
    let (mut tm, mut tn) = (side(m), side(n));
    let groups = |tm: u32, tn: u32| m.div_ceil(tm as usize) * n.div_ceil(tn as usize) * z;
    while groups(tm, tn) < 128 && tm.max(tn) == 64 {
        if tm >= tn {
            tm = 16;
        } else {
            tn = 16;
        }
    }
    (tm, tn)
}

/// A plain product `M × N`, `z` deep, sized for the tiles at the largest batch `max_n`.
pub(super) fn product(
    family: Family,
    mode: Mode,
    params: &Params,
    binds: &[(u32, Bind)],
    (m, n, z): (Size, Size, Size),
    max_n: usize,
) -> Launch {
    let (tm, tn) = tiles(m.at(max_n) as usize, n.at(max_n) as usize, z.at(max_n) as usize);
    launch(shaders::gemm(family, mode, 0, (tm, tn)), params.clone(), binds, Grid::Tiles { m, n, z, tm, tn })
}

/// Sums over the batch into `out`, in slices, then the slices added in order by a launch that
/// [`combine_sums`] merges with the step's other such launches: the weight
/// gradient (`b` given: `out[m, n] = Σ_k a[m, k]·b[k, n]`, with the bias gradient `Σ_k a[m, k]`
/// into `bias` as one more column, if given) or the bias gradient (`out[m] = Σ_k a[m, k]`).
/// `k_max` is the number of terms at the largest batch. One slice is written straight to `out`.
pub(super) fn batch_sum(
    family: Family,
    params: &Params,
    (a, b, bias): (BufId, Option<BufId>, Option<BufId>),
    out: BufId,
    (m, n, k_max): (usize, usize, usize),
) -> Vec<Launch> {
    let s = splits(k_max);
    let z = Size::fixed(s as usize);
    let dest = if s == 1 { buf(Gemm::C, out) } else { (Gemm::Part.into(), Bind::Scratch) };
    let cols = n + usize::from(bias.is_some());
    let with_bias = |k: Kernel| if bias.is_some() { k.with("BIAS_COL", 1) } else { k };
    let mut sum = match b {
        Some(b) => {
            let (tm, tn) = tiles(m, cols, s as usize);
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(cols), z, tm, tn };
            let mut binds = vec![buf(Gemm::A, a), buf(Gemm::B, b), dest];
            binds.extend(bias.filter(|_| s == 1).map(|g| buf(Gemm::Bias, g)));
            launch(with_bias(shaders::gemm(family, Mode::WeightGrad, s, (tm, tn))), params.clone(), &binds, grid)
        }
        None => {
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(1), z, tm: 1, tn: 1 };
            launch(shaders::row_sums(family, s), params.clone(), &[buf(Gemm::B, a), dest], grid)
        }
    };
    if s == 1 {
        return vec![sum];
    }
    sum.scratch = s as usize * m * cols;
    let part = (bindings::Reduce::Part.into(), Bind::Scratch);
    let mut reduce =
        launch(Kernel::new(Family::Reduce, "sum_slices"), Params::Reduce(Box::default()), &[part], Grid::Single);
    reduce.sums = vec![Slices { len: m * cols, splits: s, cols: n, w: out, bias, at: 0 }];
    vec![sum, reduce]
}

/// A transposed convolution's weight gradient and bias gradient, both summed in slices
/// ([`batch_sum`]), as one launch of both (`weight_and_bias`) and one sum of their slices;
/// `None` when either goes straight to its gradient.
fn weight_and_bias(weight: &[Launch], bias: &[Launch], c_out: usize) -> Option<Vec<Launch>> {
    let ([product, weight_sum], [rows, bias_sum]) = (weight, bias) else {
        return None;
    };
    let Grid::Tiles { m, n, z, tm, tn } = product.grid else {
        return None;
    };
    let row_splits = rows.kernel.constant("SPLITS")?;
    let tiles = m.at(0).div_ceil(tm) * n.at(0).div_ceil(tn) * z.at(0);
    let mut both = product.clone();
    both.kernel = shaders::weight_and_bias(product.kernel.clone(), row_splits);
    match &mut both.params {
        Params::ConvTranspose(p) => p.rows_at = product.scratch as u32,
        other => panic!("{other:?}: not a transposed convolution's"),
    }
    both.grid = Grid::PerElement(Size::fixed(tiles as usize + c_out * row_splits as usize));
    both.scratch = product.scratch + rows.scratch;
    let mut sums = weight_sum.clone();
    sums.sums.extend(bias_sum.sums.iter().map(|s| Slices { at: product.scratch, ..*s }));
    Some(vec![both, sums])
}

/// A gather launch with one part.
fn gather(part: GatherPart, data: BufId, index: BufId, out: BufId) -> Launch {
    let binds = [buf(Gather::Data0, data), buf(Gather::Index, index), buf(Gather::Out0, out)];
    let params = Params::Gather(GatherP { parts: [part, GatherPart::default()] });
    launch(Kernel::new(Family::Gather, "gather"), params, &binds, Grid::Flat(Size::per_n(part.per as usize)))
}

fn act_code(act: Act) -> u32 {
    match act {
        Act::Relu => 0,
        Act::Sigmoid => 1,
        Act::Tanh => 2,
        Act::LeakyRelu => 3,
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
}

/// A launch that copies each sample's `per` values from `src` (at `from.0` of `from.1`) to
/// `dst` (at `to.0` of `to.1`).
fn merge_part(src: BufId, dst: BufId, per: usize, from: (usize, usize), to: (usize, usize)) -> Launch {
    let [per32, src_at, src_whole, dst_at, dst_whole] = [per, from.0, from.1, to.0, to.1].map(|v| v as u32);
    launch(
        Kernel::new(Family::Merge, "part"),
        Params::Merge(MergeP { per: per32, src_at, src_whole, dst_at, dst_whole }),
        &[buf(Merge::Src, src), buf(Merge::Dst, dst)],
        Grid::Flat(Size::per_n(per)),
    )
}

fn conv_params(g: &ConvGeom) -> Params {
    let (oh, ow) = g.out();
    let [c_in, c_out, h, w, k, pad, stride, oh, ow] =
        [g.c_in, g.c_out, g.h, g.w, g.k, g.pad, g.stride, oh, ow].map(|v| v as u32);
    Params::Conv(ConvP { c_in, c_out, h, w, k, lr: 0.0, pad, stride, oh, ow })
}

fn conv_transpose_params(g: &ConvGeom) -> Params {
    let [c_in, c_out, h, w] = [g.c_in, g.c_out, g.h, g.w].map(|v| v as u32);
    Params::ConvTranspose(ConvTransposeP { c_in, c_out, h, w, rows_at: 0, lr: 0.0 })
}

fn pool_params(shape: &crate::model::Shape) -> Params {
    Params::Pool(PoolP { c: shape.c as u32, h: shape.h as u32, w: shape.w as u32 })
}

fn act_params(per: usize) -> Params {
    Params::Act(ActP { per: per as u32, rate: 0.0, seed: 0 })
}

/// The launches that run `op`; `descs` size the weight-gradient splits by the largest batch.
pub fn encode(op: &Op, descs: &[BufDesc]) -> Vec<Launch> {
    let max_n = |id: BufId, per: usize| descs[id.0].len / per;
    match op.kind() {
        OpKind::Product => encode_product(op, &max_n),
        OpKind::Loss | OpKind::Update => encode_loss_or_update(op, &max_n),
        OpKind::Elementwise => encode_elementwise(op),
    }
}

/// A product's launches; `max_n(buffer, per)` is the most samples `buffer` holds.
fn encode_product(op: &Op, max_n: &dyn Fn(BufId, usize) -> usize) -> Vec<Launch> {
    match *op {
        Op::Dense { x, w, b, y, n_in, n_out } => {
            let dims = (Size::per_n(1), Size::fixed(n_out), Size::fixed(1));
            let binds = [buf(Gemm::A, x), buf(Gemm::B, w), buf(Gemm::Bias, b), buf(Gemm::C, y)];
            let p = dense_params(n_in, n_out);
            vec![product(Family::Dense, Mode::Forward, &p, &binds, dims, max_n(x, n_in))]
        }
        Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out } => {
            let (p, batch) = (dense_params(n_in, n_out), max_n(gy, n_out));
            let mut out = batch_sum(Family::Dense, &p, (gy, Some(x), Some(gb)), gw, (n_out, n_in, batch));
            out.extend(gx.map(|gx| {
                let dims = (Size::per_n(1), Size::fixed(n_in), Size::fixed(1));
                let binds = [buf(Gemm::A, gy), buf(Gemm::B, w), buf(Gemm::C, gx)];
                product(Family::Dense, Mode::DataGrad, &p, &binds, dims, batch)
            }));
            out
        }
        Op::Conv2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out), Size::fixed(g.out().0 * g.out().1), Size::per_n(1));
            let binds = [buf(Gemm::A, w), buf(Gemm::B, x), buf(Gemm::Bias, b), buf(Gemm::C, y)];
            let batch = max_n(x, g.c_in * g.h * g.w);
            vec![product(Family::Conv2d, Mode::Forward, &conv_params(g), &binds, dims, batch)]
        }
        Op::Conv2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw, r, q) = (conv_params(g), g.h * g.w, g.k * g.k, g.out().0 * g.out().1);
            let batch = max_n(gy, g.c_out * q);
            let sizes = (g.c_out, g.c_in * r, batch * q);
            let mut out = batch_sum(Family::Conv2d, &p, (gy, Some(x), Some(gb)), gw, sizes);
            out.extend(gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                let binds = [buf(Gemm::A, w), buf(Gemm::B, gy), buf(Gemm::C, gx)];
                product(Family::Conv2d, Mode::DataGrad, &p, &binds, dims, batch)
            }));
            out
        }
        Op::ConvTranspose2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out * 4), Size::fixed(g.h * g.w), Size::per_n(1));
            let binds = [buf(Gemm::A, w), buf(Gemm::B, x), buf(Gemm::Bias, b), buf(Gemm::C, y)];
            let batch = max_n(x, g.c_in * g.h * g.w);
            vec![product(Family::ConvTranspose, Mode::Forward, &conv_transpose_params(g), &binds, dims, batch)]
        }
        Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw) = (conv_transpose_params(g), g.h * g.w);
            let batch = max_n(gy, g.c_out * 4 * hw);
            let weight =
                batch_sum(Family::ConvTranspose, &p, (x, Some(gy), None), gw, (g.c_in, g.c_out * 4, batch * hw));
            let bias = batch_sum(Family::ConvTranspose, &p, (gy, None, None), gb, (g.c_out, 1, batch * 4 * hw));
            let mut out = weight_and_bias(&weight, &bias, g.c_out).unwrap_or_else(|| [weight, bias].concat());
            out.extend(gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                let binds = [buf(Gemm::A, w), buf(Gemm::B, gy), buf(Gemm::C, gx)];
                product(Family::ConvTranspose, Mode::DataGrad, &p, &binds, dims, batch)
            }));
            out
        }
        _ => unreachable!("{op:?} is not encoded here"),
    }
}

/// Gathers, poolings, activations and dropout: one launch each.
fn encode_elementwise(op: &Op) -> Vec<Launch> {
    use bindings::{Act as A, AvgPool, MaxPool};
    let pool = |(family, entry), shape: &crate::model::Shape, per: usize, binds: &[(u32, Bind)]| {
        vec![launch(Kernel::new(family, entry), pool_params(shape), binds, Grid::Flat(Size::per_n(per)))]
    };
    match *op {
        Op::Gather { data, index, out, shape, scale, binarize, mirrored } => {
            let (per, w, kind, mirrored) = (shape.len() as u32, shape.w as u32, binarize.into(), mirrored as u32);
            vec![gather(GatherPart { per, w, scale, kind, mirrored, ..Default::default() }, data, index, out)]
        }
        Op::GatherOneHot { labels, index, out, classes } => {
            vec![gather(GatherPart { per: classes as u32, kind: 2, ..Default::default() }, labels, index, out)]
        }
        Op::MaxPool2d { x, y, argmax, ref shape } => {
            let binds = [buf(MaxPool::Src, x), buf(MaxPool::Argmax, argmax), buf(MaxPool::Dst, y)];
            pool((Family::MaxPool, "forward"), shape, shape.c * (shape.h / 2) * (shape.w / 2), &binds)
        }
        Op::MaxPool2dBackward { gy, argmax, gx, ref shape } => {
            let binds = [buf(MaxPool::Src, gy), buf(MaxPool::Argmax, argmax), buf(MaxPool::Dst, gx)];
            pool((Family::MaxPool, "backward"), shape, shape.len(), &binds)
        }
        Op::AvgPool2d { x, y, ref shape } => {
            let binds = [buf(AvgPool::Src, x), buf(AvgPool::Dst, y)];
            pool((Family::AvgPool, "forward"), shape, shape.c * (shape.h / 2) * (shape.w / 2), &binds)
        }
        Op::AvgPool2dBackward { gy, gx, ref shape } => {
            pool((Family::AvgPool, "backward"), shape, shape.len(), &[buf(AvgPool::Src, gy), buf(AvgPool::Dst, gx)])
        }
        Op::Concat { a, b, y, per_a, per_b } => {
            let whole = per_a + per_b;
            vec![merge_part(a, y, per_a, (0, per_a), (0, whole)), merge_part(b, y, per_b, (0, per_b), (per_a, whole))]
        }
        Op::ConcatBackward { gy, ga, gb, per_a, per_b } => {
            let whole = per_a + per_b;
            let a = ga.map(|ga| merge_part(gy, ga, per_a, (0, whole), (0, per_a)));
            let b = gb.map(|gb| merge_part(gy, gb, per_b, (per_a, whole), (0, per_b)));
            a.into_iter().chain(b).collect()
        }
        Op::BatchNorm { x, gamma, beta, y, stats, running: [mean, var, count], c, hw, train, momentum, eps } => {
            use bindings::BatchNorm as S;
            let (c32, hw32, train) = (c as u32, hw as u32, train.into());
            let params = Params::BatchNorm(BatchNormP { c: c32, hw: hw32, train, momentum, eps });
            let statistics = [
                buf(S::X, x),
                buf(S::Stats, stats),
                buf(S::RunningMean, mean),
                buf(S::RunningVar, var),
                buf(S::Count, count),
            ];
            let normalize =
                [buf(S::X, x), buf(S::Gamma, gamma), buf(S::Beta, beta), buf(S::Stats, stats), buf(S::Y, y)];
            vec![
                launch(
                    Kernel::new(Family::BatchNorm, "statistics"),
                    params.clone(),
                    &statistics,
                    Grid::PerElement(Size::fixed(c)),
                ),
                launch(
                    Kernel::new(Family::BatchNorm, "normalize"),
                    params,
                    &normalize,
                    Grid::Flat(Size::per_n(c * hw)),
                ),
            ]
        }
        Op::BatchNormBackward { x, gamma, stats, gy, gx, ggamma, gbeta, c, hw } => {
            use bindings::BatchNormBackward as S;
            let params = Params::BatchNormBackward(BatchNormBackwardP { c: c as u32, hw: hw as u32 });
            let (g, b) = (buf(S::GGamma, ggamma), buf(S::GBeta, gbeta));
            let sums = [buf(S::X, x), buf(S::Stats, stats), buf(S::Gy, gy), g, b];
            let mut out = vec![launch(
                Kernel::new(Family::BatchNormBackward, "sums"),
                params.clone(),
                &sums,
                Grid::PerElement(Size::fixed(c)),
            )];
            if let Some(gx) = gx {
                let binds =
                    [buf(S::X, x), buf(S::Gamma, gamma), buf(S::Stats, stats), buf(S::Gy, gy), buf(S::Gx, gx), g, b];
                out.push(launch(
                    Kernel::new(Family::BatchNormBackward, "input"),
                    params,
                    &binds,
                    Grid::Flat(Size::per_n(c * hw)),
                ));
            }
            out
        }
        Op::Upsample2d { x, y, ref shape } => {
            let k = (Family::AvgPool, "backward");
            let mut l = pool(k, shape, shape.len(), &[buf(AvgPool::Src, x), buf(AvgPool::Dst, y)]);
            l[0].kernel = l[0].kernel.clone().with("WHOLE", 1);
            l
        }
        Op::Upsample2dBackward { gy, gx, ref shape } => {
            let (k, per) = ((Family::AvgPool, "forward"), shape.c * (shape.h / 2) * (shape.w / 2));
            let mut l = pool(k, shape, per, &[buf(AvgPool::Src, gy), buf(AvgPool::Dst, gx)]);
            l[0].kernel = l[0].kernel.clone().with("WHOLE", 1);
            l
        }
        Op::SumBackward { gy, ga, gb, per } => {
            [ga, gb].into_iter().flatten().map(|g| merge_part(gy, g, per, (0, per), (0, per))).collect()
        }
        Op::Sum { a, b, y, per } => vec![launch(
            Kernel::new(Family::Merge, "sum"),
            Params::Merge(MergeP { per: per as u32, ..Default::default() }),
            &[buf(Merge::Src, a), buf(Merge::Other, b), buf(Merge::Dst, y)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::Activation { act, x, y, per } => vec![launch(
            Kernel::new(Family::Activation, "forward").with("ACT", act_code(act)),
            act_params(per),
            &[buf(A::A, x), buf(A::C, y)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::ActivationBackward { act, y, gy, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "backward").with("ACT", act_code(act)),
            act_params(per),
            &[buf(A::A, y), buf(A::B, gy), buf(A::C, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::Dropout { x, y, mask, per, rate, seed } => vec![launch(
            Kernel::new(Family::Activation, "dropout"),
            Params::Act(ActP { per: per as u32, rate, seed }),
            &[buf(A::A, x), buf(A::C, y), buf(A::D, mask)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::DropoutBackward { gy, mask, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "dropout_backward"),
            act_params(per),
            &[buf(A::A, mask), buf(A::B, gy), buf(A::C, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        _ => unreachable!("{op:?} is not encoded here"),
    }
}

/// Losses, penalties, confusion counts and optimiser updates.
fn encode_loss_or_update(op: &Op, max_n: &dyn Fn(BufId, usize) -> usize) -> Vec<Launch> {
    use bindings::{Loss as L, Optim as O};
    match *op {
        Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes, batch } => {
            vec![loss("softmax_ce", (classes, batch), logits, target, probs, grad, metrics)]
        }
        Op::SigmoidBce { logits, target, probs, grad, metrics, per, batch } => {
            let mut each = loss("sigmoid_bce", (per, batch), logits, target, probs, grad, metrics);
            each.binds.push((L::Aux.into(), Bind::Scratch));
            let groups = (batch * per).div_ceil(256);
            each.grid = Grid::Batches { batch: batch as u32, per: groups as u32 };
            each.scratch = 4 * max_n(logits, per).div_ceil(batch) * groups;
            let mut total = loss("sigmoid_bce_total", (per, batch), logits, target, probs, grad, metrics);
            total.binds = vec![buf(L::Metrics, metrics), (L::Aux.into(), Bind::Scratch)];
            vec![each, total]
        }
        Op::PixelSoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes, per, batch } => {
            let mut each = loss("pixel_softmax_ce", (per, batch), logits, target, probs, grad, metrics);
            if let Params::Loss(p) = &mut each.params {
                p.n_in = classes as u32;
            }
            each.binds.push((L::Aux.into(), Bind::Scratch));
            let groups = (batch * per).div_ceil(256);
            each.grid = Grid::Batches { batch: batch as u32, per: groups as u32 };
            each.scratch = (1 + 3 * classes) * max_n(logits, classes * per).div_ceil(batch) * groups;
            let mut total = each.clone();
            total.kernel = Kernel::new(Family::Loss, "pixel_softmax_ce_total");
            total.binds = vec![buf(L::Metrics, metrics), (L::Aux.into(), Bind::Scratch)];
            total.grid = Grid::Single;
            total.scratch = 0;
            vec![each, total]
        }
        Op::Confusion { probs, target, counts, classes } => vec![launch(
            Kernel::new(Family::Loss, "confusion"),
            Params::Loss(LossP { per: classes as u32, ..Default::default() }),
            &[buf(L::Logits, counts), buf(L::Truth, target), buf(L::Probs, probs)],
            Grid::Single,
        )],
        Op::L2 { w, grad, metrics, lambda, len } => {
            let mut binds = vec![buf(O::W, w), buf(O::M, metrics)];
            binds.extend(grad.map(|g| buf(O::G, g)));
            let p = OptimP { len: len as u32, lr: lambda, has_grad: grad.is_some().into(), ..Default::default() };
            vec![launch(Kernel::new(Family::Optim, "l2"), Params::Optim(p), &binds, Grid::Single)]
        }
        Op::Sgd { w, g, lr, len } => {
            let p = OptimP { len: len as u32, lr, ..Default::default() };
            vec![update("sgd", p, &[buf(O::W, w), buf(O::G, g)])]
        }
        Op::Momentum { w, g, v, lr, momentum, len } => {
            let p = OptimP { len: len as u32, lr, beta1: momentum, ..Default::default() };
            vec![update("momentum", p, &[buf(O::W, w), buf(O::G, g), buf(O::M, v)])]
        }
        Op::Adam { w, g, m, v, lr, beta1, beta2, eps, len } => {
            let p = OptimP { len: len as u32, lr, beta1, beta2, eps, has_grad: 0 };
            vec![update("adam", p, &[buf(O::W, w), buf(O::G, g), buf(O::M, m), buf(O::V, v)])]
        }
        _ => unreachable!("{op:?} is not encoded here"),
    }
}

fn dense_params(n_in: usize, n_out: usize) -> Params {
    Params::Dense(DenseP { n_in: n_in as u32, n_out: n_out as u32, lr: 0.0 })
}

/// A loss launch: `(per, batch)` as in `loss.wgsl`'s `P` (its layer's fields left 0).
fn loss(
    entry: &'static str,
    (per, batch): (usize, usize),
    logits: BufId,
    target: BufId,
    probs: BufId,
    grad: Option<BufId>,
    metrics: BufId,
) -> Launch {
    use bindings::Loss as L;
    let mut binds = vec![buf(L::Logits, logits), buf(L::Truth, target), buf(L::Probs, probs), buf(L::Metrics, metrics)];
    binds.extend(grad.map(|g| buf(L::Grad, g)));
    let p = LossP { per: per as u32, has_grad: grad.is_some().into(), batch: batch as u32, ..Default::default() };
    launch(Kernel::new(Family::Loss, entry), Params::Loss(p), &binds, Grid::Single)
}

pub(super) fn update(entry: &'static str, p: OptimP, binds: &[(u32, Bind)]) -> Launch {
    let grid = Grid::Flat(Size::fixed(p.len as usize));
    launch(Kernel::new(Family::Optim, entry), Params::Optim(p), binds, grid)
}
