//! Conv2DTranspose, kernel 2, stride 2: each input pixel writes its own 2x2 output block, so the
//! forward is one GEMM per block of a sample's input rows plus an interleave of its rows. Shapes:
//! `x[n, c_in, h, w]`, `w[c_in, c_out, 2, 2]`, `y[n, c_out, 2h, 2w]`. The scratch
//! `z[(o·2 + a)·2 + b, i·w + j]` is the block-major output.

use super::gemm::{copy_rows, gemm, gemm_to, row_stride, transpose, Shared, View};
use super::level::{at_level, level, Vectorised};
use super::{cut, for_units, input_grad, weight_grad, Activate, BiasGrad, ForwardIo, CHUNKS};
use crate::graph::ConvGeom;
use crate::model::Act;
use rayon::prelude::*;
use std::ops::Range;

/// `z`'s floats per sample (rows [`row_stride`] apart).
fn z_len(g: &ConvGeom) -> usize {
    g.c_out * 4 * row_stride(g.h * g.w)
}

/// Scratch floats of a batch of `n`: in forward, per chunk of work, a block's `z` and its copy of
/// the input; in backward every sample's `z` and transposed input.
pub fn scratch_len(g: &ConvGeom, n: usize) -> usize {
    let hw = g.h * g.w;
    (CHUNKS * (g.c_out * 4 * block_rows(g) * g.w + g.c_in * block_stride(g))).max(n * (z_len(g) + g.c_in * hw))
}

/// Calls `f(z0, y0)` for the output rows of `c_out` channels from input rows `rows`: `y[o, 2i +
/// a, 2j + b]` is `z[(o·2 + a)·2 + b, (i - rows.start)·w + j]` (`z`'s rows `stride` apart), so
/// the `2w` floats of `y` from `y0` interleave the `w` floats of `z` from `z0` (b = 0) and from
/// `z0 + stride` (b = 1).
fn rows(g: &ConvGeom, c_out: usize, stride: usize, rows: Range<usize>, mut f: impl FnMut(usize, usize)) {
    for o in 0..c_out {
        for a in 0..2 {
            for i in rows.clone() {
                f((o * 2 + a) * 2 * stride + (i - rows.start) * g.w, (o * 2 * g.h + 2 * i + a) * 2 * g.w);
            }
        }
    }
}

/// Input rows per block of the forward: about 512 pixels, so that a block's products stay in
/// cache until they are interleaved into the output.
fn block_rows(g: &ConvGeom) -> usize {
    (512 / g.w).clamp(1, g.h)
}

/// The row stride of a block's copy of the input: its pixels and 16 floats more, so that the
/// channels' rows, which the product reads side by side, do not fall in the same cache sets
/// (as the input's planes do when their size is a multiple of 4 KiB).
fn block_stride(g: &ConvGeom) -> usize {
    block_rows(g) * g.w + 16
}

/// `out[2j] = even[j] + add`, `out[2j + 1] = odd[j] + add` for `j < even.len()`, in the
/// process's level's vectors.
fn interleave(even: &[f32], odd: &[f32], add: f32, out: &mut [f32]) {
    assert!(odd.len() >= even.len() && out.len() >= 2 * even.len(), "interleave slices too small");
    at_level(level(), Interleave(even, odd, add, out))
}

struct Interleave<'a>(&'a [f32], &'a [f32], f32, &'a mut [f32]);

impl Vectorised for Interleave<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Interleave(even, odd, add, out) = self;
        for (pair, (e, o)) in out.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
            (pair[0], pair[1]) = (e + add, o + add);
        }
    }
}

/// `even[j] = src[2j]`, `odd[j] = src[2j + 1]` for `j < even.len()`, in the process's level's
/// vectors.
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(odd.len() >= even.len() && src.len() >= 2 * even.len(), "deinterleave slices too small");
    at_level(level(), Deinterleave(src, even, odd))
}

struct Deinterleave<'a>(&'a [f32], &'a mut [f32], &'a mut [f32]);

impl Vectorised for Deinterleave<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Deinterleave(src, even, odd) = self;
        for (pair, (e, o)) in src.chunks_exact(2).zip(even.iter_mut().zip(odd)) {
            (*e, *o) = (pair[0], pair[1]);
        }
    }
}

/// `y = convT(x, w) + b`, in units of some output channels of one sample; with an activation,
/// each unit is activated while in cache.
pub fn forward(io: ForwardIo, scratch: &mut [f32], n: usize, g: &ConvGeom) {
    let ForwardIo { x, w, b, y, act } = io;
    let (hw, o4, xl, yl) = (g.h * g.w, g.c_out * 4, g.c_in * g.h * g.w, g.c_out * 4 * g.h * g.w);
    let (per, oparts) = cut(g.c_out, n);
    let out = Shared::new(&mut y[..n * yl]);
    let act = act.map(|(f, a)| Activate::new((f, a.map(|a| &mut a[..n * yl]))));
    let (br, st) = (block_rows(g), block_stride(g));
    for_units(n * oparts, scratch, per * 4 * br * g.w + g.c_in * st, |u, buf| {
        let (z, xb) = buf.split_at_mut(per * 4 * br * g.w);
        let (s, o0) = (u / oparts, u % oparts * per);
        let chans = o0..(o0 + per).min(g.c_out);
        let wt = View { data: &w[o0 * 4..], rs: 1, cs: o4 };
        let at = s * yl + o0 * 4 * hw;
        for i0 in (0..g.h).step_by(br) {
            let block = i0..(i0 + br).min(g.h);
            let px = block.len() * g.w;
            copy_rows(&x[s * xl + i0 * g.w..], hw, xb, st, g.c_in, px);
            gemm_to(chans.len() * 4, g.c_in, px, wt, View::rows(xb, st), 0.0, z, px);
            // SAFETY: unit `u` alone touches channels `chans` of sample `s` in `y` and `act`.
            let ys = unsafe { out.slice(at, chans.len() * 4 * hw) };
            rows(g, chans.len(), px, block.clone(), |z0, y0| {
                let bias = b[o0 + y0 / (4 * hw)];
                interleave(&z[z0..][..g.w], &z[z0 + px..][..g.w], bias, &mut ys[y0..][..2 * g.w]);
            });
            if let Some(act) = &act {
                for o in 0..chans.len() {
                    // SAFETY: as above.
                    unsafe { act.apply(&out, at + o * 4 * hw + i0 * 4 * g.w, block.len() * 4 * g.w) };
                }
            }
        }
    });
}

/// `gw`, `gb` and, when asked, `gx`, then in place `gx·f'(y)` for a fused activation
/// `act = (f, y)`, unit by unit; `scratch` ([`scratch_len`]) and `partial` are scratch.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    act: Option<(Act, &[f32])>,
    gw: &mut [f32],
    gb: &mut [f32],
    scratch: &mut [f32],
    partial: &mut Vec<f32>,
    n: usize,
    g: &ConvGeom,
) {
    let (hw, o4, zl, xl) = (g.h * g.w, g.c_out * 4, z_len(g), g.c_in * g.h * g.w);
    let (z, x_t) = scratch.split_at_mut(n * zl);
    let st = row_stride(hw);
    // z <- gy in block-major order.
    let gys = gy[..n * o4 * hw].par_chunks(o4 * hw);
    gys.zip(z.par_chunks_mut(zl)).for_each(|(gys, z)| {
        rows(g, g.c_out, st, 0..g.h, |z0, y0| {
            let (even, odd) = z[z0..].split_at_mut(st);
            deinterleave(&gys[y0..][..2 * g.w], &mut even[..g.w], &mut odd[..g.w]);
        })
    });
    x[..n * xl].par_chunks(xl).zip(x_t[..n * xl].par_chunks_mut(xl)).for_each(|(s, t)| transpose(s, g.c_in, hw, t));
    weight_grad(partial, gw, BiasGrad { gy, cols: 4 * hw, gb }, n, g.c_in, 0, |s, acc, rows, _| {
        let a = View::rows(&z[s * zl + rows.start * st..], st);
        gemm(rows.len(), hw, g.c_in, a, View::rows(&x_t[s * xl..][..xl], g.c_in), 1.0, acc);
    });
    let Some(gx) = gx else { return };
    input_grad(
        gx,
        act,
        n,
        g.c_in,
        hw,
        &mut [],
        |_| 0,
        |s, chans, gxs, _| {
            let (wt, zs) = (View::rows(&w[chans.start * o4..], o4), View::rows(&z[s * zl..], st));
            gemm(chans.len(), o4, hw, wt, zs, 0.0, gxs);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole and partial vectors against the element rule.
    #[test]
    fn rows_interleave_and_split() {
        for n in [1, 7, 16, 17, 40] {
            let (even, odd): (Vec<f32>, Vec<f32>) = (0..n).map(|j| (j as f32, -(j as f32) - 0.5)).unzip();
            let mut out = vec![f32::NAN; 2 * n + 1];
            interleave(&even, &odd, 0.25, &mut out);
            assert!((0..n).all(|j| out[2 * j] == even[j] + 0.25 && out[2 * j + 1] == odd[j] + 0.25), "{n}");
            assert!(out[2 * n].is_nan(), "{n}: wrote past the row");
            let (mut e, mut o) = (vec![0.0; n], vec![0.0; n]);
            let src: Vec<f32> = (0..2 * n).map(|i| i as f32).collect();
            deinterleave(&src, &mut e, &mut o);
            assert!((0..n).all(|j| e[j] == src[2 * j] && o[j] == src[2 * j + 1]), "{n}");
        }
    }

    /// The forward cut into blocks of input rows (25 + 15 rows 20 wide; three blocks of one row
    /// 600 wide) with a fused relu: each output the f32 fused multiply-add chain over the input
    /// channels from zero, then the bias added and the relu applied, in the same bits.
    #[test]
    fn blocked_forward_matches_the_sums() {
        let mut rng = crate::rng::Rng::new(21);
        for (n, g) in [(2, ConvGeom::same(3, 5, 40, 20, 2)), (2, ConvGeom::same(4, 3, 3, 600, 2))] {
            assert!(block_rows(&g) < g.h, "{g:?}");
            let hw = g.h * g.w;
            let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
            let (x, w, b) = (values(n * g.c_in * hw), values(g.c_in * g.c_out * 4), values(g.c_out));
            let mut y = vec![0.0; n * g.c_out * 4 * hw];
            let mut scratch = vec![0.0; scratch_len(&g, n)];
            let io = ForwardIo { x: &x, w: &w, b: &b, y: &mut y, act: Some((Act::Relu, None)) };
            forward(io, &mut scratch, n, &g);
            for (s, o, oy, ox) in (0..n).flat_map(|s| {
                (0..g.c_out)
                    .flat_map(move |o| (0..2 * g.h).flat_map(move |oy| (0..2 * g.w).map(move |ox| (s, o, oy, ox))))
            }) {
                let (i, j, k) = (oy / 2, ox / 2, (oy % 2) * 2 + ox % 2);
                let sum = (0..g.c_in).fold(0.0f32, |acc, c| {
                    x[(s * g.c_in + c) * hw + i * g.w + j].mul_add(w[(c * g.c_out + o) * 4 + k], acc)
                });
                let want = (sum + b[o]).max(0.0);
                let got = y[((s * g.c_out + o) * 2 * g.h + oy) * 2 * g.w + ox];
                assert_eq!(got.to_bits(), want.to_bits(), "{g:?} y[{s}, {o}, {oy}, {ox}]");
            }
        }
    }
}
