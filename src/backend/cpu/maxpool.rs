//! MaxPool2D 2x2, stride 2, 'valid': `x[n, c, h, w] -> y[n, c, h/2, w/2]`; an odd last row or
//! column is dropped. The running maximum starts at the window's first element, never at 0.

use super::activation;
use super::gemm::Shared;
#[cfg(target_arch = "x86_64")]
use super::level::{level, Level};
use crate::model::{Act, Shape};
use rayon::prelude::*;

/// One output row from input rows `r0`, `r1`: each window's maximum, the first in order (0,0),
/// (0,1), (1,0), (1,1) when tied, and its index `first + 2·ox` (+1 right column, +`w` lower row).
fn pool_row(r0: &[f32], r1: &[f32], w: usize, first: u32, y: &mut [f32], argmax: &mut [u32]) {
    // SAFETY (both kernels): the CPU has the level's instructions; they check the slice lengths.
    #[cfg(target_arch = "x86_64")]
    match level() {
        Level::Avx512 => return unsafe { super::avx512::max_pool_row(r0, r1, w, first, y, argmax) },
        Level::Avx2 => return unsafe { super::avx2::max_pool_row(r0, r1, w, first, y, argmax) },
        _ => {}
    }
    for (ox, (y, am)) in y.iter_mut().zip(argmax).enumerate() {
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

/// The adjoint of [`pool_row`]: the first `2·gy.len()` floats of input-gradient rows `g0`, `g1`
/// get each window's gradient at its maximum and 0 elsewhere.
fn grad_row(gy: &[f32], argmax: &[u32], w: usize, first: u32, g0: &mut [f32], g1: &mut [f32]) {
    // SAFETY (both kernels): the CPU has the level's instructions; they check the slice lengths.
    #[cfg(target_arch = "x86_64")]
    match level() {
        Level::Avx512 => return unsafe { super::avx512::max_pool_grad_row(gy, argmax, w, first, g0, g1) },
        Level::Avx2 => return unsafe { super::avx2::max_pool_grad_row(gy, argmax, w, first, g0, g1) },
        _ => {}
    }
    for (ox, (&g, &am)) in gy.iter().zip(argmax).enumerate() {
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
/// at an even row, `first` floats into the sample.
pub fn pool_rows(x: &[f32], w: usize, first: usize, y: &mut [f32], argmax: &mut [u32]) {
    let ow = w / 2;
    for (oy, (ys, am)) in y.chunks_exact_mut(ow).zip(argmax.chunks_exact_mut(ow)).enumerate() {
        let (r0, r1) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
        pool_row(r0, r1, w, (first + 2 * oy * w) as u32, ys, am);
    }
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
        let base = p % s.c * plane;
        for (oy, rows) in gxs.chunks_exact_mut(2 * s.w).enumerate() {
            let (g0, g1) = rows.split_at_mut(s.w);
            let (gys, am) = (&gys[oy * ow..][..ow], &am[oy * ow..][..ow]);
            grad_row(gys, am, s.w, (base + 2 * oy * s.w) as u32, g0, g1);
            g0[2 * ow..].fill(0.0);
            g1[2 * ow..].fill(0.0);
        }
        gxs[2 * oh * s.w..].fill(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The vector rows (where the CPU has them) against the element-by-element rule, on values
    /// drawn from a few levels so that windows tie, with NaNs, odd widths and partial vectors,
    /// rows shorter than a vector among them; nothing past a row's outputs is written.
    #[test]
    fn rows_follow_first_maximum_rule() {
        let mut rng = Rng::new(5);
        for w in [2, 4, 7, 14, 15, 16, 18, 31, 32, 33, 70] {
            let ow = w / 2;
            let level = |rng: &mut Rng| match rng.next_u32() % 5 {
                0 => f32::NAN,
                v => v as f32,
            };
            let rows: Vec<f32> = (0..2 * w).map(|_| level(&mut rng)).collect();
            let (r0, r1) = rows.split_at(w);
            let (mut y, mut am) = (vec![-1.0; ow + 16], vec![7; ow + 16]);
            pool_row(r0, r1, w, 100, &mut y[..ow], &mut am[..ow]);
            assert!(
                y[ow..].iter().all(|&v| v == -1.0) && am[ow..].iter().all(|&v| v == 7),
                "w {w}: wrote past the row"
            );
            for ox in 0..ow {
                let window = [(r0[2 * ox], 0), (r0[2 * ox + 1], 1), (r1[2 * ox], w), (r1[2 * ox + 1], w + 1)];
                let best = window[1..].iter().fold(window[0], |b, &v| if v.0 > b.0 { v } else { b });
                assert_eq!(
                    (y[ox].to_bits(), am[ox]),
                    (best.0.to_bits(), 100 + (2 * ox + best.1) as u32),
                    "w {w}, ox {ox}"
                );
            }
            let gy: Vec<f32> = (0..ow).map(|i| i as f32 + 1.0).collect();
            let (mut g0, mut g1) = (vec![-1.0; 2 * ow + 32], vec![-1.0; 2 * ow + 32]);
            grad_row(&gy, &am[..ow], w, 100, &mut g0[..2 * ow], &mut g1[..2 * ow]);
            let untouched = |g: &[f32]| g[2 * ow..].iter().all(|&v| v == -1.0);
            assert!(untouched(&g0) && untouched(&g1), "w {w}: gradient written past the row");
            for ox in 0..ow {
                let off = am[ox] as usize - 100 - 2 * ox;
                let want = |o: usize| if o == off { gy[ox] } else { 0.0 };
                assert_eq!(
                    [g0[2 * ox], g0[2 * ox + 1], g1[2 * ox], g1[2 * ox + 1]],
                    [want(0), want(1), want(w), want(w + 1)]
                );
            }
        }
    }
}
