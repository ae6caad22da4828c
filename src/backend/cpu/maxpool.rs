//! MaxPool2D 2x2, stride 2, 'valid': `x[n, c, h, w] -> y[n, c, h/2, w/2]`; an odd last row or
//! column is dropped. The running maximum starts at the window's first element, never at 0.

use crate::model::Shape;
use rayon::prelude::*;

/// `argmax` receives each maximum's index within its sample (`(c·h + iy)·w + ix`). Planes
/// (sample, channel) run in parallel.
pub fn forward(x: &[f32], y: &mut [f32], argmax: &mut [u32], n: usize, s: &Shape) {
    let (oh, ow, plane) = (s.h / 2, s.w / 2, s.h * s.w);
    let xs = x[..n * s.len()].par_chunks(plane);
    let ys = y[..n * s.c * oh * ow].par_chunks_mut(oh * ow).zip(argmax[..n * s.c * oh * ow].par_chunks_mut(oh * ow));
    xs.zip(ys).enumerate().for_each(|(p, (xs, (ys, am)))| {
        let base = (p % s.c * plane) as u32;
        for oy in 0..oh {
            let rows = [&xs[2 * oy * s.w..][..2 * ow], &xs[(2 * oy + 1) * s.w..][..2 * ow]];
            let (yr, ar) = (&mut ys[oy * ow..][..ow], &mut am[oy * ow..][..ow]);
            for ox in 0..ow {
                // The window in order (0,0), (0,1), (1,0), (1,1); the first maximum wins.
                let mut best = (rows[0][2 * ox], 0, 2 * ox);
                for (r, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let v = rows[r][2 * ox + dx];
                    if v > best.0 {
                        best = (v, r, 2 * ox + dx);
                    }
                }
                yr[ox] = best.0;
                ar[ox] = base + ((2 * oy + best.1) * s.w + best.2) as u32;
            }
        }
    });
}

/// Routes each output gradient to its window's maximum; every other input gets 0.
pub fn backward(gy: &[f32], argmax: &[u32], gx: &mut [f32], n: usize, s: &Shape) {
    let per_out = s.c * (s.h / 2) * (s.w / 2);
    let gxs = gx[..n * s.len()].par_chunks_mut(s.len());
    gxs.zip(gy[..n * per_out].par_chunks(per_out)).zip(argmax[..n * per_out].par_chunks(per_out)).for_each(
        |((gxs, gys), am)| {
            gxs.fill(0.0);
            for (g, &i) in gys.iter().zip(am) {
                gxs[i as usize] = *g;
            }
        },
    );
}
