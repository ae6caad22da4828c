//! Conv2D of any zero padding and stride (the 'same' stride-1 convolution has its own kernels in
//! `conv2d.rs`): products over im2col blocks of a few output rows of one sample at a time, and
//! the input gradient scattered back from the product of the transposed kernel (col2im).
//! Shapes: `x[n, c_in, h, w]`, `w[c_out, c_in, k, k]`, `y[n, c_out, oh, ow]` ([`ConvGeom::out`]).

use super::gemm::{gemm, gemm_to, row_stride, transpose_rows, Shared, View};
use super::{for_units, weight_grad, BiasGrad, CHUNKS};
use crate::graph::ConvGeom;
use std::ops::Range;

/// Output rows per im2col block: as many as keep a block within 64 Ki floats, at least one.
fn block_rows(g: &ConvGeom) -> usize {
    let (oh, ow) = g.out();
    (65_536 / (g.c_in * g.k * g.k * ow).max(1)).clamp(1, oh)
}

/// Floats of one im2col block, its rows [`row_stride`] apart.
fn block_len(g: &ConvGeom) -> usize {
    g.c_in * g.k * g.k * row_stride(block_rows(g) * g.out().1)
}

/// Scratch floats: one im2col block per chunk of work.
pub fn scratch_len(g: &ConvGeom) -> usize {
    CHUNKS * block_len(g)
}

/// Taps `taps` (channel-major, then kernel row, then column; numbered from `taps.start`) of the
/// output rows `rows`: `col[r·st + (oy - rows.start)·ow + ox]` is the input pixel under tap
/// `taps.start + r` of output pixel (`oy`, `ox`), 0 in the padding.
fn im2col(x: &[f32], g: &ConvGeom, rows: Range<usize>, taps: Range<usize>, col: &mut [f32], st: usize) {
    let (ow, kk, hw) = (g.out().1, g.k * g.k, g.h * g.w);
    for (r, t) in taps.enumerate() {
        let (plane, ky, kx) = (&x[t / kk * hw..][..hw], t / g.k % g.k, t % g.k);
        let out = &mut col[r * st..][..rows.len() * ow];
        for (oy, row) in rows.clone().zip(out.chunks_exact_mut(ow)) {
            for (ox, v) in row.iter_mut().enumerate() {
                *v = g.under(oy, ox, ky, kx).map_or(0.0, |i| plane[i]);
            }
        }
    }
}

/// The adjoint of [`im2col`] over every tap: adds each entry of `col` to its input pixel of `gx`.
fn col2im(col: &[f32], g: &ConvGeom, rows: Range<usize>, st: usize, gx: &mut [f32]) {
    let (ow, kk, hw) = (g.out().1, g.k * g.k, g.h * g.w);
    for t in 0..g.c_in * kk {
        let (plane, ky, kx) = (&mut gx[t / kk * hw..][..hw], t / g.k % g.k, t % g.k);
        for (oy, row) in rows.clone().zip(col[t * st..][..rows.len() * ow].chunks_exact(ow)) {
            for (ox, &v) in row.iter().enumerate() {
                if let Some(i) = g.under(oy, ox, ky, kx) {
                    plane[i] += v;
                }
            }
        }
    }
}

/// `y = conv(x, w) + b`, in units of one block of output rows of one sample. `scratch` holds
/// [`scratch_len`] floats.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], scratch: &mut [f32], n: usize, g: &ConvGeom) {
    let ((oh, ow), ckk, br) = (g.out(), g.c_in * g.k * g.k, block_rows(g));
    let (xl, ohw, blocks, st) = (g.c_in * g.h * g.w, oh * ow, oh.div_ceil(br), row_stride(br * ow));
    let out = Shared::new(&mut y[..n * g.c_out * ohw]);
    for_units(n * blocks, scratch, block_len(g), |u, col| {
        let (s, y0) = (u / blocks, u % blocks * br);
        let rows = y0..(y0 + br).min(oh);
        let (px, at) = (rows.len() * ow, s * g.c_out * ohw + y0 * ow);
        im2col(&x[s * xl..][..xl], g, rows, 0..ckk, col, st);
        // SAFETY: unit `u` alone writes these output rows of sample `s`.
        unsafe {
            out.gemm_bias(g.c_out, ckk, px, View::rows(w, ckk), View::rows(col, st), b, at, ohw);
        }
    });
}

/// `gw`, `gb` and, when asked, `gx`. `scratch` holds [`scratch_len`] floats; `partial` is the
/// weight-gradient partials' space.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    scratch: &mut [f32],
    partial: &mut Vec<f32>,
    n: usize,
    g: &ConvGeom,
) {
    let ((oh, ow), ckk, br) = (g.out(), g.c_in * g.k * g.k, block_rows(g));
    let (xl, ohw, st) = (g.c_in * g.h * g.w, oh * ow, row_stride(br * ow));
    let bias = BiasGrad { gy, cols: ohw, gb };
    weight_grad(partial, gw, bias, n, g.c_out, block_len(g) + br * ow * g.c_out, |s, acc, taps, buf| {
        let (col, gy_t) = buf.split_at_mut(block_len(g));
        for y0 in (0..oh).step_by(br) {
            let rows = y0..(y0 + br).min(oh);
            let px = rows.len() * ow;
            im2col(&x[s * xl..][..xl], g, rows, taps.clone(), col, st);
            transpose_rows(&gy[s * g.c_out * ohw + y0 * ow..], ohw, g.c_out, px, gy_t);
            gemm(taps.len(), px, g.c_out, View::rows(col, st), View::rows(gy_t, g.c_out), 1.0, acc);
        }
    });
    let Some(gx) = gx else { return };
    // Per sample: each block's columns `wᵀ·gy`, scattered back to the input pixels they came from.
    let out = Shared::new(&mut gx[..n * xl]);
    for_units(n, scratch, block_len(g), |s, col| {
        // SAFETY: unit `s` alone writes sample `s`.
        let gxs = unsafe { out.slice(s * xl, xl) };
        gxs.fill(0.0);
        for y0 in (0..oh).step_by(br) {
            let rows = y0..(y0 + br).min(oh);
            let gys = View::rows(&gy[s * g.c_out * ohw + y0 * ow..], ohw);
            gemm_to(ckk, g.c_out, rows.len() * ow, View::t(w, ckk), gys, 0.0, col, st);
            col2im(col, g, rows, st, gxs);
        }
    });
}
