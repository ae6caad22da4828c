//! Conv2DTranspose, kernel 2, stride 2: each input pixel writes its own 2x2 output block, so the
//! op is one GEMM per sample plus an interleave of its rows. Shapes: `x[n, c_in, h, w]`, `w[c_in, c_out, 2, 2]`,
//! `y[n, c_out, 2h, 2w]`. The scratch `z[(o·2 + a)·2 + b, i·w + j]` is the block-major output.

use super::gemm::{gemm, row_stride, transpose, Shared, View};
use super::{cut, for_units, input_grad, weight_grad, Activate, BiasGrad, ForwardIo, CHUNKS};
use crate::graph::ConvGeom;
use crate::model::Act;
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

/// Calls `f(z0, y0)` for every output row of `c_out` channels: `y[o, 2i + a, 2j + b]` is
/// `z[(o·2 + a)·2 + b, i·w + j]` (`z`'s rows `stride` apart), so the `2w` floats of `y` from
/// `y0` interleave the `w` floats of `z` from `z0` (b = 0) and from `z0 + stride` (b = 1).
fn rows(g: &ConvGeom, c_out: usize, stride: usize, mut f: impl FnMut(usize, usize)) {
    for o in 0..c_out {
        for a in 0..2 {
            for i in 0..g.h {
                f((o * 2 + a) * 2 * stride + i * g.w, (o * 2 * g.h + 2 * i + a) * 2 * g.w);
            }
        }
    }
}

/// `out[2j] = even[j] + add`, `out[2j + 1] = odd[j] + add` for `j < even.len()`.
fn interleave(even: &[f32], odd: &[f32], add: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::level::avx512() {
        // SAFETY: the CPU has AVX-512F; the kernel checks the slice lengths.
        return unsafe { super::avx512::interleave(even, odd, add, out) };
    }
    for (pair, (e, o)) in out.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
        (pair[0], pair[1]) = (e + add, o + add);
    }
}

/// `even[j] = src[2j]`, `odd[j] = src[2j + 1]` for `j < even.len()`.
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::level::avx512() {
        // SAFETY: the CPU has AVX-512F; the kernel checks the slice lengths.
        return unsafe { super::avx512::deinterleave(src, even, odd) };
    }
    for (pair, (e, o)) in src.chunks_exact(2).zip(even.iter_mut().zip(odd)) {
        (*e, *o) = (pair[0], pair[1]);
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
    for_units(n * oparts, scratch, per * 4 * hw, |u, z| {
        let (s, o0) = (u / oparts, u % oparts * per);
        let chans = o0..(o0 + per).min(g.c_out);
        let wt = View { data: &w[o0 * 4..], rs: 1, cs: o4 };
        gemm(chans.len() * 4, g.c_in, hw, wt, View::rows(&x[s * xl..][..xl], hw), 0.0, z);
        let (at, len) = (s * yl + o0 * 4 * hw, chans.len() * 4 * hw);
        // SAFETY: unit `u` alone touches channels `chans` of sample `s` in `y` and `act`.
        let ys = unsafe { out.slice(at, len) };
        rows(g, chans.len(), hw, |z0, y0| {
            let bias = b[o0 + y0 / (4 * hw)];
            interleave(&z[z0..][..g.w], &z[z0 + hw..][..g.w], bias, &mut ys[y0..][..2 * g.w]);
        });
        if let Some(act) = &act {
            // SAFETY: as above.
            unsafe { act.apply(&out, at, len) };
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
        rows(g, g.c_out, st, |z0, y0| {
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
}
