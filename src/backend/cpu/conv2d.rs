//! Conv2D, stride 1, 'same' zero padding, as im2col + GEMM per sample.
//! Shapes: `x[n, c_in, h, w]`, `w[c_out, c_in, k, k]`, `y[n, c_out, h, w]`.

use super::gemm::{gemm, row_stride, transpose, View};
use super::{sum_rows, weight_grad};
use crate::graph::ConvGeom;
use rayon::prelude::*;

/// For kernel column `kx` (padding `p`, width `w`): the output columns `ox` whose input column
/// `ox + kx - p` lies inside the image, and that input column for the first of them.
fn valid_cols(kx: usize, p: usize, w: usize) -> (std::ops::Range<usize>, usize) {
    let lo = p.saturating_sub(kx).min(w);
    let hi = (w + p).saturating_sub(kx).min(w).max(lo);
    (lo..hi, lo + kx - p.min(lo + kx))
}

/// `col[(c·k + ky)·k + kx, y·w + x] = x[c, y + ky - k/2, x + kx - k/2]`, zero outside; rows
/// [`row_stride`] apart.
fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    let (h, w, k, p, st) = (g.h, g.w, g.k, g.k / 2, col_stride(g));
    for c in 0..g.c_in {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((c * k + ky) * k + kx) * st..][..h * w];
                let (cols, src0) = valid_cols(kx, p, w);
                for oy in 0..h {
                    let out = &mut row[oy * w..][..w];
                    let iy = (oy + ky).wrapping_sub(p);
                    if iy >= h {
                        out.fill(0.0);
                        continue;
                    }
                    out[..cols.start].fill(0.0);
                    out[cols.end..].fill(0.0);
                    out[cols.clone()].copy_from_slice(&x[(c * h + iy) * w + src0..][..cols.len()]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] for a dense `col` (rows `h·w` apart): sums each column entry back
/// into the input position it came from.
fn col2im(col: &[f32], g: &ConvGeom, x: &mut [f32]) {
    let (h, w, k, p) = (g.h, g.w, g.k, g.k / 2);
    x.fill(0.0);
    for c in 0..g.c_in {
        for ky in 0..k {
            for kx in 0..k {
                let row = &col[((c * k + ky) * k + kx) * h * w..][..h * w];
                let (cols, dst0) = valid_cols(kx, p, w);
                for oy in 0..h {
                    let iy = (oy + ky).wrapping_sub(p);
                    if iy >= h {
                        continue;
                    }
                    let dst = &mut x[(c * h + iy) * w + dst0..][..cols.len()];
                    dst.iter_mut().zip(&row[oy * w + cols.start..oy * w + cols.end]).for_each(|(d, v)| *d += v);
                }
            }
        }
    }
}

/// Scratch floats per sample: the im2col matrix (none for 1x1 kernels, which use `x` itself).
pub fn col_len(g: &ConvGeom) -> usize {
    if g.k == 1 {
        0
    } else {
        g.c_in * g.k * g.k * col_stride(g)
    }
}

/// The row stride of the im2col matrix (of `x` itself for 1x1 kernels).
fn col_stride(g: &ConvGeom) -> usize {
    if g.k == 1 {
        g.h * g.w
    } else {
        row_stride(g.h * g.w)
    }
}

/// Backward's scratch floats per sample: the im2col matrix and the transposed output gradient.
pub fn scratch_len(g: &ConvGeom) -> usize {
    col_len(g) + g.c_out * g.h * g.w
}

/// Fills `col` (kept for backward) and `y`.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], col: &mut [f32], n: usize, g: &ConvGeom) {
    let (hw, ckk, cl) = (g.h * g.w, g.c_in * g.k * g.k, col_len(g));
    let st = col_stride(g);
    let xs = x[..n * g.c_in * hw].par_chunks(g.c_in * hw);
    let ys = y[..n * g.c_out * hw].par_chunks_mut(g.c_out * hw);
    let sample = |xs: &[f32], ys: &mut [f32], col: &mut [f32]| {
        let a = if g.k == 1 {
            xs
        } else {
            im2col(xs, g, col);
            col
        };
        for (o, row) in ys.chunks_mut(hw).enumerate() {
            row.fill(b[o]);
        }
        gemm(g.c_out, ckk, hw, View::rows(w, ckk), View::rows(a, st), 1.0, ys);
    };
    if cl == 0 {
        xs.zip(ys).for_each(|(xs, ys)| sample(xs, ys, &mut []));
    } else {
        xs.zip(ys).zip(col[..n * cl].par_chunks_mut(cl)).for_each(|((xs, ys), col)| sample(xs, ys, col));
    }
}

/// `gw`, `gb` and, when asked, `gx`. `scratch` starts with forward's im2col (overwritten) and has
/// [`scratch_len`] floats per sample; `partial` is scratch for [`weight_grad`].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    scratch: &mut [f32],
    partial: &mut [f32],
    n: usize,
    g: &ConvGeom,
) {
    let (hw, ckk, cl, ol) = (g.h * g.w, g.c_in * g.k * g.k, col_len(g), g.c_out * g.h * g.w);
    let st = col_stride(g);
    sum_rows(gy, n, g.c_out, hw, gb);
    let (col, gy_t) = scratch.split_at_mut(n * cl);
    gy[..n * ol].par_chunks(ol).zip(gy_t[..n * ol].par_chunks_mut(ol)).for_each(|(s, t)| transpose(s, g.c_out, hw, t));
    weight_grad(partial, gw, n, g.c_out, |s, acc| {
        let a = if g.k == 1 { &x[s * g.c_in * hw..][..g.c_in * hw] } else { &col[s * cl..][..cl] };
        gemm(ckk, hw, g.c_out, View::rows(a, st), View::rows(&gy_t[s * ol..], g.c_out), 1.0, acc);
    });
    let Some(gx) = gx else { return };
    let gys = gy[..n * g.c_out * hw].par_chunks(g.c_out * hw);
    let gxs = gx[..n * g.c_in * hw].par_chunks_mut(g.c_in * hw);
    if cl == 0 {
        gys.zip(gxs).for_each(|(gys, gxs)| gemm(ckk, g.c_out, hw, View::t(w, ckk), View::rows(gys, hw), 0.0, gxs));
    } else {
        gys.zip(gxs).zip(col[..n * cl].par_chunks_mut(cl)).for_each(|((gys, gxs), col)| {
            gemm(ckk, g.c_out, hw, View::t(w, ckk), View::rows(gys, hw), 0.0, col);
            col2im(col, g, gxs);
        });
    }
}
