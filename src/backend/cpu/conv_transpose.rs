//! Conv2DTranspose, kernel 2, stride 2: each input pixel writes its own 2x2 output block, so the
//! op is one GEMM per sample plus a scatter. Shapes: `x[n, c_in, h, w]`, `w[c_in, c_out, 2, 2]`,
//! `y[n, c_out, 2h, 2w]`. The scratch `z[(o·2 + a)·2 + b, i·w + j]` is the block-major output.

use super::gemm::{gemm, row_stride, transpose, View};
use super::{sum_rows, weight_grad};
use crate::graph::ConvGeom;
use rayon::prelude::*;

/// Scratch floats per sample.
pub fn z_len(g: &ConvGeom) -> usize {
    g.c_out * 4 * row_stride(g.h * g.w)
}

/// Backward's scratch floats per sample: `z` and the transposed input.
pub fn scratch_len(g: &ConvGeom) -> usize {
    z_len(g) + g.c_in * g.h * g.w
}

/// Calls `f(z index, y index)` for every output element: `y[o, 2i + a, 2j + b]` is
/// `z[(o·2 + a)·2 + b, i·w + j]`, with `z`'s rows `stride` apart.
fn blocks(g: &ConvGeom, stride: usize, mut f: impl FnMut(usize, usize)) {
    let (h, w) = (g.h, g.w);
    for o in 0..g.c_out {
        for a in 0..2 {
            for b in 0..2 {
                let z0 = ((o * 2 + a) * 2 + b) * stride;
                for i in 0..h {
                    let y0 = (o * 2 * h + 2 * i + a) * 2 * w + b;
                    for j in 0..w {
                        f(z0 + i * w + j, y0 + 2 * j);
                    }
                }
            }
        }
    }
}

pub fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], z: &mut [f32], n: usize, g: &ConvGeom) {
    let (hw, o4, zl) = (g.h * g.w, g.c_out * 4, z_len(g));
    let xs = x[..n * g.c_in * hw].par_chunks(g.c_in * hw);
    let ys = y[..n * o4 * hw].par_chunks_mut(o4 * hw);
    xs.zip(ys).zip(z[..n * zl].par_chunks_mut(zl)).for_each(|((xs, ys), z)| {
        gemm(o4, g.c_in, hw, View::t(w, o4), View::rows(xs, hw), 0.0, z);
        blocks(g, hw, |zi, yi| ys[yi] = z[zi]);
        for (o, plane) in ys.chunks_mut(4 * hw).enumerate() {
            plane.iter_mut().for_each(|v| *v += b[o]);
        }
    });
}

/// `gw`, `gb` and, when asked, `gx`; `scratch` ([`scratch_len`] floats per sample) and `partial`
/// are scratch.
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
    let (hw, o4, zl, xl) = (g.h * g.w, g.c_out * 4, z_len(g), g.c_in * g.h * g.w);
    let (z, x_t) = scratch.split_at_mut(n * zl);
    let st = row_stride(hw);
    sum_rows(gy, n, g.c_out, 4 * hw, gb);
    // z <- gy in block-major order.
    let gys = gy[..n * o4 * hw].par_chunks(o4 * hw);
    gys.zip(z[..n * zl].par_chunks_mut(zl)).for_each(|(gys, z)| blocks(g, st, |zi, yi| z[zi] = gys[yi]));
    x[..n * xl].par_chunks(xl).zip(x_t[..n * xl].par_chunks_mut(xl)).for_each(|(s, t)| transpose(s, g.c_in, hw, t));
    weight_grad(partial, gw, n, 0, Some(g.c_in), |s, acc, _| {
        gemm(o4, hw, g.c_in, View::rows(&z[s * zl..], st), View::rows(&x_t[s * xl..], g.c_in), 1.0, acc);
    });
    if let Some(gx) = gx {
        let gxs = gx[..n * g.c_in * hw].par_chunks_mut(g.c_in * hw);
        gxs.zip(z[..n * zl].par_chunks(zl))
            .for_each(|(gxs, z)| gemm(g.c_in, o4, hw, View::rows(w, o4), View::rows(z, st), 0.0, gxs));
    }
}
