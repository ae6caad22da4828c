//! Elementwise activations and dropout, forward and backward; the backward passes read the
//! forward output `y`.

use super::level::{at_level, level, Level, Vectorised};
use crate::model::{Act, LEAKY_SLOPE};
use crate::rng::mask_uniform;
use rayon::prelude::*;

/// Elements per parallel task: the MLP's 10,000 activations still make three.
const CHUNK: usize = 1 << 12;

/// 1.5·2²³: adding it rounds an f32 below 2²² in magnitude to an integer, held in the low bits
/// of the sum's mantissa.
const ROUND: f32 = 12_582_912.0;

/// `Σ c[i]·y^i` by Horner's rule, the highest power first.
#[inline(always)]
fn horner(y: f32, c: &[f32]) -> f32 {
    c.iter().fold(0.0, |acc, &c| acc * y + c)
}

/// `(2ⁿ, e^r - 1)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`, for `-87.3 ≤ x ≤ 0`, in straight-line
/// f32 arithmetic that vectorises at every level and gives the same bits at each (no fused
/// multiply-adds): `n` rounded with [`ROUND`], `ln2` in two parts so that `n·ln2_hi` is exact,
/// `e^r - 1` by its Taylor series to `r⁷` (truncation below 6e-9, and no cancellation near 0),
/// `2ⁿ` from `n`'s bits. NaN stays NaN.
#[inline(always)]
fn reduce(x: f32) -> (f32, f32) {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let em1 = r + r * r * horner(r, &[1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5]);
    (f32::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23), em1)
}

/// `e^x` for `x ≤ 0` from [`reduce`], within 2 ulp; 0 below -87.3 (where `e^x` nears the
/// smallest normal float).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let (scale, em1) = reduce(if x < -87.3 { -87.3 } else { x });
    if x < -87.3 {
        0.0
    } else {
        scale * (1.0 + em1)
    }
}

/// `tanh` in f32, within 4 ulp (2.2 at worst over [0, 10] in steps of 5e-6), from [`reduce`] of `-2|x|`: below `|x|` = 0.55, `-m/(2 + m)`
/// with `m = e^(-2|x|) - 1 = 2ⁿ·(e^r - 1) + (2ⁿ - 1)` (no cancellation near 0); above,
/// `1 - 2e/(1 + e)` with `e = 2ⁿ·(1 + (e^r - 1))` (no error of `m` near -1 doubled by the
/// quotient). One quotient either way; the sign of `x`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let y = -2.0 * a;
    let (scale, em1) = reduce(if y < -87.3 { -87.3 } else { y });
    let (m, e) = (scale * em1 + (scale - 1.0), scale * (1.0 + em1));
    let small = a < 0.55;
    let (num, den) = if small { (-m, 2.0 + m) } else { (e + e, 1.0 + e) };
    let q = num / den;
    (if small { q } else { 1.0 - q }).copysign(x)
}

/// The logistic function in f32, within 4 ulp, from `e = e^(-|x|)`: `1/(1 + e)` for `x ≥ 0`,
/// `e/(1 + e)` below (0 below -87.3).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    (if x >= 0.0 { 1.0 } else { e }) / (1.0 + e)
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

/// [`apply`] compiled for `level`'s instructions ([`at_level`]).
pub fn apply_at(level: Level, act: Act, v: &mut [f32]) {
    at_level(level, EachAct(act, v))
}

/// [`each_act`]'s operands.
struct EachAct<'a>(Act, &'a mut [f32]);

impl Vectorised for EachAct<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        each_act(self.0, self.1)
    }
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
        Act::LeakyRelu => each(v, |v| if v > 0.0 { v } else { v * LEAKY_SLOPE }),
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
}

/// [`apply_grad`] on the first `len` floats, in parallel chunks.
pub fn apply_grad_par(act: Act, y: &[f32], g: &mut [f32], len: usize) {
    let parts = g[..len].par_chunks_mut(CHUNK).zip(y[..len].par_chunks(CHUNK));
    parts.for_each(|(g, y)| apply_grad(act, y, g));
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
        Act::LeakyRelu => each(y, g, |y| if y > 0.0 { 1.0 } else { LEAKY_SLOPE }),
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

    /// Against f64's tanh and logistic: within 4 ulp (2⁻²¹ relative: a few roundings of f32
    /// arithmetic), or within twice the smallest normal f32 of 0, where the logistic flushes.
    #[test]
    fn activations_are_within_4_ulp() {
        for x in inputs() {
            let want = [(x as f64).tanh(), 1.0 / (1.0 + (-(x as f64)).exp())];
            for (got, want, name) in [(tanh(x), want[0], "tanh"), (sigmoid(x), want[1], "sigmoid")] {
                let bound = want.abs() * 2f64.powi(-21) + 2.0 * f64::from(f32::MIN_POSITIVE);
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
        for act in [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu] {
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
