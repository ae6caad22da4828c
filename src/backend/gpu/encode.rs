//! What each op asks of the device: kernels, their parameters, buffers and dispatch sizes.
//! Pure data, built once per op list; `n` (the batch) is applied when a step is recorded.

use super::shaders::{self, Family, Kernel};
use crate::graph::{BufDesc, BufId, ConvGeom, Op};
use crate::model::Act;

/// A count that may grow with the batch: `per_n·n + fixed`.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub per_n: u32,
    pub fixed: u32,
}

impl Size {
    fn fixed(v: usize) -> Self {
        Size { per_n: 0, fixed: v as u32 }
    }
    fn per_n(v: usize) -> Self {
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
    /// One workgroup.
    Single,
}

impl Grid {
    /// Workgroup counts for a batch of `n`; 1-D dispatches fold into y above 65535 groups.
    pub fn groups(self, n: usize) -> [u32; 3] {
        match self {
            Grid::Flat(s) => {
                let g = s.at(n).div_ceil(256).max(1);
                if g <= 65535 {
                    [g, 1, 1]
                } else {
                    [65535, g.div_ceil(65535), 1]
                }
            }
            Grid::Tiles { m, n: cols, z, tm, tn } => [cols.at(n).div_ceil(tn), m.at(n).div_ceil(tm), z.at(n)],
            Grid::Single => [1, 1, 1],
        }
    }
}

/// A buffer for binding `slot` (2..); slots not listed get a dummy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    Buf(BufId),
    /// The backend's weight-gradient scratch.
    Scratch,
}

#[derive(Clone, Debug)]
pub struct Launch {
    pub kernel: Kernel,
    /// The family's `P` struct, every field 4 bytes (f32 as bits).
    pub params: Vec<u32>,
    pub binds: Vec<(u32, Bind)>,
    pub grid: Grid,
    /// Scratch floats this launch needs.
    pub scratch: usize,
}

fn launch(kernel: Kernel, params: Vec<u32>, binds: &[(u32, Bind)], grid: Grid) -> Launch {
    Launch { kernel, params, binds: binds.to_vec(), grid, scratch: 0 }
}

fn buf(slot: u32, id: BufId) -> (u32, Bind) {
    (slot, Bind::Buf(id))
}

const A: u32 = 2;
const B: u32 = 3;
const BIAS: u32 = 4;
const C: u32 = 5;
const PART: u32 = 6;

/// Weight-gradient slices for a reduction of up to `k_max` terms: a power of two, about 256
/// terms per slice, at most 64.
fn splits(k_max: usize) -> u32 {
    let s = (k_max / 256).clamp(1, 64) as u32;
    let s = 1 << s.ilog2();
    debug_assert!(shaders::SPLITS.contains(&s));
    s
}

/// The tile side for a dimension of at most `len`: 16 for small ones, else 64.
fn tile(len: usize) -> u32 {
    if len <= 32 {
        16
    } else {
        64
    }
}

/// A plain product `M × N`, `z` deep; `max_m` bounds M when it grows with the batch.
fn product(
    family: Family,
    mode: u32,
    params: &[u32],
    binds: &[(u32, Bind)],
    (m, n, z): (Size, Size, Size),
    max_m: usize,
) -> Launch {
    let (tm, tn) = (tile(max_m), tile(n.fixed as usize));
    launch(shaders::gemm(family, mode, 0, (tm, tn)), params.to_vec(), binds, Grid::Tiles { m, n, z, tm, tn })
}

/// Sums over the batch into `out`, in slices, then the slices added in order: the weight
/// gradient (`b` given: `out[m, n] = Σ_k a[m, k]·b[k, n]`) or the bias gradient (`out[m] =
/// Σ_k a[m, k]`). `k_max` is the number of terms at the largest batch.
fn batch_sum(
    family: Family,
    params: &[u32],
    a: BufId,
    b: Option<BufId>,
    out: BufId,
    (m, n, k_max): (usize, usize, usize),
) -> [Launch; 2] {
    let s = splits(k_max);
    let z = Size::fixed(s as usize);
    let (mut sum, mode) = match b {
        Some(b) => {
            let (tm, tn) = (tile(m), tile(n));
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(n), z, tm, tn };
            let binds = [buf(A, a), buf(B, b), (PART, Bind::Scratch)];
            (launch(shaders::gemm(family, 2, s, (tm, tn)), params.to_vec(), &binds, grid), 2)
        }
        None => {
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(1), z, tm: 1, tn: 1 };
            (launch(shaders::row_sums(family, s), params.to_vec(), &[buf(A, a), (PART, Bind::Scratch)], grid), 3)
        }
    };
    sum.scratch = s as usize * m * n;
    let reduce = launch(
        shaders::reduce(family, mode, s),
        params.to_vec(),
        &[(PART, Bind::Scratch), buf(C, out)],
        Grid::Flat(Size::fixed(m * n)),
    );
    [sum, reduce]
}

fn act_code(act: Act) -> u32 {
    match act {
        Act::Relu => 0,
        Act::Sigmoid => 1,
        Act::Tanh => 2,
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
}

fn conv_params(g: &ConvGeom, with_k: bool) -> Vec<u32> {
    let mut p = vec![g.c_in as u32, g.c_out as u32, g.h as u32, g.w as u32];
    if with_k {
        p.push(g.k as u32);
    }
    p
}

/// The launches that run `op`; `descs` size the weight-gradient splits by the largest batch.
pub fn encode(op: &Op, descs: &[BufDesc]) -> Vec<Launch> {
    let max_n = |id: BufId, per: usize| descs[id.0].len / per;
    match *op {
        Op::Gather { data, index, out, shape, scale, binarize, mirrored } => vec![launch(
            Kernel::new(Family::Gather, "gather"),
            vec![shape.len() as u32, shape.w as u32, scale.to_bits(), binarize.into(), mirrored as u32],
            &[buf(2, data), buf(3, index), buf(4, out)],
            Grid::Flat(Size::per_n(shape.len())),
        )],
        Op::GatherOneHot { labels, index, out, classes } => vec![launch(
            Kernel::new(Family::Gather, "one_hot"),
            vec![classes as u32, 0, 0, 0, 0],
            &[buf(2, labels), buf(3, index), buf(4, out)],
            Grid::Flat(Size::per_n(classes)),
        )],
        Op::Dense { x, w, b, y, n_in, n_out } => {
            let dims = (Size::per_n(1), Size::fixed(n_out), Size::fixed(1));
            let binds = [buf(A, x), buf(B, w), buf(BIAS, b), buf(C, y)];
            vec![product(Family::Dense, 0, &[n_in as u32, n_out as u32], &binds, dims, max_n(x, n_in))]
        }
        Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out } => {
            let (p, batch) = ([n_in as u32, n_out as u32], max_n(gy, n_out));
            let data = gx.map(|gx| {
                let dims = (Size::per_n(1), Size::fixed(n_in), Size::fixed(1));
                product(Family::Dense, 1, &p, &[buf(A, gy), buf(B, w), buf(C, gx)], dims, batch)
            });
            let mut out: Vec<Launch> = data.into_iter().collect();
            out.extend(batch_sum(Family::Dense, &p, gy, Some(x), gw, (n_out, n_in, batch)));
            out.extend(batch_sum(Family::Dense, &p, gy, None, gb, (n_out, 1, batch)));
            out
        }
        Op::Conv2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out), Size::fixed(g.h * g.w), Size::per_n(1));
            let binds = [buf(A, w), buf(B, x), buf(BIAS, b), buf(C, y)];
            vec![product(Family::Conv2d, 0, &conv_params(g, true), &binds, dims, g.c_out)]
        }
        Op::Conv2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw, r) = (conv_params(g, true), g.h * g.w, g.k * g.k);
            let terms = max_n(gy, g.c_out * hw) * hw;
            let data = gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                product(Family::Conv2d, 1, &p, &[buf(A, w), buf(B, gy), buf(C, gx)], dims, g.c_in)
            });
            let mut out: Vec<Launch> = data.into_iter().collect();
            out.extend(batch_sum(Family::Conv2d, &p, gy, Some(x), gw, (g.c_out, g.c_in * r, terms)));
            out.extend(batch_sum(Family::Conv2d, &p, gy, None, gb, (g.c_out, 1, terms)));
            out
        }
        Op::ConvTranspose2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out * 4), Size::fixed(g.h * g.w), Size::per_n(1));
            let binds = [buf(A, w), buf(B, x), buf(BIAS, b), buf(C, y)];
            vec![product(Family::ConvTranspose, 0, &conv_params(g, false), &binds, dims, g.c_out * 4)]
        }
        Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw) = (conv_params(g, false), g.h * g.w);
            let batch = max_n(gy, g.c_out * 4 * hw);
            let data = gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                product(Family::ConvTranspose, 1, &p, &[buf(A, w), buf(B, gy), buf(C, gx)], dims, g.c_in)
            });
            let mut out: Vec<Launch> = data.into_iter().collect();
            out.extend(batch_sum(Family::ConvTranspose, &p, x, Some(gy), gw, (g.c_in, g.c_out * 4, batch * hw)));
            out.extend(batch_sum(Family::ConvTranspose, &p, gy, None, gb, (g.c_out, 1, batch * 4 * hw)));
            out
        }
        Op::MaxPool2d { x, y, argmax, shape } => vec![launch(
            Kernel::new(Family::MaxPool, "forward"),
            vec![shape.c as u32, shape.h as u32, shape.w as u32],
            &[buf(2, x), buf(3, argmax), buf(4, y)],
            Grid::Flat(Size::per_n(shape.c * (shape.h / 2) * (shape.w / 2))),
        )],
        Op::MaxPool2dBackward { gy, argmax, gx, shape } => vec![launch(
            Kernel::new(Family::MaxPool, "backward"),
            vec![shape.c as u32, shape.h as u32, shape.w as u32],
            &[buf(2, gy), buf(3, argmax), buf(4, gx)],
            Grid::Flat(Size::per_n(shape.len())),
        )],
        Op::Activation { act, x, y, per } => vec![launch(
            Kernel::new(Family::Activation, "forward").with("ACT", act_code(act)),
            vec![per as u32, 0, 0],
            &[buf(2, x), buf(4, y)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::ActivationBackward { act, y, gy, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "backward").with("ACT", act_code(act)),
            vec![per as u32, 0, 0],
            &[buf(2, y), buf(3, gy), buf(4, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::Dropout { x, y, mask, per, rate, seed } => vec![launch(
            Kernel::new(Family::Activation, "dropout"),
            vec![per as u32, rate.to_bits(), seed],
            &[buf(2, x), buf(4, y), buf(5, mask)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::DropoutBackward { gy, mask, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "dropout_backward"),
            vec![per as u32, 0, 0],
            &[buf(2, mask), buf(3, gy), buf(4, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes } => {
            vec![loss("softmax_ce", classes, logits, target, probs, grad, metrics)]
        }
        Op::SigmoidBce { logits, target, probs, grad, metrics, per } => {
            vec![loss("sigmoid_bce", per, logits, target, probs, grad, metrics)]
        }
        Op::Confusion { probs, target, counts, classes } => vec![launch(
            Kernel::new(Family::Loss, "confusion"),
            vec![classes as u32, 0],
            &[buf(2, counts), buf(3, target), buf(4, probs)],
            Grid::Single,
        )],
        Op::L2 { w, grad, metrics, lambda, len } => {
            let mut binds = vec![buf(2, w), buf(4, metrics)];
            binds.extend(grad.map(|g| buf(3, g)));
            vec![launch(
                Kernel::new(Family::Optim, "l2"),
                vec![len as u32, lambda.to_bits(), 0, 0, 0, grad.is_some().into()],
                &binds,
                Grid::Single,
            )]
        }
        Op::Sgd { w, g, lr, len } => {
            vec![update("sgd", [len as u32, lr.to_bits(), 0, 0, 0, 0], &[buf(2, w), buf(3, g)], len)]
        }
        Op::Momentum { w, g, v, lr, momentum, len } => vec![update(
            "momentum",
            [len as u32, lr.to_bits(), momentum.to_bits(), 0, 0, 0],
            &[buf(2, w), buf(3, g), buf(4, v)],
            len,
        )],
        Op::Adam { w, g, m, v, lr, beta1, beta2, eps, len } => vec![update(
            "adam",
            [len as u32, lr.to_bits(), beta1.to_bits(), beta2.to_bits(), eps.to_bits(), 0],
            &[buf(2, w), buf(3, g), buf(4, m), buf(5, v)],
            len,
        )],
    }
}

fn loss(
    entry: &'static str,
    per: usize,
    logits: BufId,
    target: BufId,
    probs: BufId,
    grad: Option<BufId>,
    metrics: BufId,
) -> Launch {
    let mut binds = vec![buf(2, logits), buf(3, target), buf(4, probs), buf(6, metrics)];
    binds.extend(grad.map(|g| buf(5, g)));
    launch(Kernel::new(Family::Loss, entry), vec![per as u32, grad.is_some().into()], &binds, Grid::Single)
}

fn update(entry: &'static str, params: [u32; 6], binds: &[(u32, Bind)], len: usize) -> Launch {
    launch(Kernel::new(Family::Optim, entry), params.to_vec(), binds, Grid::Flat(Size::fixed(len)))
}
