//! AvgPool2D 2x2, stride 2, 'valid': `x[n, c, h, w] -> y[n, c, h/2, w/2]`, each window's mean
//! `((a + b) + (c + d))·0.25` (a quarter is exact, so only the two-level sum rounds); an odd
//! last row or column is dropped. With `scale` 1 the same loops are nearest 2x upsampling's
//! backward (forward) and upsampling (backward). Planes run in parallel.

use crate::model::Shape;
use rayon::prelude::*;

pub fn forward(x: &[f32], y: &mut [f32], n: usize, s: &Shape, scale: f32) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    y[..n * s.c * oh * ow].par_chunks_mut(oh * ow).zip(x.par_chunks(s.h * s.w)).for_each(|(ys, xs)| {
        for (oy, row) in ys.chunks_mut(ow).enumerate() {
            let (r0, r1) = (&xs[2 * oy * s.w..][..2 * ow], &xs[(2 * oy + 1) * s.w..][..2 * ow]);
            for (ox, y) in row.iter_mut().enumerate() {
                *y = ((r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1])) * scale;
            }
        }
    });
}

/// The adjoint of [`forward`]: `gy·scale` at each element of its window, 0 in a dropped row or
/// column.
pub fn backward(gy: &[f32], gx: &mut [f32], n: usize, s: &Shape, scale: f32) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    gx[..n * s.len()].par_chunks_mut(s.h * s.w).zip(gy.par_chunks(oh * ow)).for_each(|(gs, gys)| {
        for (iy, row) in gs.chunks_mut(s.w).enumerate() {
            for (ix, g) in row.iter_mut().enumerate() {
                *g = if iy / 2 < oh && ix / 2 < ow { gys[iy / 2 * ow + ix / 2] * scale } else { 0.0 };
            }
        }
    });
}
