//! MaxPool2D 2x2, stride 2, 'valid': `x[n, c, h, w] -> y[n, c, h/2, w/2]`; an odd last row or
//! column is dropped. The running maximum starts at the window's first element, never at 0.

use super::activation;
use super::gemm::Shared;
#[cfg(target_arch = "x86_64")]
use super::level::{level, Level};
use crate::model::{Act, Shape};
use rayon::prelude::*;

/// Calls `row(r0, r1, first, y, argmax)` for each output row `y` (and `argmax`) of a plane `w`
/// wide, in order, with its input rows `r0`, `r1` and the index `first` of `r0`'s first float.
/// Each slice runs on to the end of the plane's: a kernel may read past its rows, and write past
/// its output row what the next row then overwrites. Inlined into each level's plane function,
/// so that its row kernel is too.
#[inline(always)]
pub(super) fn each_row(
    x: &[f32],
    w: usize,
    first: usize,
    y: &mut [f32],
    argmax: &mut [u32],
    mut row: impl FnMut(&[f32], &[f32], u32, &mut [f32], &mut [u32]),
) {
    let ow = w / 2;
    for oy in 0..y.len() / ow {
        let (r0, r1) = (&x[2 * oy * w..], &x[(2 * oy + 1) * w..]);
        row(r0, r1, (first + 2 * oy * w) as u32, &mut y[oy * ow..], &mut argmax[oy * ow..]);
    }
}

/// Calls `row(gy, argmax, first, rows)` for each pair of input-gradient rows of a plane `w`
/// wide, in order, with the output gradient and argmax of their output row, then zeroes an odd
/// last column and row (which no window covers). As in [`each_row`], each slice runs on to the
/// end of the plane's: `rows` from the pair's first row.
#[inline(always)]
pub(super) fn each_grad_row(
    gy: &[f32],
    argmax: &[u32],
    w: usize,
    first: usize,
    gx: &mut [f32],
    mut row: impl FnMut(&[f32], &[u32], u32, &mut [f32]),
) {
    let (ow, oh) = (w / 2, gy.len() / (w / 2));
    for oy in 0..oh {
        let rows = &mut gx[2 * oy * w..];
        row(&gy[oy * ow..], &argmax[oy * ow..], (first + 2 * oy * w) as u32, rows);
        rows[2 * ow..w].fill(0.0);
        rows[w + 2 * ow..2 * w].fill(0.0);
    }
    gx[2 * oh * w..].fill(0.0);
}

/// A level's plane functions, `max_pool_plane` and `max_pool_grad_plane`: its row kernels
/// `max_pool_row` and `max_pool_grad_row` over each row of a plane ([`each_row`],
/// [`each_grad_row`]), compiled with the level's target `feature` so that the row kernels are
/// inlined.
#[cfg(target_arch = "x86_64")]
macro_rules! plane_kernels {
    ($feature:literal) => {
        /// `max_pool_row` over each output row of a plane.
        ///
        /// # Safety
        /// The CPU must have the level's instructions.
        #[target_feature(enable = $feature)]
        pub unsafe fn max_pool_plane(x: &[f32], w: usize, first: usize, y: &mut [f32], argmax: &mut [u32]) {
            // SAFETY: the caller vouches for the CPU.
            let row = |r0: &[f32], r1: &[f32], first, y: &mut [f32], am: &mut [u32]| unsafe {
                max_pool_row(r0, r1, w, first, y, am)
            };
            super::maxpool::each_row(x, w, first, y, argmax, row);
        }

        /// `max_pool_grad_row` over each pair of input-gradient rows of a plane.
        ///
        /// # Safety
        /// The CPU must have the level's instructions.
        #[target_feature(enable = $feature)]
        pub unsafe fn max_pool_grad_plane(gy: &[f32], argmax: &[u32], w: usize, first: usize, gx: &mut [f32]) {
            // SAFETY: the caller vouches for the CPU.
            let row =
                |gy: &[f32], am: &[u32], first, rows: &mut [f32]| unsafe { max_pool_grad_row(gy, am, w, first, rows) };
            super::maxpool::each_grad_row(gy, argmax, w, first, gx, row);
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use plane_kernels;

/// One output row from input rows `r0`, `r1`: each window's maximum, the first in order (0,0),
/// (0,1), (1,0), (1,1) when tied, and its index `first + 2·ox` (+1 right column, +`w` lower row).
fn pool_row(r0: &[f32], r1: &[f32], w: usize, first: u32, y: &mut [f32], argmax: &mut [u32]) {
    for (ox, (y, am)) in y.iter_mut().zip(argmax).take(w / 2).enumerate() {
        let mut best = (r0[2 * ox], 0);
        for (v, o) in [(r0[2 * ox + 1], 1), (r1[2 * ox], w), (r1[2 * ox + 1], w + 1)] {
            if v > best.0 {
                best = (v, o);
            }
        }
        *y = best.0;
        *am = first + (2 * ox + best.1) as u32;
    }
}

/// The adjoint of [`pool_row`]: the first `2·(w/2)` floats of input-gradient rows `g0`, `g1`,
/// the first two rows of `rows`, get each window's gradient at its maximum and 0 elsewhere.
fn grad_row(gy: &[f32], argmax: &[u32], w: usize, first: u32, rows: &mut [f32]) {
    let (g0, g1) = rows.split_at_mut(w);
    for (ox, (&g, &am)) in gy.iter().zip(argmax).take(w / 2).enumerate() {
        let off = (am - first) as usize - 2 * ox;
        let at = |o: usize| if off == o { g } else { 0.0 };
        (g0[2 * ox], g0[2 * ox + 1], g1[2 * ox], g1[2 * ox + 1]) = (at(0), at(1), at(w), at(w + 1));
    }
}

/// `argmax` receives each maximum's index within its sample (`(c·h + iy)·w + ix`). Planes
/// (sample, channel) run in parallel.
pub fn forward(x: &[f32], y: &mut [f32], argmax: &mut [u32], n: usize, s: &Shape) {
    let (oh, ow, plane) = (s.h / 2, s.w / 2, s.h * s.w);
    let xs = x[..n * s.len()].par_chunks(plane);
    let ys = y[..n * s.c * oh * ow].par_chunks_mut(oh * ow).zip(argmax[..n * s.c * oh * ow].par_chunks_mut(oh * ow));
    xs.zip(ys).enumerate().for_each(|(p, (xs, (ys, am)))| pool_rows(xs, s.w, p % s.c * plane, ys, am));
}

/// The output rows `y` (and `argmax`) of one plane `w` wide from its input rows `x`, which start
/// at an even row, `first` floats into the sample: the level's kernel, chosen once per plane.
pub fn pool_rows(x: &[f32], w: usize, first: usize, y: &mut [f32], argmax: &mut [u32]) {
    // SAFETY (both kernels): the CPU has the level's instructions; they check the slice lengths.
    #[cfg(target_arch = "x86_64")]
    match level() {
        Level::Avx512 => return unsafe { super::avx512::max_pool_plane(x, w, first, y, argmax) },
        Level::Avx2 => return unsafe { super::avx2::max_pool_plane(x, w, first, y, argmax) },
        _ => {}
    }
    each_row(x, w, first, y, argmax, |r0, r1, first, y, am| pool_row(r0, r1, w, first, y, am));
}

/// The input gradient `gx` of one plane `w` wide from its output gradient `gy` and `argmax`,
/// `first` floats into the sample ([`each_grad_row`]): the level's kernel, chosen once per plane.
fn grad_plane(gy: &[f32], argmax: &[u32], w: usize, first: usize, gx: &mut [f32]) {
    // SAFETY (both kernels): as in `pool_rows`.
    #[cfg(target_arch = "x86_64")]
    match level() {
        Level::Avx512 => return unsafe { super::avx512::max_pool_grad_plane(gy, argmax, w, first, gx) },
        Level::Avx2 => return unsafe { super::avx2::max_pool_grad_plane(gy, argmax, w, first, gx) },
        _ => {}
    }
    each_grad_row(gy, argmax, w, first, gx, |gy, am, first, rows| grad_row(gy, am, w, first, rows));
}

/// Routes each output gradient to its window's maximum; every other input gets 0. Planes run
/// in parallel. With `act = (f, y, out)`, then applies `f`'s backward plane by plane while in
/// cache: into `out` (`out = gx·f'(y)`), or in place in `gx` when `out` is `None` (when nothing
/// reads the pooling's own gradient).
#[allow(clippy::type_complexity)]
pub fn backward(
    gy: &[f32],
    argmax: &[u32],
    gx: &mut [f32],
    act: Option<(Act, &[f32], Option<&mut [f32]>)>,
    n: usize,
    s: &Shape,
) {
    let (oh, ow, plane) = (s.h / 2, s.w / 2, s.h * s.w);
    let act = act.map(|(f, y, out)| (f, y, out.map(|out| Shared::new(&mut out[..n * s.len()]))));
    let gxs = gx[..n * s.len()].par_chunks_mut(plane);
    let outs = gy[..n * s.c * oh * ow].par_chunks(oh * ow).zip(argmax[..n * s.c * oh * ow].par_chunks(oh * ow));
    gxs.zip(outs).enumerate().for_each(|(p, (gxs, (gys, am)))| {
        grad_plane(gys, am, s.w, p % s.c * plane, gxs);
        if let Some((f, y, out)) = &act {
            let at = p * plane;
            let g = match out {
                Some(out) => {
                    // SAFETY: plane `p` alone touches these floats of `out`.
                    let out = unsafe { out.slice(at, plane) };
                    out.copy_from_slice(gxs);
                    out
                }
                None => gxs,
            };
            activation::apply_grad(*f, &y[at..][..plane], g);
        }
    });
}

/// [`backward`] with an activation's backward `act = (f, pooled)` applied in place, from the
/// pooling's output `pooled` (the activation's output at each window's maximum): each window's
/// gradient goes to its maximum already multiplied by `f'` there, every other input gets 0.
/// Where `f'` is finite, the bits of [`backward`] (which multiplies those zeros by `f'` too),
/// without reading the activation's whole output or passing over `gx` twice.
pub fn backward_at_maxima(gy: &[f32], argmax: &[u32], gx: &mut [f32], act: (Act, &[f32]), n: usize, s: &Shape) {
    let (f, pooled) = act;
    let (pl, plane) = (s.h / 2 * (s.w / 2), s.h * s.w);
    let outs = gy[..n * s.c * pl].par_chunks(pl).zip(argmax[..n * s.c * pl].par_chunks(pl).zip(pooled.par_chunks(pl)));
    let planes = gx[..n * s.len()].par_chunks_mut(plane).zip(outs).enumerate();
    planes.for_each(|(p, (gxs, (gys, (am, ys))))| {
        SCALED.with_borrow_mut(|g| {
            g.clear();
            g.extend_from_slice(gys);
            activation::apply_grad(f, ys, g);
            grad_plane(g, am, s.w, p % s.c * plane, gxs);
        })
    });
}

thread_local! {
    /// Each thread's plane of scaled output gradients for [`backward_at_maxima`], kept between
    /// steps so that a step allocates nothing.
    static SCALED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The level's planes against the element-by-element rule, on values drawn from a few levels
    /// so that windows tie, with NaNs, odd widths and partial vectors, rows shorter than a vector
    /// among them; nothing past a plane's outputs is written, and the gradient's odd last
    /// column and row are zero.
    #[test]
    fn rows_follow_first_maximum_rule() {
        let mut rng = Rng::new(5);
        for (w, h) in [
            (2, 2),
            (4, 3),
            (7, 2),
            (6, 8),
            (10, 9),
            (14, 14),
            (15, 5),
            (16, 2),
            (18, 4),
            (31, 3),
            (32, 2),
            (33, 2),
            (70, 3),
        ] {
            let (ow, oh) = (w / 2, h / 2);
            let level = |rng: &mut Rng| match rng.next_u32() % 5 {
                0 => f32::NAN,
                v => v as f32,
            };
            let x: Vec<f32> = (0..h * w).map(|_| level(&mut rng)).collect();
            let (mut y, mut am) = (vec![-1.0; oh * ow + 16], vec![7; oh * ow + 16]);
            pool_rows(&x, w, 100, &mut y[..oh * ow], &mut am[..oh * ow]);
            let past = oh * ow;
            assert!(
                y[past..].iter().all(|&v| v == -1.0) && am[past..].iter().all(|&v| v == 7),
                "w {w}: wrote past the plane"
            );
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let at = 2 * oy * w + 2 * ox;
                let window = [(x[at], 0), (x[at + 1], 1), (x[at + w], w), (x[at + w + 1], w + 1)];
                let best = window[1..].iter().fold(window[0], |b, &v| if v.0 > b.0 { v } else { b });
                assert_eq!(
                    (y[oy * ow + ox].to_bits(), am[oy * ow + ox]),
                    (best.0.to_bits(), (100 + at + best.1) as u32),
                    "w {w}, ({oy}, {ox})"
                );
            }
            let gy: Vec<f32> = (0..oh * ow).map(|i| i as f32 + 1.0).collect();
            let mut gx = vec![-1.0; h * w + 32];
            grad_plane(&gy, &am[..oh * ow], w, 100, &mut gx[..h * w]);
            assert!(gx[h * w..].iter().all(|&v| v == -1.0), "w {w}: gradient written past the plane");
            let mut want = vec![0.0; h * w];
            for (i, &g) in gy.iter().enumerate() {
                want[am[i] as usize - 100] = g;
            }
            assert_eq!(gx[..h * w], want[..], "w {w}, h {h}");
        }
    }
}
