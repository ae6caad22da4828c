//! Elementwise activations and dropout, forward and backward; the backward passes read the
//! forward output `y`.

use super::level::{level, Level};
use crate::model::Act;
use crate::rng::mask_uniform;
use rayon::prelude::*;

/// Elements per parallel task: the MLP's 10,000 activations still make three.
const CHUNK: usize = 1 << 12;

/// 1.5·2⁵²: adding it rounds an f64 below 2⁵¹ in magnitude to an integer, held in the low
/// bits of the sum's mantissa.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `e^x` for `x ≤ 0` in f64, in straight-line arithmetic that vectorises at every level and
/// gives the same bits at each: `x = n·ln2 + r` (`|r| ≤ ln2/2`, `n` rounded with [`ROUND`]),
/// `e^r` by its Taylor series to `r⁹` (relative error below 1e-11), `2ⁿ` from `n`'s bits.
/// Below -700 it gives `e^-700`; NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = if x < -700.0 { -700.0 } else { x };
    let t = x * std::f64::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let c = [1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];
    let p = 1.0 + r + r * r * c.iter().fold(1.0 / 362_880.0, |acc, &c| acc * r + c);
    // n ≥ -1010 here: 2ⁿ is a normal number.
    let scale = f64::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023)) << 52);
    p * scale
}

/// `tanh` rounded once from f64: `(1 - e)/(1 + e)` with `e = e^(-2|x|)`, or the odd series to
/// `x⁹` below 0.125, where `1 - e` would cancel; the sign of `x`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let a = f64::from(x.abs());
    let e = exp_nonpositive(-2.0 * a);
    let a2 = a * a;
    let series = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))));
    let t = if a < 0.125 { series } else { (1.0 - e) / (1.0 + e) };
    (t as f32).copysign(x)
}

/// The logistic function rounded once from f64, from `e = e^(-|x|)`: `1/(1 + e)` for `x ≥ 0`,
/// `e/(1 + e)` below.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-f64::from(x.abs()));
    (if x >= 0.0 { 1.0 } else { e } / (1.0 + e)) as f32
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

/// `v = act(v)` on this thread (a product's output block, while it is in cache), at the
/// process's [`level`].
pub fn apply(act: Act, v: &mut [f32]) {
    apply_at(level(), act, v)
}

/// [`apply`] compiled for `level`'s instructions: the same operations at each, so the same bits.
pub fn apply_at(level: Level, act: Act, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(act: Act, v: &mut [f32]) {
            each_act(act, v)
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(act: Act, v: &mut [f32]) {
            each_act(act, v)
        }
        match level {
            // SAFETY: a level is only chosen on a CPU that has its instructions.
            Level::Avx2 => return unsafe { avx2(act, v) },
            Level::Avx512 => return unsafe { avx512(act, v) },
            _ => {}
        }
    }
    each_act(act, v)
}

/// The loops of [`apply`], inlined into each level's function so that they vectorise with its
/// instructions.
#[inline(always)]
fn each_act(act: Act, v: &mut [f32]) {
    #[inline(always)]
    fn each(v: &mut [f32], f: impl Fn(f32) -> f32) {
        v.iter_mut().for_each(|v| *v = f(*v));
    }
    match act {
        Act::Relu => each(v, |v| v.max(0.0)),
        Act::Sigmoid => each(v, sigmoid),
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
    use super::*;

    /// Inputs over [-100, 100] in steps of 1e-3, tiny values, the series' edge, extremes.
    fn inputs() -> Vec<f32> {
        let special = [1e-30, -3e-8, 0.1249999, 0.125, -0.125, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY];
        (-100_000..=100_000).map(|i| i as f32 * 1e-3).chain(special).collect()
    }

    /// Against f64's tanh and logistic: the result rounded once (half an ulp) after f64 work
    /// whose error is below 1e-11 relative, so within 0.5 ulp + 1e-11, which 6.0e-8 relative
    /// (f32's half-ulp bound, 2⁻²⁴) plus that bounds.
    #[test]
    fn activations_are_correctly_rounded_but_for_ties() {
        for x in inputs() {
            let want = [(x as f64).tanh(), 1.0 / (1.0 + (-(x as f64)).exp())];
            for (got, want, name) in [(tanh(x), want[0], "tanh"), (sigmoid(x), want[1], "sigmoid")] {
                let bound = want.abs() * (2f64.powi(-24) + 1e-11) + f64::from(f32::from_bits(1));
                assert!((got as f64 - want).abs() <= bound, "{name}({x}) = {got}, want {want}");
            }
        }
        assert_eq!((tanh(0.0), tanh(-0.0).to_bits(), sigmoid(0.0)), (0.0, (-0.0f32).to_bits(), 0.5));
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
    }

    /// Every level this CPU runs gives the scalar level's bits.
    #[test]
    fn levels_give_the_same_bits() {
        let xs = inputs();
        for act in [Act::Relu, Act::Sigmoid, Act::Tanh] {
            let mut want = xs.clone();
            apply_at(Level::Scalar, act, &mut want);
            for level in Level::available() {
                let mut got = xs.clone();
                apply_at(level, act, &mut got);
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{} at {} differs from scalar", act.name(), level.name());
            }
        }
    }
}
