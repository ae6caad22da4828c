//! Elementwise activations and dropout, forward and backward; the backward passes read the
//! forward output `y`.

use crate::model::Act;
use crate::rng::mask_uniform;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn forward(act: Act, x: &[f32], y: &mut [f32]) {
    let f: fn(f32) -> f32 = match act {
        Act::Relu => |v| v.max(0.0),
        Act::Sigmoid => |v| 1.0 / (1.0 + (-v).exp()),
        Act::Tanh => f32::tanh,
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    };
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = f(*x)));
}

pub fn backward(act: Act, y: &[f32], gy: &[f32], gx: &mut [f32]) {
    let d: fn(f32) -> f32 = match act {
        Act::Relu => |y| if y > 0.0 { 1.0 } else { 0.0 },
        Act::Sigmoid => |y| y * (1.0 - y),
        Act::Tanh => |y| 1.0 - y * y,
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    };
    gx.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK).zip(gy.par_chunks(CHUNK))).for_each(|(gx, (y, gy))| {
        gx.iter_mut().zip(y.iter().zip(gy)).for_each(|(gx, (y, gy))| *gx = gy * d(*y));
    });
}

/// `mask[i]` is 0 where the counter hash of (`seed`, `step`, `i`) falls below `rate`, else
/// `1/(1-rate)`; `y = x·mask`.
pub fn dropout(x: &[f32], y: &mut [f32], mask: &mut [f32], rate: f32, seed: u32, step: u32) {
    let keep = 1.0 / (1.0 - rate);
    for (i, (m, (y, x))) in mask.iter_mut().zip(y.iter_mut().zip(x)).enumerate() {
        *m = if mask_uniform(seed, step, i as u32) < rate { 0.0 } else { keep };
        *y = x * *m;
    }
}

pub fn dropout_backward(gy: &[f32], mask: &[f32], gx: &mut [f32]) {
    gx.iter_mut().zip(gy.iter().zip(mask)).for_each(|(gx, (gy, m))| *gx = gy * m);
}
