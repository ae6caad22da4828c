//! MaxPool2D 2x2, stride 2, 'valid': `x[n, c, h, w] -> y[n, c, h/2, w/2]`; an odd last row or
//! column is dropped. The running maximum starts at the window's first element, never at 0.

use crate::model::Shape;
use rayon::prelude::*;

/// `argmax` receives each maximum's index within its sample (`(c·h + iy)·w + ix`).
pub fn forward(x: &[f32], y: &mut [f32], argmax: &mut [u32], n: usize, s: &Shape) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    let per_out = s.c * oh * ow;
    let xs = x[..n * s.len()].par_chunks(s.len());
    let ys = y[..n * per_out].par_chunks_mut(per_out).zip(argmax[..n * per_out].par_chunks_mut(per_out));
    xs.zip(ys).for_each(|(xs, (ys, am))| {
        for c in 0..s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = (c * s.h + 2 * oy) * s.w + 2 * ox;
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let i = (c * s.h + 2 * oy + dy) * s.w + 2 * ox + dx;
                        if xs[i] > xs[best] {
                            best = i;
                        }
                    }
                    let o = (c * oh + oy) * ow + ox;
                    ys[o] = xs[best];
                    am[o] = best as u32;
                }
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
