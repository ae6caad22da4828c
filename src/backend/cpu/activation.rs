//! Elementwise activations and dropout, forward and backward; the backward passes read the
//! forward output `y`.

use crate::model::Act;
use crate::rng::mask_uniform;
use rayon::prelude::*;

/// Elements per parallel task: the MLP's 10,000 activations still make three.
const CHUNK: usize = 1 << 12;

/// tanh from one `exp` (libm's `tanhf` costs several times more; the CNN's tanh variants spend
/// a third of an epoch in it), with the odd series near 0 where `1 - e^(-2|x|)` would cancel.
/// Within a few ulp of `f32::tanh`; the GPU's `activation.wgsl` uses the same formula.
fn tanh(x: f32) -> f32 {
    let ax = x.abs();
    if ax < 0.125 {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    }
    let e = (-2.0 * ax).exp();
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// `y = act(x)` in parallel chunks.
pub fn forward(act: Act, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        y.copy_from_slice(x);
        apply(act, y);
    });
}

/// `gx = gy·act'(y)` in parallel chunks, from the forward output `y`.
pub fn backward(act: Act, y: &[f32], gy: &[f32], gx: &mut [f32]) {
    gx.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK).zip(gy.par_chunks(CHUNK))).for_each(|(gx, (y, gy))| {
        gx.copy_from_slice(gy);
        apply_grad(act, y, gx);
    });
}

/// `v = act(v)` on this thread (a product's output block, while it is in cache).
pub fn apply(act: Act, v: &mut [f32]) {
    /// Generic in `f`, so that it is inlined and vectorised.
    fn each(v: &mut [f32], f: impl Fn(f32) -> f32) {
        v.iter_mut().for_each(|v| *v = f(*v));
    }
    match act {
        Act::Relu => each(v, |v| v.max(0.0)),
        Act::Sigmoid => each(v, |v| 1.0 / (1.0 + (-v).exp())),
        Act::Tanh => each(v, tanh),
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
}

/// `g = g·act'(y)` on this thread, from the forward output `y`.
pub fn apply_grad(act: Act, y: &[f32], g: &mut [f32]) {
    /// Generic in `d`, so that it is inlined and vectorised.
    fn each(y: &[f32], g: &mut [f32], d: impl Fn(f32) -> f32) {
        g.iter_mut().zip(y).for_each(|(g, y)| *g *= d(*y));
    }
    match act {
        Act::Relu => each(y, g, |y| if y > 0.0 { 1.0 } else { 0.0 }),
        Act::Sigmoid => each(y, g, |y| y * (1.0 - y)),
        Act::Tanh => each(y, g, |y| 1.0 - y * y),
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
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

#[cfg(test)]
mod tests {
    /// Against f64's tanh over [-12, 12] in steps of 1e-3 and at tiny values: within 5e-7
    /// relative (the worst case is just above 0.125, where 1 - e^(-2|x|) loses two bits).
    #[test]
    fn tanh_is_within_a_few_ulp() {
        let xs = (-12_000..=12_000).map(|i| i as f32 * 1e-3).chain([1e-30, -3e-8, 0.1249999, 0.125, f32::MAX]);
        for x in xs {
            let (got, want) = (super::tanh(x) as f64, (x as f64).tanh());
            assert!((got - want).abs() <= 5e-7 * want.abs(), "tanh({x}) = {got}, want {want}");
        }
        assert_eq!(super::tanh(0.0), 0.0);
    }
}
