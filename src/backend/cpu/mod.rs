//! The CPU backend: plain Rust kernels, the reference the GPU is checked against. Buffers and
//! scratch are allocated once; a step allocates nothing.

mod activation;
mod avgpool;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod batch_norm;
mod conv2d;
mod conv2d_general;
mod conv_transpose;
mod dense;
mod gather;
mod gemm;
pub mod level;
mod loss;
mod maxpool;
mod merge;
mod optim;
#[cfg(target_arch = "x86_64")]
mod tiles;

use super::host::HostBuffers;
use super::Backend;
use crate::error::Result;
use crate::graph::{fuse, no_loss_layer, no_step_in_gradient, BufDesc, BufId, Fusable, Fused, Op, OpKind, Step};
use crate::model::Act;
use gemm::Shared;
use rayon::prelude::*;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Weight-gradient partials per op: the batch is cut into this many chunks (fixed, so results do
/// not depend on the number of threads), each summed on its own, then added in order.
const CHUNKS: usize = 8;

/// Floats of the weight-gradient sums that one task adds up ([`weight_grad`]).
const ADD_PIECE: usize = 1 << 13;

pub struct CpuBackend {
    bufs: HostBuffers,
    /// The plan's buffers, which the fusion of an op list reads.
    descs: Vec<BufDesc>,
    /// Scratch of each convolution (im2col blocks, bordered rows, partial outputs) and of each
    /// dense layer's transposed weights, keyed by the layer's input buffer and kept between
    /// steps; every use writes it before reading it.
    scratch: HashMap<BufId, Vec<f32>>,
    partial: Vec<f32>,
    /// The softmax loss's exponentials of one sample.
    exps: Vec<f64>,
    /// The sigmoid loss's per-chunk sums.
    loss_parts: Vec<[f64; 4]>,
    /// The pixel loss's per-sample sums.
    pixel_parts: loss::PixelParts,
    /// Each op list run so far with its units, fused once (a step then only finds its list), each
    /// with whether its activation runs at its pooling's maxima ([`at_maxima`]).
    units: Vec<(Vec<Op>, Vec<Unit>)>,
}

/// A row's sum in two parts: its floats in eight f32 lanes (so that it vectorises), the lanes
/// added in f64; the floats past the last whole eight, in f64.
fn row_sum(row: &[f32]) -> (f64, f64) {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, v)| *l += v);
    }
    (lanes.iter().map(|&l| l as f64).sum::<f64>(), chunks.remainder().iter().map(|&v| v as f64).sum::<f64>())
}

/// Rows summed side by side by [`add_samples`].
const SIDE_BY_SIDE: usize = 32;

/// `out[i] = Σ_s` of each sample's [`row_sum`] parts `parts(s, i)`, in f64 in sample order:
/// [`SIDE_BY_SIDE`] rows at a time, one sum per vector lane, instead of one chain of dependent
/// additions after another (the MLP's 100 bias sums over 100 samples took a tenth of its step).
fn add_samples(n: usize, out: &mut [f32], parts: impl Fn(usize, usize) -> (f64, f64)) {
    for (c, out) in out.chunks_mut(SIDE_BY_SIDE).enumerate() {
        let mut acc = [0.0f64; SIDE_BY_SIDE];
        for s in 0..n {
            for (i, acc) in acc[..out.len()].iter_mut().enumerate() {
                let (whole, rest) = parts(s, c * SIDE_BY_SIDE + i);
                *acc += whole;
                *acc += rest;
            }
        }
        out.iter_mut().zip(acc).for_each(|(o, acc)| *o = acc as f32);
    }
}

/// `out[i] = Σ_s Σ_j x[s, i, j]` for `x[n, rows, cols]`, runs of rows in parallel ([`row_sum`],
/// [`add_samples`]: always the same order).
fn sum_rows(x: &[f32], n: usize, rows: usize, cols: usize, out: &mut [f32]) {
    out[..rows].par_chunks_mut(SIDE_BY_SIDE).enumerate().for_each(|(c, out)| {
        let i0 = c * SIDE_BY_SIDE;
        add_samples(n, out, |s, i| row_sum(&x[(s * rows + i0 + i) * cols..][..cols]));
    });
}

/// A bias gradient that [`weight_grad`] takes with its weight gradient, while each sample's
/// output gradient is in cache: `gb[c] = Σ_s Σ_j gy[s, c, j]` for `gy[n, gb.len(), cols]`, the
/// bits of [`sum_rows`].
struct BiasGrad<'a> {
    gy: &'a [f32],
    cols: usize,
    gb: &'a mut [f32],
}

thread_local! {
    /// Each sample's [`row_sum`]s for a [`BiasGrad`].
    static BIAS_PARTS: std::cell::RefCell<Vec<(f64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `(per, parts)`: a sample's `rows` (whole rows of a product's output, so the results do not
/// depend on the cut) cut into `parts` of `per` rows, more parts when the batch of `n` alone has
/// too few samples to keep the threads busy: 5 Warwick samples on 2 threads would otherwise
/// leave one idle a sixth of the time.
fn cut(rows: usize, n: usize) -> (usize, usize) {
    let per = rows.div_ceil((4 * rayon::current_num_threads()).div_ceil(n.max(1)));
    (per, rows.div_ceil(per))
}

/// Runs `f(unit, buf)` for units `0..units`, cut into [`CHUNKS`] fixed runs of consecutive
/// units that run in parallel, each with its own `per` floats of `bufs`. The runs' lengths
/// differ by one at most, the longer and shorter alternating, so that each half of the runs
/// (the threads' first shares of the work) holds half the units: 20 units make runs of 2 and 3,
/// not six of 3 and one of 2, which would give one thread 12 and the other 8.
fn for_units(units: usize, bufs: &mut [f32], per: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk = |c: usize, buf: &mut [f32]| (c * units / CHUNKS..(c + 1) * units / CHUNKS).for_each(|u| f(u, buf));
    if per == 0 {
        (0..CHUNKS).into_par_iter().for_each(|c| chunk(c, &mut []));
    } else {
        bufs[..CHUNKS * per].par_chunks_mut(per).enumerate().for_each(|(c, buf)| chunk(c, buf));
    }
}

/// The input gradient `gx[n, c_in, hw]` in units of one sample's channels (as many per unit as
/// [`cut`] gives for `per_buf` floats of `bufs` each): `f(s, chans, gx, buf)` writes channels
/// `chans` of sample `s`, then a fused activation's backward `act = (f, y)` runs on them in
/// place.
#[allow(clippy::too_many_arguments)]
fn input_grad(
    gx: &mut [f32],
    act: Option<(Act, &[f32])>,
    n: usize,
    c_in: usize,
    hw: usize,
    bufs: &mut [f32],
    per_buf: impl Fn(usize) -> usize,
    f: impl Fn(usize, std::ops::Range<usize>, &mut [f32], &mut [f32]) + Sync,
) {
    let (per, parts) = cut(c_in, n);
    let out = Shared::new(&mut gx[..n * c_in * hw]);
    for_units(n * parts, bufs, per_buf(per), |u, buf| {
        let (s, c0) = (u / parts, u % parts * per);
        let (chans, at) = (c0..(c0 + per).min(c_in), (s * c_in + c0) * hw);
        // SAFETY: unit `u` alone writes channels `chans` of sample `s`.
        let gxs = unsafe { out.slice(at, chans.len() * hw) };
        f(s, chans, gxs, buf);
        if let Some((f, y)) = act {
            activation::apply_grad(f, &y[at..][..gxs.len()], gxs);
        }
    });
}

/// `gw[rows, cols] = Σ_s term(s)` over a batch of `n`, and the `bias` gradient. `term(s, acc,
/// part, buf)` adds sample `s`'s part to rows `part` of `acc`, the transpose `[cols, rows]` (so
/// that the products' right operands are row-major), with `buf` (`per` floats) to work in. The
/// batch is cut into [`CHUNKS`] fixed chunks, each summed into its own slice of `partial` (grown
/// as needed), the rows of `acc` into parts ([`cut`]); they all run in parallel, and the chunks
/// are then added in order.
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    partial: &mut Vec<f32>,
    gw: &mut [f32],
    bias: BiasGrad,
    n: usize,
    rows: usize,
    per: usize,
    term: impl Fn(usize, &mut [f32], std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let (len, per_chunk, per) = (gw.len(), n.div_ceil(CHUNKS), per.max(1));
    // The chunks that get samples (a batch of 5 fills five), the first one even when none does.
    let used = n.div_ceil(per_chunk.max(1)).max(1);
    let (part_rows, parts) = cut(len / rows, n);
    let (sums, bufs) = grown(partial, CHUNKS * (len + parts * per)).split_at_mut(CHUNKS * len);
    let BiasGrad { gy, cols, gb } = bias;
    let c_b = gb.len();
    let mut bias_parts = BIAS_PARTS.take();
    bias_parts.resize(n * c_b, (0.0, 0.0));
    let sample_parts = Shared::new(&mut bias_parts[..]);
    let tasks = sums.par_chunks_mut(len).zip(bufs.par_chunks_mut(parts * per)).take(used).enumerate();
    tasks.for_each(|(c, (sum, bufs))| {
        sum.par_chunks_mut(part_rows * rows).zip(bufs.par_chunks_mut(per)).enumerate().for_each(|(p, (acc, buf))| {
            acc.fill(0.0);
            let part = p * part_rows..p * part_rows + acc.len() / rows;
            for s in c * per_chunk..((c + 1) * per_chunk).min(n) {
                if p == 0 {
                    // SAFETY: sample `s`'s first part alone writes its bias parts.
                    let out = unsafe { sample_parts.slice(s * c_b, c_b) };
                    out.iter_mut().enumerate().for_each(|(i, o)| *o = row_sum(&gy[(s * c_b + i) * cols..][..cols]));
                }
                term(s, acc, part.clone(), buf);
            }
        });
    });
    add_samples(n, gb, |s, i| bias_parts[s * c_b + i]);
    BIAS_PARTS.set(bias_parts);
    // The chunks added in order, a piece of the sums at a time in parallel.
    let (sum, rest) = sums.split_at_mut(len);
    sum.par_chunks_mut(ADD_PIECE).enumerate().for_each(|(i, piece)| {
        for c in 1..used {
            piece.iter_mut().zip(&rest[(c - 1) * len + i * ADD_PIECE..]).for_each(|(o, p)| *o += p);
        }
    });
    gemm::transpose(sum, len / rows, rows, gw);
}

/// A convolution forward's buffers: input, weights, bias, output, and the activation fused into
/// it: applied to `y` in place, or with its own output (`out = act(y)`) when `y` is still needed.
pub struct ForwardIo<'a> {
    x: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    y: &'a mut [f32],
    act: Option<(Act, Option<&'a mut [f32]>)>,
}

/// The output and argmax of a max pooling fused into the convolution before it, and the
/// activation applied to the pooled maxima alone ([`acts_on_maxima`]).
pub type Pooled<'a> = (&'a mut [f32], &'a mut [u32], Option<Act>);

/// [`ForwardIo`]'s activation, shared by the units of the op.
struct Activate<'a> {
    act: Act,
    out: Option<Shared<'a>>,
}

impl<'a> Activate<'a> {
    fn new((act, out): (Act, Option<&'a mut [f32]>)) -> Self {
        Activate { act, out: out.map(Shared::new) }
    }

    /// Activates the `len` values of `y` from `at`.
    ///
    /// # Safety
    /// Nothing else may access those elements of `y` or the output meanwhile.
    unsafe fn apply(&self, y: &Shared, at: usize, len: usize) {
        let ys = y.slice(at, len);
        match &self.out {
            Some(out) => {
                let out = out.slice(at, len);
                out.copy_from_slice(ys);
                activation::apply(self.act, out);
            }
            None => activation::apply(self.act, ys),
        }
    }

    /// The buffer that holds the activated values: the output, or `y`.
    fn result<'b>(&'b self, y: &'b Shared<'a>) -> &'b Shared<'a> {
        self.out.as_ref().unwrap_or(y)
    }
}

/// The buffers an op and the activation fused after it write: the op's own output `mid` and
/// the activation's `out`, or, when no later op reads `mid` (`keep` false), `out` alone, the
/// activation then running in place there.
fn fused_outputs(mid: BufId, out: Option<BufId>, keep: bool) -> (BufId, Option<BufId>) {
    match out {
        Some(out) if !keep => (out, None),
        _ => (mid, out),
    }
}

/// A fused unit, and whether its activation runs at its pooling's maxima ([`at_maxima`]).
type Unit = (Fused, bool);

/// Whether unit `unit`'s activation runs at a max pooling's maxima: going forward on the pooled
/// maxima alone ([`acts_on_maxima`]), or, for a pooling's backward, from them
/// ([`takes_backward_at_maxima`]).
fn at_maxima(ops: &[Op], unit: &Fused, units: &[Fused]) -> bool {
    acts_on_maxima(ops, unit, units) || takes_backward_at_maxima(ops, unit)
}

/// Whether `unit`, a max pooling's backward with an activation's backward fused after it, takes
/// that backward at the pooling's maxima ([`maxpool::backward_at_maxima`]): when nothing after the
/// unit reads the pooling's own gradient and the pooling's forward, whose output holds the
/// activation at each maximum, is in the list.
fn takes_backward_at_maxima(ops: &[Op], unit: &Fused) -> bool {
    let op = &ops[unit.op];
    matches!(op, Op::MaxPool2dBackward { .. }) && unit.act.is_some() && !unit.keep && pooling_of(ops, op).is_some()
}

/// Whether unit `unit`'s activation, between a convolution and its max pooling, may run on the
/// pooled maxima alone, as a quarter of the work: the maximum of a non-decreasing function's
/// values is its value at the maximum. Done for the activations that cost more than the pooling
/// (tanh, the logistic function), when no op reads their full output but the pooling and the
/// activation's backward run at the pooling's maxima ([`maxpool::backward_at_maxima`], a unit
/// of the pooling's backward that keeps nothing). Each window's gradient then goes to its
/// largest input, which is its largest activation except where f32 rounding gives two inputs
/// the same activation (op by op takes the first) or, in a few ulp-wide places, a smaller one.
fn acts_on_maxima(ops: &[Op], unit: &Fused, units: &[Fused]) -> bool {
    let (Some(a), Some(p)) = (unit.act, unit.pool) else { return false };
    let (&Op::Activation { act: Act::Tanh | Act::Sigmoid, y: out, .. }, &Op::MaxPool2d { argmax, .. }) =
        (&ops[a], &ops[p])
    else {
        return false;
    };
    let backward_at_maxima = |j: usize| {
        let of_this = |u: &Fused| matches!(ops[u.op], Op::MaxPool2dBackward { argmax: m, .. } if m == argmax);
        units.iter().any(|u| u.act == Some(j) && of_this(u) && takes_backward_at_maxima(ops, u))
    };
    let mut readers = ops.iter().enumerate().filter(|&(j, o)| j != p && o.reads(out));
    readers.all(|(j, o)| matches!(*o, Op::ActivationBackward { y, .. } if y == out) && backward_at_maxima(j))
}

/// The max pooling in `ops` whose backward `op` is: its output holds each window's maximum.
fn pooling_of<'a>(ops: &'a [Op], op: &Op) -> Option<&'a Op> {
    let &Op::MaxPool2dBackward { argmax, .. } = op else { return None };
    ops.iter().find(|o| matches!(o, Op::MaxPool2d { argmax: a, .. } if *a == argmax))
}

/// A convolution's input gradient `gx` and the activation backward fused into it, which is only
/// done when nothing else reads `gx`: the activation's output takes `gx`'s place, and the
/// activation (its function and forward output) runs there in place.
fn grad_in_place(gx: Option<BufId>, act: Option<(Act, BufId, BufId)>) -> (Option<BufId>, Option<(Act, BufId)>) {
    match act {
        Some((f, y, out)) => (Some(out), Some((f, y))),
        None => (gx, None),
    }
}

/// The function and output of an activation fused into an op going forward.
fn activation_forward(fused: Option<&Op>) -> Option<(Act, BufId)> {
    match fused {
        Some(&Op::Activation { act, y, .. }) => Some((act, y)),
        _ => None,
    }
}

/// The function, forward output and output of an activation's backward fused into an op.
fn activation_backward(fused: Option<&Op>) -> Option<(Act, BufId, BufId)> {
    match fused {
        Some(&Op::ActivationBackward { act, y, gx: out, .. }) => Some((act, y, out)),
        _ => None,
    }
}

fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// What this backend runs inside a producer: a convolution's activation and then its max
/// pooling where the pooling fits its blocks, the activation's backward inside a max pooling's
/// backward, or inside a convolution's input gradient that nothing else reads.
const FUSABLE: Fusable = Fusable {
    dense_activation: true,
    kept_gradient: false,
    conv_pool: conv2d::pools_in_blocks,
    read_through_pool: false,
    logits_in_loss: no_loss_layer,
    backward_in_loss: no_loss_layer,
    step_in_gradient: no_step_in_gradient,
};

impl CpuBackend {
    pub fn new(descs: &[BufDesc]) -> Self {
        CpuBackend {
            bufs: HostBuffers::new(descs),
            descs: descs.to_vec(),
            scratch: HashMap::new(),
            partial: Vec::new(),
            exps: Vec::new(),
            loss_parts: Vec::new(),
            pixel_parts: loss::PixelParts::default(),
            units: Vec::new(),
        }
    }

    /// Runs a dense layer's or convolution's forward `f` with its output (and those of the
    /// activation `act` and the max pooling `pool` (output, argmax) fused into it) moved out and
    /// its scratch, keyed by the input `x`, grown to `scratch_len`. With `keep` false, nothing
    /// reads `y` but the activation: `f` gets the activation's output to work in and leaves `y`
    /// alone.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn product_forward(
        &mut self,
        x: BufId,
        y: BufId,
        act: Option<(Act, BufId)>,
        keep: bool,
        pool: Option<(BufId, BufId, Option<Act>)>,
        scratch_len: usize,
        f: impl FnOnce(&Self, &mut [f32], Option<(Act, Option<&mut [f32]>)>, Option<Pooled>, &mut [f32]),
    ) {
        let (y, out) = fused_outputs(y, act.map(|(_, out)| out), keep);
        let (mut yv, mut outv) = (self.bufs.take(y), out.map(|id| self.bufs.take(id)));
        let mut pv = pool.map(|(py, pa, _)| (self.bufs.take(py), self.bufs.take_u32(pa)));
        let mut scratch = self.scratch.remove(&x).unwrap_or_default();
        let a = act.map(|(f, _)| (f, outv.as_deref_mut()));
        let p = pv.as_mut().zip(pool).map(|((py, pa), (_, _, on_maxima))| (&mut py[..], &mut pa[..], on_maxima));
        f(self, &mut yv, a, p, grown(&mut scratch, scratch_len));
        self.scratch.insert(x, scratch);
        self.bufs.put(y, yv);
        self.bufs.put_opt(out, outv);
        if let (Some((py, pa, _)), Some((pyv, pav))) = (pool, pv) {
            self.bufs.put(py, pyv);
            self.bufs.put_u32(pa, pav);
        }
    }

    /// Runs a dense layer's or convolution's backward `f` with its outputs moved out, its scratch
    /// (keyed by the input `x`, grown to `scratch_len`) and the weight-gradient partials.
    #[allow(clippy::type_complexity)]
    fn product_backward(
        &mut self,
        x: BufId,
        gx: Option<BufId>,
        gw: BufId,
        gb: BufId,
        scratch_len: usize,
        f: impl FnOnce(&Self, Option<&mut [f32]>, &mut [f32], &mut [f32], &mut [f32], &mut Vec<f32>),
    ) {
        let (mut gxv, mut gwv, mut gbv) = (self.bufs.take_opt(gx), self.bufs.take(gw), self.bufs.take(gb));
        let mut scratch = self.scratch.remove(&x).unwrap_or_default();
        let mut partial = std::mem::take(&mut self.partial);
        f(self, gxv.as_deref_mut(), &mut gwv, &mut gbv, grown(&mut scratch, scratch_len), &mut partial);
        self.partial = partial;
        self.scratch.insert(x, scratch);
        self.bufs.put_opt(gx, gxv);
        self.bufs.put(gw, gwv);
        self.bufs.put(gb, gbv);
    }

    /// Runs `op`, and `fused`, the activation that follows it, inside it: forward after a dense
    /// layer or convolution, backward after their input gradients or a max pooling's backward;
    /// and `pool`, a max pooling after a convolution (and its activation), or for a max
    /// pooling's backward, its forward, whose output an activation's backward reads
    /// ([`pooling_of`]). With `keep` false, no later op reads the output of `op` that `fused`
    /// reads, and it is not written. With `on_maxima` ([`at_maxima`]), a convolution's activation
    /// runs on its pooling's maxima alone, and its own output is not written; a pooling's
    /// backward takes its activation's backward from the maxima.
    fn run_op(&mut self, op: &Op, step: Step, fused: Option<&Op>, keep: bool, pool: Option<&Op>, on_maxima: bool) {
        match op.kind() {
            OpKind::Product => self.run_product(op, step.n, fused, keep, pool, on_maxima),
            OpKind::Loss => self.run_loss(op, step.n),
            OpKind::Update => self.run_update(op, step.t),
            OpKind::Elementwise => self.run_elementwise(op, step, fused, keep, pool, on_maxima),
        }
    }

    /// A dense layer, convolution or transposed convolution, with the epilogue fused into it.
    fn run_product(&mut self, op: &Op, n: usize, fused: Option<&Op>, keep: bool, pool: Option<&Op>, on_maxima: bool) {
        let act = activation_forward(fused);
        let act_grad = activation_backward(fused);
        let pool = match pool {
            Some(&Op::MaxPool2d { y, argmax, .. }) => Some((y, argmax, act.filter(|_| on_maxima).map(|(f, _)| f))),
            _ => None,
        };
        let act = act.filter(|_| !on_maxima);
        match *op {
            Op::Dense { x, w, b, y, n_in, n_out } => {
                self.product_forward(x, y, act, keep, None, n_in * n_out, |be, y, act, _, w_t| {
                    let (x, w, b) = (be.bufs.f(x), be.bufs.f(w), be.bufs.f(b));
                    dense::forward(x, w, b, y, act, w_t, n, n_in, n_out)
                })
            }
            Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out } => {
                let (gx, act) = grad_in_place(gx, act_grad);
                self.product_backward(x, gx, gw, gb, 0, |be, gx, gw, gb, _, _| {
                    let act = act.map(|(f, y)| (f, be.bufs.f(y)));
                    dense::backward(be.bufs.f(x), be.bufs.f(w), be.bufs.f(gy), gx, act, gw, gb, n, n_in, n_out)
                })
            }
            Op::Conv2d { x, w, b, y, ref g } => {
                self.product_forward(x, y, act, keep, pool, conv2d::scratch_len(g), |be, y, act, pool, scratch| {
                    conv2d::forward(
                        ForwardIo { x: be.bufs.f(x), w: be.bufs.f(w), b: be.bufs.f(b), y, act },
                        pool,
                        scratch,
                        n,
                        g,
                    )
                })
            }
            Op::Conv2dBackward { x, w, gy, gx, gw, gb, ref g } => {
                let (gx, act) = grad_in_place(gx, act_grad);
                self.product_backward(x, gx, gw, gb, conv2d::scratch_len(g), |be, gx, gw, gb, col, partial| {
                    let act = act.map(|(f, y)| (f, be.bufs.f(y)));
                    conv2d::backward(be.bufs.f(x), be.bufs.f(w), be.bufs.f(gy), gx, act, gw, gb, col, partial, n, g)
                })
            }
            Op::ConvTranspose2d { x, w, b, y, ref g } => {
                let len = conv_transpose::scratch_len(g, n);
                self.product_forward(x, y, act, keep, None, len, |be, y, act, _, scratch| {
                    conv_transpose::forward(
                        ForwardIo { x: be.bufs.f(x), w: be.bufs.f(w), b: be.bufs.f(b), y, act },
                        scratch,
                        n,
                        g,
                    )
                })
            }
            Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, ref g } => {
                let (gx, act) = grad_in_place(gx, act_grad);
                self.product_backward(x, gx, gw, gb, conv_transpose::scratch_len(g, n), |be, gx, gw, gb, z, partial| {
                    let act = act.map(|(f, y)| (f, be.bufs.f(y)));
                    conv_transpose::backward(
                        be.bufs.f(x),
                        be.bufs.f(w),
                        be.bufs.f(gy),
                        gx,
                        act,
                        gw,
                        gb,
                        z,
                        partial,
                        n,
                        g,
                    )
                })
            }
            _ => unreachable!("{op:?} is not run by this function"),
        }
    }

    /// Gathers, poolings, activations and dropout (a max pooling's backward with the
    /// activation's backward fused into it).
    fn run_elementwise(
        &mut self,
        op: &Op,
        step: Step,
        fused: Option<&Op>,
        keep: bool,
        pool: Option<&Op>,
        on_maxima: bool,
    ) {
        let act_grad = activation_backward(fused);
        let n = step.n;
        match *op {
            Op::Gather { data, index, out, shape, scale, binarize, mirrored } => {
                let mut o = self.bufs.take(out);
                gather::gather(
                    self.bufs.u8(data),
                    self.bufs.u32(index),
                    &mut o,
                    &shape,
                    scale,
                    binarize,
                    mirrored,
                    n,
                    step.offset,
                );
                self.bufs.put(out, o);
            }
            Op::GatherOneHot { labels, index, out, classes } => {
                let mut o = self.bufs.take(out);
                gather::one_hot(self.bufs.u8(labels), self.bufs.u32(index), &mut o, classes, n, step.offset);
                self.bufs.put(out, o);
            }
            Op::MaxPool2d { x, y, argmax, ref shape } => {
                let (mut yv, mut am) = (self.bufs.take(y), self.bufs.take_u32(argmax));
                maxpool::forward(self.bufs.f(x), &mut yv, &mut am, n, shape);
                self.bufs.put(y, yv);
                self.bufs.put_u32(argmax, am);
            }
            Op::MaxPool2dBackward { gy, argmax, gx, ref shape } => {
                let (gx, out) = fused_outputs(gx, act_grad.map(|(_, _, out)| out), keep);
                if let (true, Some((f, _, _)), Some(&Op::MaxPool2d { y: pooled, .. })) = (on_maxima, act_grad, pool) {
                    let mut gxv = self.bufs.take(gx);
                    let at_maxima = (f, self.bufs.f(pooled));
                    maxpool::backward_at_maxima(self.bufs.f(gy), self.bufs.u32(argmax), &mut gxv, at_maxima, n, shape);
                    return self.bufs.put(gx, gxv);
                }
                let (mut gxv, mut outv) = (self.bufs.take(gx), out.map(|id| self.bufs.take(id)));
                let act = act_grad.map(|(f, y, _)| (f, self.bufs.f(y), outv.as_deref_mut()));
                maxpool::backward(self.bufs.f(gy), self.bufs.u32(argmax), &mut gxv, act, n, shape);
                self.bufs.put(gx, gxv);
                self.bufs.put_opt(out, outv);
            }
            Op::AvgPool2d { x, y, ref shape } => {
                let mut yv = self.bufs.take(y);
                avgpool::forward(self.bufs.f(x), &mut yv, n, shape, 0.25);
                self.bufs.put(y, yv);
            }
            Op::AvgPool2dBackward { gy, gx, ref shape } => {
                let mut gxv = self.bufs.take(gx);
                avgpool::backward(self.bufs.f(gy), &mut gxv, n, shape, 0.25);
                self.bufs.put(gx, gxv);
            }
            Op::Concat { a, b, y, per_a, per_b } => {
                let (mut yv, whole) = (self.bufs.take(y), per_a + per_b);
                merge::copy_part(self.bufs.f(a), &mut yv, n, per_a, (0, per_a), (0, whole));
                merge::copy_part(self.bufs.f(b), &mut yv, n, per_b, (0, per_b), (per_a, whole));
                self.bufs.put(y, yv);
            }
            Op::ConcatBackward { gy, ga, gb, per_a, per_b } => {
                for (g, at, per) in [(ga, 0, per_a), (gb, per_a, per_b)] {
                    if let Some(g) = g {
                        let mut gv = self.bufs.take(g);
                        merge::copy_part(self.bufs.f(gy), &mut gv, n, per, (at, per_a + per_b), (0, per));
                        self.bufs.put(g, gv);
                    }
                }
            }
            Op::BatchNorm { x, gamma, beta, y, stats, running, c, hw, train, momentum, eps } => {
                let act = activation_forward(fused);
                // The activation runs in place in its own output, unless `y` is read later too.
                let (y, kept) = fused_outputs(y, act.map(|(_, out)| out), keep);
                let in_place = act.filter(|_| kept.is_none()).map(|(f, _)| f);
                let (mut yv, mut sv) = (self.bufs.take(y), self.bufs.take(stats));
                let mut r = running.map(|id| self.bufs.take(id));
                let (params, config) = ((self.bufs.f(gamma), self.bufs.f(beta)), (train, momentum, eps));
                let out = (&mut yv[..], in_place);
                batch_norm::forward(self.bufs.f(x), params, out, &mut sv, &mut r, n, (c, hw), config);
                if let (Some(kept), Some((f, _))) = (kept, act) {
                    let (mut a, len) = (self.bufs.take(kept), n * c * hw);
                    activation::forward(f, &yv[..len], &mut a[..len]);
                    self.bufs.put(kept, a);
                }
                running.iter().zip(r).for_each(|(&id, v)| self.bufs.put(id, v));
                self.bufs.put(y, yv);
                self.bufs.put(stats, sv);
            }
            Op::BatchNormBackward { x, gamma, stats, gy, gx, ggamma, gbeta, c, hw } => {
                let (mut gxv, mut gg, mut gb) =
                    (gx.map(|id| self.bufs.take(id)), self.bufs.take(ggamma), self.bufs.take(gbeta));
                let b = &self.bufs;
                let grads = (&mut gg[..], &mut gb[..]);
                batch_norm::backward(b.f(x), b.f(gamma), b.f(stats), b.f(gy), gxv.as_deref_mut(), grads, n, (c, hw));
                self.bufs.put_opt(gx, gxv);
                self.bufs.put(ggamma, gg);
                self.bufs.put(gbeta, gb);
            }
            Op::Upsample2d { x, y, ref shape } => {
                let mut yv = self.bufs.take(y);
                avgpool::backward(self.bufs.f(x), &mut yv, n, shape, 1.0);
                self.bufs.put(y, yv);
            }
            Op::Upsample2dBackward { gy, gx, ref shape } => {
                let mut gxv = self.bufs.take(gx);
                avgpool::forward(self.bufs.f(gy), &mut gxv, n, shape, 1.0);
                self.bufs.put(gx, gxv);
            }
            Op::SumBackward { gy, ga, gb, per } => {
                for g in [ga, gb].into_iter().flatten() {
                    let mut gv = self.bufs.take(g);
                    merge::copy_part(self.bufs.f(gy), &mut gv, n, per, (0, per), (0, per));
                    self.bufs.put(g, gv);
                }
            }
            Op::Sum { a, b, y, per } => {
                let mut yv = self.bufs.take(y);
                merge::sum(&self.bufs.f(a)[..n * per], &self.bufs.f(b)[..n * per], &mut yv[..n * per]);
                self.bufs.put(y, yv);
            }
            Op::Activation { act, x, y, per } => {
                let mut yv = self.bufs.take(y);
                activation::forward(act, &self.bufs.f(x)[..n * per], &mut yv[..n * per]);
                self.bufs.put(y, yv);
            }
            Op::ActivationBackward { act, y, gy, gx, per } => {
                let mut gxv = self.bufs.take(gx);
                activation::backward(act, &self.bufs.f(y)[..n * per], &self.bufs.f(gy)[..n * per], &mut gxv[..n * per]);
                self.bufs.put(gx, gxv);
            }
            Op::Dropout { x, y, mask, per, rate, seed } => {
                let (mut yv, mut m) = (self.bufs.take(y), self.bufs.take(mask));
                activation::dropout(
                    &self.bufs.f(x)[..n * per],
                    &mut yv[..n * per],
                    &mut m[..n * per],
                    rate,
                    seed,
                    step.t,
                );
                self.bufs.put(y, yv);
                self.bufs.put(mask, m);
            }
            Op::DropoutBackward { gy, mask, gx, per } => {
                let mut gxv = self.bufs.take(gx);
                activation::dropout_backward(
                    &self.bufs.f(gy)[..n * per],
                    &self.bufs.f(mask)[..n * per],
                    &mut gxv[..n * per],
                );
                self.bufs.put(gx, gxv);
            }
            _ => unreachable!("{op:?} is not run by this function"),
        }
    }

    /// Losses, penalties and confusion counts over `n` samples.
    fn run_loss(&mut self, op: &Op, n: usize) {
        match *op {
            Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes, batch } => {
                let (mut p, mut g, mut m) = (self.bufs.take(probs), self.bufs.take_opt(grad), self.bufs.take(metrics));
                let (z, t) = (self.bufs.f(logits), self.bufs.f(target));
                for (at, n) in loss::batches(n, batch) {
                    let rows = at * classes..(at + n) * classes;
                    let g = g.as_deref_mut().map(|g| &mut g[rows.clone()]);
                    loss::softmax_cross_entropy(
                        &z[rows.clone()],
                        &t[rows.clone()],
                        &mut p[rows],
                        g,
                        &mut m,
                        &mut self.exps,
                        n,
                        classes,
                    );
                }
                self.bufs.put(probs, p);
                self.bufs.put_opt(grad, g);
                self.bufs.put(metrics, m);
            }
            Op::SigmoidBce { logits, target, probs, grad, metrics, per, batch } => {
                let (mut p, mut g, mut m) = (self.bufs.take(probs), self.bufs.take_opt(grad), self.bufs.take(metrics));
                let mut parts = std::mem::take(&mut self.loss_parts);
                let (z, t) = (self.bufs.f(logits), self.bufs.f(target));
                for (at, n) in loss::batches(n, batch) {
                    let rows = at * per..(at + n) * per;
                    let g = g.as_deref_mut().map(|g| &mut g[rows.clone()]);
                    loss::sigmoid_bce(&z[rows.clone()], &t[rows.clone()], &mut p[rows], g, &mut m, &mut parts, n, per);
                }
                self.loss_parts = parts;
                self.bufs.put(probs, p);
                self.bufs.put_opt(grad, g);
                self.bufs.put(metrics, m);
            }
            Op::PixelSoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, per, batch } => {
                let (mut p, mut g, mut m) = (self.bufs.take(probs), self.bufs.take_opt(grad), self.bufs.take(metrics));
                let (z, t) = (self.bufs.f(logits), self.bufs.f(target));
                for (at, n) in loss::batches(n, batch) {
                    let (rows, pixels) = (at * k * per..(at + n) * k * per, at * per..(at + n) * per);
                    let g = g.as_deref_mut().map(|g| &mut g[rows.clone()]);
                    let zt = (&z[rows.clone()], &t[pixels]);
                    loss::pixel_softmax_cross_entropy(zt, &mut p[rows], g, &mut m, &mut self.pixel_parts, (n, k, per));
                }
                self.bufs.put(probs, p);
                self.bufs.put_opt(grad, g);
                self.bufs.put(metrics, m);
            }
            Op::L2 { w, grad, metrics, lambda, len } => {
                let (mut g, mut m) = (self.bufs.take_opt(grad), self.bufs.take(metrics));
                optim::l2(&self.bufs.f(w)[..len], g.as_deref_mut(), &mut m, lambda, n);
                self.bufs.put_opt(grad, g);
                self.bufs.put(metrics, m);
            }
            Op::Confusion { probs, target, counts, classes } => {
                let mut c = self.bufs.take(counts);
                loss::confusion(self.bufs.f(probs), self.bufs.f(target), &mut c, n, classes);
                self.bufs.put(counts, c);
            }
            _ => unreachable!("{op:?} is not run by this function"),
        }
    }

    /// An optimiser's update at step `t`.
    fn run_update(&mut self, op: &Op, t: u32) {
        match *op {
            Op::Sgd { w, g, lr, .. } => {
                let mut wv = self.bufs.take(w);
                optim::sgd(&mut wv, self.bufs.f(g), lr);
                self.bufs.put(w, wv);
            }
            Op::Momentum { w, g, v, lr, momentum, .. } => {
                let (mut wv, mut vv) = (self.bufs.take(w), self.bufs.take(v));
                optim::momentum(&mut wv, self.bufs.f(g), &mut vv, lr, momentum);
                self.bufs.put(w, wv);
                self.bufs.put(v, vv);
            }
            Op::Adam { w, g, m, v, lr, beta1, beta2, eps, .. } => {
                let (mut wv, mut mv, mut vv) = (self.bufs.take(w), self.bufs.take(m), self.bufs.take(v));
                optim::adam(&mut wv, self.bufs.f(g), &mut mv, &mut vv, lr, beta1, beta2, eps, t);
                self.bufs.put(w, wv);
                self.bufs.put(m, mv);
                self.bufs.put(v, vv);
            }
            _ => unreachable!("{op:?} is not run by this function"),
        }
    }
}

thread_local! {
    /// Whether this thread is running a step's ops ([`with_workers_awake`]).
    static IN_STEP: Cell<bool> = const { Cell::new(false) };
}

/// Runs `step` on a worker of the thread pool while the pool's other workers wait for its
/// parallel loops by spinning, as OpenMP's active wait does, instead of going to sleep between
/// loops: on a virtual machine, waking a sleeping thread costs tens of microseconds, and a
/// step starts many loops. The workers sleep again once the step is done.
fn with_workers_awake(step: impl FnOnce() + Send) {
    /// Ends the wait when the step returns or unwinds, so that a panic reaches the caller.
    struct Done<'a>(&'a AtomicBool, bool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            IN_STEP.set(self.1);
        }
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| {
                // A thread inside a step (this one or another session's) only runs the waits it
                // meets as no-ops: only a step's own thread ends it, so waiting there could
                // block for ever.
                if IN_STEP.get() {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _done = Done(&done, IN_STEP.replace(true));
        step();
    });
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        match rayon::current_num_threads() {
            1 => format!("cpu (1 thread, {})", level::level().name()),
            n => format!("cpu ({n} threads, {})", level::level().name()),
        }
    }
    fn upload_f32(&mut self, buf: BufId, data: &[f32]) -> Result<()> {
        self.bufs.upload_f32(buf, data)
    }
    fn upload_u8(&mut self, buf: BufId, data: &[u8]) -> Result<()> {
        self.bufs.upload_u8(buf, data)
    }
    fn upload_u32(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.bufs.upload_u32(buf, data)
    }
    fn download_f32(&mut self, buf: BufId) -> Result<Vec<f32>> {
        Ok(self.bufs.f(buf).to_vec())
    }
    fn run(&mut self, ops: &[Op], step: Step) -> Result<()> {
        // On a worker of the thread pool: the ops' parallel loops then start from inside the
        // pool, instead of waking it and sleeping until it is done once per loop.
        let known = self.units.iter().position(|(list, _)| list == ops);
        let i = known.unwrap_or_else(|| {
            let units = fuse(ops, &self.descs, &FUSABLE).units;
            let on_maxima = units.iter().map(|u| (*u, at_maxima(ops, u, &units))).collect();
            self.units.push((ops.to_vec(), on_maxima));
            self.units.len() - 1
        });
        let units = std::mem::take(&mut self.units[i].1);
        with_workers_awake(|| {
            for (unit, on_maxima) in &units {
                let at = |i: Option<usize>| i.map(|i| &ops[i]);
                let pool = at(unit.pool).or_else(|| pooling_of(ops, &ops[unit.op]));
                self.run_op(&ops[unit.op], step, at(unit.act), unit.keep, pool, *on_maxima);
            }
        });
        self.units[i].1 = units;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ConvGeom, Dtype};
    use crate::model::Shape;
    use crate::rng::Rng;

    /// Each unit runs once, with its chunk's buffer; a chunk's units are consecutive, the chunks'
    /// counts differ by one at most, and each half of the chunks holds half the units (to one).
    #[test]
    fn units_cut_into_even_halves() {
        for units in [0, 1, 5, 7, 8, 9, 20, 23, 100, 321] {
            let mut bufs = vec![0.0; CHUNKS * 3];
            let base = bufs.as_ptr() as usize;
            let seen = std::sync::Mutex::new(Vec::new());
            for_units(units, &mut bufs, 3, |u, buf| {
                seen.lock().unwrap().push((u, (buf.as_ptr() as usize - base) / (3 * 4)));
            });
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert!(seen.iter().map(|s| s.0).eq(0..units), "{units} units: {seen:?}");
            assert!(seen.windows(2).all(|p| p[0].1 <= p[1].1), "{units} units: {seen:?}");
            let counts: Vec<usize> = (0..CHUNKS).map(|c| seen.iter().filter(|s| s.1 == c).count()).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            let first: usize = counts[..CHUNKS / 2].iter().sum();
            assert!(hi - lo <= 1 && first.abs_diff(units - first) <= 1, "{units} units: {counts:?}");
        }
    }

    /// The weight-gradient sums of a batch of 9 (chunks of 2 samples, the last of 1) for 3 x 9,000
    /// weights (more than one piece of the final additions): each weight is its chunks' sums of
    /// the samples' terms, added in chunk order, in the same bits.
    #[test]
    fn weight_sums_add_every_chunk_in_order() {
        let (n, rows, cols) = (9, 3, 9000);
        let v = |s: usize, j: usize, i: usize| ((s * 31 + j * 7 + i * 3) % 17) as f32 * 0.37 - 2.9;
        let (mut gw, mut gb, gy) = (vec![0.0; rows * cols], vec![0.0; 1], vec![0.0; n]);
        weight_grad(
            &mut Vec::new(),
            &mut gw,
            BiasGrad { gy: &gy, cols: 1, gb: &mut gb },
            n,
            rows,
            1,
            |s, acc, part, _| {
                for (j, row) in part.zip(acc.chunks_exact_mut(rows)) {
                    row.iter_mut().enumerate().for_each(|(i, a)| *a += v(s, j, i));
                }
            },
        );
        let per_chunk = n.div_ceil(CHUNKS);
        for (i, j) in (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))) {
            let chunk = |c: usize| (c * per_chunk..((c + 1) * per_chunk).min(n)).fold(0.0f32, |a, s| a + v(s, j, i));
            let want = (1..n.div_ceil(per_chunk)).fold(chunk(0), |a, c| a + chunk(c));
            assert_eq!(gw[i * cols + j].to_bits(), want.to_bits(), "gw[{i}, {j}]");
        }
    }

    /// A backend over `descs` with normal values (drawn from `seed`) in the buffers `inputs`,
    /// after `ops` ran at batch `n` in one call (fused) or in one call each (op by op, which
    /// fuses nothing).
    fn after(descs: &[BufDesc], inputs: &[BufId], seed: u64, ops: &[Op], n: usize, together: bool) -> CpuBackend {
        let (mut rng, mut be) = (Rng::new(seed), CpuBackend::new(descs));
        for &id in inputs {
            let v: Vec<f32> = (0..descs[id.0].len).map(|_| rng.normal()).collect();
            be.upload_f32(id, &v).unwrap();
        }
        let step = Step { n, offset: 0, t: 1 };
        if together {
            be.run(ops, step).unwrap();
        } else {
            ops.iter().for_each(|op| be.run(std::slice::from_ref(op), step).unwrap());
        }
        be
    }

    /// Steps started at once from threads outside the pool and from inside it, each running
    /// parallel loops, all finish with the right sums; a step that panics hands the panic to its
    /// caller instead of leaving the waiting workers spinning.
    #[test]
    fn steps_at_once_finish_and_panics_reach_the_caller() {
        let step = |seed: u64| {
            let mut sum = 0;
            with_workers_awake(|| sum = (0..100_000u64).into_par_iter().map(|i| i ^ seed).sum());
            sum
        };
        let want = |seed: u64| (0..100_000u64).map(|i| i ^ seed).sum::<u64>();
        std::thread::scope(|s| {
            let outside: Vec<_> =
                (0..4).map(|t| s.spawn(move || (0..20).map(|r| step(t * 20 + r)).collect())).collect();
            let inside: Vec<u64> = (100..160).into_par_iter().map(step).collect();
            assert_eq!(inside, (100..160).map(want).collect::<Vec<_>>());
            for (t, h) in outside.into_iter().enumerate() {
                let got: Vec<u64> = h.join().unwrap();
                assert_eq!(got, (0..20).map(|r| want(t as u64 * 20 + r)).collect::<Vec<_>>());
            }
        });
        // Each on a thread of its own, so that a step that never ends fails the test instead of
        // hanging it.
        let within_a_minute = |f: fn() -> bool| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(f()));
            rx.recv_timeout(std::time::Duration::from_secs(60))
        };
        // A step's thread that runs jobs of its own queue while it waits meets the waits it
        // started: they must end at once.
        let own_waits = || {
            (0..50).for_each(|_| with_workers_awake(|| while rayon::yield_local() == Some(rayon::Yield::Executed) {}));
            true
        };
        assert_eq!(within_a_minute(own_waits), Ok(true), "a step waited on itself");
        let panics =
            || std::panic::catch_unwind(|| with_workers_awake(|| panic!("a kernel failed"))).is_err() && !IN_STEP.get();
        assert_eq!(within_a_minute(panics), Ok(true), "a step's panic did not reach its caller, or left it in a step");
    }

    /// A batch normalisation with its activation, a convolution with its activation and
    /// pooling, pooling's backward with the activation's, and a convolution's backward with an
    /// activation's, run fused in one call: the same bits as op by op (one call each, which
    /// fuses nothing), whether or not a later op reads the buffers between the fused ops.
    #[test]
    fn fused_ops_match_op_by_op() {
        for act in [Act::Relu, Act::Tanh] {
            fused_ops_match_with(act);
        }
    }

    /// The bias gradient taken with a weight gradient has the bits of the output gradient's rows
    /// summed on their own: batches smaller and larger than the chunks, rows with and without
    /// floats past the last eight, taps cut into parts.
    #[test]
    fn bias_with_weight_grad_matches_sum_rows() {
        let mut rng = Rng::new(21);
        for (n, c, cols) in [(1, 3, 5), (3, 8, 196), (13, 5, 49), (100, 16, 36)] {
            let gy: Vec<f32> = (0..n * c * cols).map(|_| rng.normal()).collect();
            let mut want = vec![0.0; c];
            sum_rows(&gy, n, c, cols, &mut want);
            let (mut gw, mut gb) = (vec![0.0; c * 6], vec![0.0; c]);
            weight_grad(&mut Vec::new(), &mut gw, BiasGrad { gy: &gy, cols, gb: &mut gb }, n, c, 1, |_, _, _, _| {});
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gb), bits(&want), "n {n} c {c} cols {cols}");
        }
    }

    /// [`fused_ops_match_op_by_op`] with `act` after the convolution and its pooling.
    fn fused_ops_match_with(act: Act) {
        let (n, g) = (3, ConvGeom::same(2, 4, 6, 6, 3));
        let (xl, yl, pl) = (2 * 36, 4 * 36, 4 * 9);
        let lens = [n * xl, 4 * 18, 4, n * yl, n * yl, n * pl, n * pl, n * pl, n * yl, n * yl]
            .into_iter()
            .chain([n * yl, n * yl, 4 * 18, 4, n * xl, n * xl, n * xl])
            .chain([2, 2, 4, 2, 2, 1, n * xl, n * xl, n * xl])
            .collect::<Vec<_>>();
        let descs: Vec<BufDesc> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| BufDesc {
                name: format!("b{i}"),
                len,
                dtype: if i == 6 { Dtype::U32 } else { Dtype::F32 },
                set: None,
            })
            .collect();
        let [x, w, b, y, a, py, pa, gpy, gpool, ga, r1, r2, gw, gb, gx, gxa, r3] = std::array::from_fn(BufId);
        let [gamma, beta, stats, mean, var, count, bn, bna, r4] = std::array::from_fn(|i| BufId(17 + i));
        let shape = Shape { c: 4, h: 6, w: 6 };
        let running = [mean, var, count];
        let ops = [
            Op::BatchNorm {
                x,
                gamma,
                beta,
                y: bn,
                stats,
                running,
                c: 2,
                hw: 36,
                train: true,
                momentum: 0.1,
                eps: 1e-5,
            },
            Op::Activation { act: Act::Tanh, x: bn, y: bna, per: xl },
            Op::Conv2d { x, w, b, y, g },
            Op::Activation { act, x: y, y: a, per: yl },
            Op::MaxPool2d { x: a, y: py, argmax: pa, shape },
            Op::MaxPool2dBackward { gy: gpy, argmax: pa, gx: gpool, shape },
            Op::ActivationBackward { act, y: a, gy: gpool, gx: ga, per: yl },
            Op::Conv2dBackward { x, w, gy: ga, gx: Some(gx), gw, gb, g },
            Op::ActivationBackward { act: Act::Sigmoid, y: x, gy: gx, gx: gxa, per: xl },
            // Readers of the buffers between the fused ops, so that they must be written.
            Op::Activation { act: Act::Tanh, x: y, y: r1, per: yl },
            Op::Activation { act: Act::Tanh, x: gpool, y: r2, per: yl },
            Op::Activation { act: Act::Tanh, x: gx, y: r3, per: xl },
            Op::Activation { act, x: bn, y: r4, per: xl },
        ];
        let run = |ops: &[Op], together: bool| {
            let be = after(&descs, &[x, w, b, gpy, gamma, beta], 14, ops, n, together);
            let bits = |id: BufId| be.bufs.f(id).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            ([bna, stats, mean, var, a, py, ga, gw, gb, gxa, r1, r2, r3, r4].map(bits), be.bufs.u32(pa).to_vec())
        };
        let (alone, fused) = (run(&ops, false), run(&ops, true));
        assert!(alone == fused, "with readers");
        // Without readers a tanh runs on the pooled maxima ([`acts_on_maxima`]) and its full
        // output is not written; these inputs give no two window values the same activation.
        let (alone, fused) = (run(&ops[..9], false), run(&ops[..9], true));
        let written = |i: usize| i != 4 || act == Act::Relu;
        assert!((0..10).filter(|&i| written(i)).all(|i| alone.0[i] == fused.0[i]), "without readers");
        assert_eq!(alone.1, fused.1, "without readers");
    }

    /// A convolution's tanh or logistic activation before its max pooling, read by nothing else
    /// but its backward at the pooling's maxima, runs on those maxima alone: the pooling gives
    /// the activation of each window's largest input and that input's index (the first of equal
    /// ones), the activation's gradient is each window's gradient times `f'` there and 0
    /// elsewhere, and the convolution's gradients are those of its backward from that gradient;
    /// op by op picks another input only where rounding ties or (by an ulp or two) orders the
    /// activations otherwise. Inputs and weights on a coarse grid, with zero rows, give equal
    /// inputs in a window, and large ones saturated activations (which op by op routes to the
    /// first, with a gradient of 0); the same with the convolution's own output read later. With
    /// another reader of the activation, a pooling backward that keeps its own gradient, or a
    /// relu, the activation runs op by op.
    #[test]
    fn activation_runs_on_pooled_maxima() {
        // One block of rows (the sample's pooled planes activated in one run), and blocks of 56
        // rows (each plane's pooled rows in runs of their own).
        on_pooled_maxima_with(6, 6);
        on_pooled_maxima_with(64, 64);
    }

    /// [`activation_runs_on_pooled_maxima`] on `h`x`w` planes.
    fn on_pooled_maxima_with(h: usize, w: usize) {
        let (n, g, shape) = (3, ConvGeom::same(2, 4, h, w, 3), Shape { c: 4, h, w });
        let (hw, pw, ph) = (h * w, w / 2, h / 2);
        let (xl, yl, pl) = (2 * hw, 4 * hw, 4 * ph * pw);
        let lens =
            [n * xl, 4 * 18, 4, n * yl, n * yl, n * pl, n * pl, n * pl, n * yl, n * yl, 4 * 18, 4, n * xl, n * yl];
        let dtype = |i: usize| if i == 6 { Dtype::U32 } else { Dtype::F32 };
        let descs: Vec<BufDesc> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| BufDesc { name: format!("b{i}"), len, dtype: dtype(i), set: None })
            .collect();
        let [x, wt, b, y, a, py, pa, gpy, gpool, ga, gw, gb, gx, r] = std::array::from_fn(BufId);
        let mut rng = Rng::new(5);
        let mut grid =
            |len: usize, step: f32| (0..len).map(|_| (rng.normal() * 3.0).round() * step).collect::<Vec<_>>();
        // The top three rows of each input plane 0: the first two output rows are the bias.
        let xs = grid(n * xl, 0.5).into_iter().enumerate().map(|(i, v)| if i % hw < 3 * w { 0.0 } else { v }).collect();
        let inputs = [(x, xs), (wt, grid(4 * 18, 1.0)), (b, grid(4, 1.0)), (gpy, grid(n * pl, 0.25))];
        for act in [Act::Tanh, Act::Sigmoid] {
            let ops = [
                Op::Conv2d { x, w: wt, b, y, g },
                Op::Activation { act, x: y, y: a, per: yl },
                Op::MaxPool2d { x: a, y: py, argmax: pa, shape },
                Op::MaxPool2dBackward { gy: gpy, argmax: pa, gx: gpool, shape },
                Op::ActivationBackward { act, y: a, gy: gpool, gx: ga, per: yl },
                Op::Conv2dBackward { x, w: wt, gy: ga, gx: Some(gx), gw, gb, g },
            ];
            let on_maxima = |ops: &[Op]| {
                let units = fuse(ops, &descs, &FUSABLE).units;
                units.iter().any(|u| acts_on_maxima(ops, u, &units))
            };
            let read = |op: Op| [&ops[..], &[op]].concat();
            assert!(on_maxima(&ops), "{act:?}");
            assert!(!on_maxima(&read(Op::Activation { act, x: a, y: r, per: yl })), "{act:?} read");
            assert!(!on_maxima(&read(Op::Activation { act, x: gpool, y: r, per: yl })), "{act:?} kept");
            let relu = ops.clone().map(|o| match o {
                Op::Activation { x, y, per, .. } => Op::Activation { act: Act::Relu, x, y, per },
                Op::ActivationBackward { y, gy, gx, per, .. } => {
                    Op::ActivationBackward { act: Act::Relu, y, gy, gx, per }
                }
                o => o,
            });
            assert!(!on_maxima(&relu));
            let run = |ops: &[Op], together: bool, inputs: &[(BufId, &[f32])]| {
                let mut be = CpuBackend::new(&descs);
                inputs.iter().for_each(|(id, v)| be.upload_f32(*id, v).unwrap());
                let step = Step { n, offset: 0, t: 1 };
                if together {
                    be.run(ops, step).unwrap();
                } else {
                    ops.iter().for_each(|op| be.run(std::slice::from_ref(op), step).unwrap());
                }
                be
            };
            let inputs = inputs.each_ref().map(|(id, v)| (*id, &v[..]));
            let (alone, fused) = (run(&ops, false, &inputs), run(&ops, true, &inputs));
            let (conv, gys) = (alone.bufs.f(y), alone.bufs.f(gpy));
            let (mut want_py, mut want_pa, mut want_ga) = (vec![0.0; n * pl], vec![0; n * pl], vec![0.0; n * yl]);
            let (mut ties, mut saturated) = (0, 0);
            for (i, (py, pa)) in want_py.iter_mut().zip(&mut want_pa).enumerate() {
                let (plane, oy, ox) = (i / (ph * pw), i % (ph * pw) / pw, i % pw);
                let at = |d: usize| plane * hw + (2 * oy + d / 2) * w + 2 * ox + d % 2;
                let best = (1..4).fold(0, |m, d| if conv[at(d)] > conv[at(m)] { d } else { m });
                ties += (0..4).filter(|&d| d != best && conv[at(d)] == conv[at(best)]).count();
                let mut v = [conv[at(best)]];
                activation::apply(act, &mut v);
                saturated += usize::from(v[0] == 1.0);
                let mut d = [gys[i]];
                activation::apply_grad(act, &v, &mut d);
                (*py, *pa, want_ga[at(best)]) = (v[0], (at(best) - plane / 4 * yl) as u32, d[0]);
            }
            assert!(ties > 20 && saturated > 20, "{act:?} {h}x{w}: {ties} ties, {saturated} saturated windows");
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(fused.bufs.f(py)), bits(&want_py), "{act:?} {h}x{w} pooled");
            assert_eq!(fused.bufs.u32(pa), &want_pa[..], "{act:?} {h}x{w} argmax");
            assert_eq!(bits(fused.bufs.f(ga)), bits(&want_ga), "{act:?} {h}x{w} activation's gradient");
            // The convolution's backward, on its own from that gradient.
            let back = run(&ops[5..], false, &[inputs[0], inputs[1], (ga, fused.bufs.f(ga))]);
            for id in [gw, gb, gx] {
                assert_eq!(bits(fused.bufs.f(id)), bits(back.bufs.f(id)), "{act:?} {h}x{w} {id:?}");
            }
            // Op by op takes another window value only where f32 rounding gives it the same
            // activation (and it comes first) or, where tanh's rounding is not monotone, one
            // an ulp or two larger.
            let (acts, sample) = (alone.bufs.f(a), |i: usize| i / (4 * ph * pw) * yl);
            let maxima = alone.bufs.u32(pa).iter().zip(fused.bufs.u32(pa)).enumerate();
            for (i, (o, f)) in maxima.map(|(i, (&o, &f))| (i, (sample(i) + o as usize, sample(i) + f as usize))) {
                let (ao, af) = (acts[o], acts[f]);
                let rounded = ao == af && o <= f || ao > af && ao.to_bits().abs_diff(af.to_bits()) <= 2;
                assert!(rounded, "{act:?} {h}x{w} window {i}: op by op {ao} at {o}, fused {af} at {f}");
            }
            // With the convolution's own output read later (kept, the activation's then not
            // written): the same, and the reader gets op by op's bits.
            let kept = read(Op::Activation { act, x: y, y: r, per: yl });
            assert!(on_maxima(&kept), "{act:?} with the convolution's output kept");
            let (alone_kept, fused_kept) = (run(&kept, false, &inputs), run(&kept, true, &inputs));
            for id in [py, ga, gw, gb, gx] {
                assert_eq!(bits(fused_kept.bufs.f(id)), bits(fused.bufs.f(id)), "{act:?} {h}x{w} {id:?} kept");
            }
            assert_eq!(fused_kept.bufs.u32(pa), fused.bufs.u32(pa), "{act:?} {h}x{w} argmax kept");
            assert_eq!(
                bits(fused_kept.bufs.f(r)),
                bits(alone_kept.bufs.f(r)),
                "{act:?} {h}x{w} reader of the kept output"
            );
        }
    }

    /// A dense layer's activation forward, and its backward after the input gradient of the
    /// layer above, run fused: the same bits as op by op, with and without readers of the
    /// buffers between the fused ops.
    #[test]
    fn fused_dense_activations_match_op_by_op() {
        let (n, n_in, n_out) = (9, 70, 20);
        let (io, grads) = (n * n_out, 3 * n_out);
        let lens = [n * n_in, n_out * n_in, n_out, io, io, grads, 3, n * 3, io, io, grads, 3, io, io];
        let descs: Vec<BufDesc> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| BufDesc { name: format!("b{i}"), len, dtype: Dtype::F32, set: None })
            .collect();
        let [x, w, b, y, a, w2, b2, gy2, gx2, ga, gw2, gb2, r1, r2] = std::array::from_fn(BufId);
        for act in [Act::Relu, Act::Tanh] {
            let ops = [
                Op::Dense { x, w, b, y, n_in, n_out },
                Op::Activation { act, x: y, y: a, per: n_out },
                Op::DenseBackward { x: a, w: w2, gy: gy2, gx: Some(gx2), gw: gw2, gb: gb2, n_in: n_out, n_out: 3 },
                Op::ActivationBackward { act, y: a, gy: gx2, gx: ga, per: n_out },
                // Readers of the buffers between the fused ops, so that they must be written.
                Op::Activation { act: Act::Sigmoid, x: y, y: r1, per: n_out },
                Op::Activation { act: Act::Sigmoid, x: gx2, y: r2, per: n_out },
            ];
            let run = |ops: &[Op], together: bool| {
                let be = after(&descs, &[x, w, b, w2, b2, gy2], 15, ops, n, together);
                [a, ga, gw2, gb2, r1, r2].map(|id| be.bufs.f(id).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            assert!(run(&ops, false) == run(&ops, true), "{act:?} with readers");
            let (alone, fused) = (run(&ops[..4], false), run(&ops[..4], true));
            assert!(alone[..4] == fused[..4], "{act:?} without readers");
        }
    }
}
