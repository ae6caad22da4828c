//! Conv2DTranspose, kernel 2, stride 2: each input pixel writes its own 2x2 output block, so the
//! op is one GEMM per sample plus a scatter. Shapes: `x[n, c_in, h, w]`, `w[c_in, c_out, 2, 2]`,
//! `y[n, c_out, 2h, 2w]`. The scratch `z[(o·2 + a)·2 + b, i·w + j]` is the block-major output.

use super::gemm::{gemm, row_stride, transpose, Shared, View};
use super::{activation, cut, for_units, sum_rows, weight_grad, ForwardIo, CHUNKS};
use crate::graph::ConvGeom;
use rayon::prelude::*;

/// `z`'s floats per sample (rows [`row_stride`] apart).
fn z_len(g: &ConvGeom) -> usize {
    g.c_out * 4 * row_stride(g.h * g.w)
}

/// Scratch floats of a batch of `n`: in forward, up to one sample's `z` per chunk of work; in
/// backward every sample's `z` and transposed input.
pub fn scratch_len(g: &ConvGeom, n: usize) -> usize {
    let hw = g.h * g.w;
    (CHUNKS * g.c_out * 4 * hw).max(n * (z_len(g) + g.c_in * hw))
}

/// Calls `f(z index, y index)` for every output element of `c_out` channels: `y[o, 2i + a,
/// 2j + b]` is `z[(o·2 + a)·2 + b, i·w + j]`, with `z`'s rows `stride` apart.
fn blocks(g: &ConvGeom, c_out: usize, stride: usize, mut f: impl FnMut(usize, usize)) {
    let (h, w) = (g.h, g.w);
    for o in 0..c_out {
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

/// `y = convT(x, w) + b`, in units of some output channels of one sample; with an activation,
/// each unit is activated while in cache.
pub fn forward(io: ForwardIo, scratch: &mut [f32], n: usize, g: &ConvGeom) {
    let ForwardIo { x, w, b, y, act } = io;
    let (hw, o4, xl, yl) = (g.h * g.w, g.c_out * 4, g.c_in * g.h * g.w, g.c_out * 4 * g.h * g.w);
    let (per, oparts) = cut(g.c_out, n);
    let out = Shared::new(&mut y[..n * yl]);
    let act = act.map(|(f, a)| (f, Shared::new(&mut a[..n * yl])));
    for_units(n * oparts, scratch, per * 4 * hw, |u, z| {
        let (s, o0) = (u / oparts, u % oparts * per);
        let chans = o0..(o0 + per).min(g.c_out);
        let wt = View { data: &w[o0 * 4..], rs: 1, cs: o4 };
        gemm(chans.len() * 4, g.c_in, hw, wt, View::rows(&x[s * xl..][..xl], hw), 0.0, z);
        let (at, len) = (s * yl + o0 * 4 * hw, chans.len() * 4 * hw);
        // SAFETY: unit `u` alone touches channels `chans` of sample `s` in `y` and `act`.
        let ys = unsafe { out.slice(at, len) };
        blocks(g, chans.len(), hw, |zi, yi| ys[yi] = z[zi]);
        for (o, plane) in chans.zip(ys.chunks_mut(4 * hw)) {
            plane.iter_mut().for_each(|v| *v += b[o]);
        }
        if let Some((f, a)) = &act {
            // SAFETY: as above.
            activation::apply(*f, ys, unsafe { a.slice(at, len) });
        }
    });
}

/// `gw`, `gb` and, when asked, `gx`; `scratch` ([`scratch_len`]) and `partial` are scratch.
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
    let (hw, o4, zl, xl) = (g.h * g.w, g.c_out * 4, z_len(g), g.c_in * g.h * g.w);
    let (z, x_t) = scratch.split_at_mut(n * zl);
    let st = row_stride(hw);
    sum_rows(gy, n, g.c_out, 4 * hw, gb);
    // z <- gy in block-major order.
    let gys = gy[..n * o4 * hw].par_chunks(o4 * hw);
    gys.zip(z.par_chunks_mut(zl)).for_each(|(gys, z)| blocks(g, g.c_out, st, |zi, yi| z[zi] = gys[yi]));
    x[..n * xl].par_chunks(xl).zip(x_t[..n * xl].par_chunks_mut(xl)).for_each(|(s, t)| transpose(s, g.c_in, hw, t));
    weight_grad(partial, gw, n, g.c_in, 0, |s, acc, rows, _| {
        let a = View::rows(&z[s * zl + rows.start * st..], st);
        gemm(rows.len(), hw, g.c_in, a, View::rows(&x_t[s * xl..][..xl], g.c_in), 1.0, acc);
    });
    let Some(gx) = gx else { return };
    let (per, cparts) = cut(g.c_in, n);
    let out = Shared::new(&mut gx[..n * xl]);
    for_units(n * cparts, &mut [], 0, |u, _| {
        let (s, c0) = (u / cparts, u % cparts * per);
        let chans = c0..(c0 + per).min(g.c_in);
        // SAFETY: unit `u` alone writes channels `chans` of sample `s`.
        let gxs = unsafe { out.slice(s * xl + c0 * hw, chans.len() * hw) };
        gemm(chans.len(), o4, hw, View::rows(&w[c0 * o4..], o4), View::rows(&z[s * zl..], st), 0.0, gxs);
    });
}
