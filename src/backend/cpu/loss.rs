//! Losses fused with the output activation, and the metrics they add to a metrics buffer
//! (slots in [`crate::graph::slot`]). Sums run in f64.

use super::activation::exp_nonpositive;
use super::level::{at_level, level, Level, Vectorised};
use crate::graph::{slot, MAX_PIXEL_CLASSES};
use rayon::prelude::*;

/// Elements per parallel chunk of the sigmoid loss (fixed, so sums do not depend on threads).
const CHUNK: usize = 1 << 13;

/// `ln(1 + e)` for `e` in [0, 1] as `2·atanh(s)`, `s = e/(2 + e) ≤ 1/3`, by its series to `s¹⁷`
/// in f64 (relative error below 1e-10, far under f32's 6e-8): straight-line arithmetic that
/// costs a third of a libm `log1pf` call, which took half of the FCN's loss.
#[inline(always)]
fn ln_1p(e: f32) -> f32 {
    let e = e as f64;
    let s = e / (2.0 + e);
    let s2 = s * s;
    let series = [1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0];
    (2.0 * s * series.iter().fold(0.0, |acc, c| acc * s2 + c)) as f32
}

/// (first sample, samples) of each batch of `batch` in a step of `n` (the last may be short).
pub fn batches(n: usize, batch: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(batch.max(1)).map(move |at| (at, batch.min(n - at)))
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

/// Softmax + categorical cross-entropy on `logits[n, k]`, mean over the batch. `exps` holds a
/// sample's exponentials (kept between calls, so that a step allocates nothing).
#[allow(clippy::too_many_arguments)]
pub fn softmax_cross_entropy(
    logits: &[f32],
    target: &[f32],
    probs: &mut [f32],
    mut grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    exps: &mut Vec<f64>,
    n: usize,
    k: usize,
) {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    exps.resize(k, 0.0);
    for s in 0..n {
        let z = &logits[s * k..][..k];
        let t = &target[s * k..][..k];
        let p = &mut probs[s * k..][..k];
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        // Each exponential once: kept until the sum is known.
        let mut sum = 0.0f64;
        for (e, &v) in exps.iter_mut().zip(z) {
            *e = ((v - m) as f64).exp();
            sum += *e;
        }
        let log_sum = sum.ln();
        for i in 0..k {
            p[i] = (exps[i] / sum) as f32;
            loss -= t[i] as f64 * ((z[i] - m) as f64 - log_sum);
        }
        if let Some(g) = grad.as_deref_mut() {
            for i in 0..k {
                g[s * k + i] = (p[i] - t[i]) / n as f32;
            }
        }
        correct += usize::from(argmax(p) == argmax(t));
    }
    slot::add_batch(metrics, loss, correct as f64, n);
}

/// One chunk of [`sigmoid_bce`], vectorised at `level` ([`at_level`]): each probability `p`
/// (the logistic function's bits, from the activations' own exponential `e = e^-|z|`), its
/// gradient `(p - t)/len` when asked, and the sums of the losses max(z, 0) - z·t + ln(1 + e), of
/// t·p, of t and of p, each in eight f64 lanes (float `i` into lane `i % 8`) added in order.
fn bce_chunk(level: Level, (z, t): (&[f32], &[f32]), p: &mut [f32], grad: Option<&mut [f32]>, len: f32) -> [f64; 4] {
    struct Chunk<'a>(&'a [f32], &'a [f32], &'a mut [f32], Option<&'a mut [f32]>, f32);
    impl Vectorised for Chunk<'_> {
        type Out = [f64; 4];
        #[inline(always)]
        fn run(self) -> [f64; 4] {
            let Chunk(z, t, p, grad, len) = self;
            let mut loss = [0.0f32; CHUNK];
            for (((l, p), &z), &t) in loss.iter_mut().zip(p.iter_mut()).zip(z).zip(t) {
                let e = exp_nonpositive(-z.abs());
                *p = if z >= 0.0 { 1.0 } else { e } / (1.0 + e);
                *l = z.max(0.0) - z * t + ln_1p(e);
            }
            if let Some(g) = grad {
                g.iter_mut().zip(p.iter().zip(t)).for_each(|(g, (p, t))| *g = (p - t) / len);
            }
            let mut lanes = [[0.0f64; 8]; 4];
            let mut add = |j: usize, (l, p, t): (f32, f32, f32)| {
                lanes[0][j] += l as f64;
                lanes[1][j] += (t * p) as f64;
                lanes[2][j] += t as f64;
                lanes[3][j] += p as f64;
            };
            let whole = p.len() - p.len() % 8;
            for i in (0..whole).step_by(8) {
                (0..8).for_each(|j| add(j, (loss[i + j], p[i + j], t[i + j])));
            }
            (whole..p.len()).for_each(|i| add(i - whole, (loss[i], p[i], t[i])));
            lanes.map(|l| l.iter().sum())
        }
    }
    at_level(level, Chunk(z, t, p, grad, len))
}

/// Sigmoid + binary cross-entropy on `logits[n, per]`, mean over every element, and the batch's
/// Dice `2Σ(t·p)/(Σt + Σp)`. `parts` holds each chunk's sums (kept between calls, so that a step
/// allocates nothing).
#[allow(clippy::too_many_arguments)]
pub fn sigmoid_bce(
    logits: &[f32],
    target: &[f32],
    probs: &mut [f32],
    grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    parts: &mut Vec<[f64; 4]>,
    n: usize,
    per: usize,
) {
    let len = n * per;
    // Fixed chunks summed in parallel, then added in order: the same result on any thread count.
    let (z, t, level) = (&logits[..len], &target[..len], level());
    let chunks = z.par_chunks(CHUNK).zip(t.par_chunks(CHUNK)).zip(probs[..len].par_chunks_mut(CHUNK));
    let n_f = len as f32;
    match grad {
        Some(g) => chunks
            .zip(g[..len].par_chunks_mut(CHUNK))
            .map(|(((z, t), p), g)| bce_chunk(level, (z, t), p, Some(g), n_f))
            .collect_into_vec(parts),
        None => chunks.map(|((z, t), p)| bce_chunk(level, (z, t), p, None, n_f)).collect_into_vec(parts),
    }
    let [loss, yp, y, p_sum] =
        parts.iter().fold([0.0f64; 4], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]);
    slot::add_segmentation_batch(metrics, loss, (yp, y, p_sum), n, per);
}

/// Each sample's loss and per-class counts in [`pixel_softmax_cross_entropy`], kept between
/// calls so that a step allocates nothing.
#[derive(Default)]
pub struct PixelParts {
    loss: Vec<f64>,
    counts: Vec<[u64; 3]>,
}

/// Softmax over the `k` channels and cross-entropy at each pixel of `logits[n, k, per]` against
/// class indices `target[n, per]`, mean over every pixel, and the batch's per-class counts (the
/// prediction is the most probable class, the first of ties). Samples run in parallel; their
/// sums are added in order, so results do not depend on threads.
pub fn pixel_softmax_cross_entropy(
    (logits, target): (&[f32], &[f32]),
    probs: &mut [f32],
    grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    parts: &mut PixelParts,
    (n, k, per): (usize, usize, usize),
) {
    let len = n * k * per;
    parts.loss.resize(n, 0.0);
    parts.counts.clear();
    parts.counts.resize(n * k, [0; 3]);
    let per_sample = parts.loss.par_iter_mut().zip(parts.counts.par_chunks_mut(k));
    probs[..len].par_chunks_mut(k * per).zip(per_sample).enumerate().for_each(|(s, (p, (loss, counts)))| {
        let (z, t) = (&logits[s * k * per..][..k * per], &target[s * per..][..per]);
        *loss = 0.0;
        for q in 0..per {
            let m = (0..k).fold(f32::NEG_INFINITY, |a, c| a.max(z[c * per + q]));
            let log_sum = (0..k).map(|c| ((z[c * per + q] - m) as f64).exp()).sum::<f64>().ln();
            let truth = t[q] as usize;
            for c in 0..k {
                let log_p = (z[c * per + q] - m) as f64 - log_sum;
                p[c * per + q] = log_p.exp() as f32;
                if c == truth {
                    *loss -= log_p;
                }
            }
            let predicted = (1..k).fold(0, |best, c| if p[c * per + q] > p[best * per + q] { c } else { best });
            counts[truth][1] += 1;
            counts[predicted][2] += 1;
            counts[truth][0] += u64::from(predicted == truth);
        }
    });
    if let Some(g) = grad {
        g[..len].par_chunks_mut(k * per).zip(probs[..len].par_chunks(k * per)).enumerate().for_each(|(s, (g, p))| {
            for (i, (g, p)) in g.iter_mut().zip(p).enumerate() {
                let hot = f32::from(u8::from(target[s * per + i % per] as usize == i / per));
                *g = (p - hot) / (n * per) as f32;
            }
        });
    }
    let mut counts = [[0u64; 3]; MAX_PIXEL_CLASSES];
    for sample in parts.counts.chunks(k) {
        counts.iter_mut().zip(sample).for_each(|(a, c)| (0..3).for_each(|j| a[j] += c[j]));
    }
    slot::add_class_batch(metrics, parts.loss.iter().sum(), &counts[..k], n, per);
}

/// `counts[true·k + predicted] += 1` for each sample.
pub fn confusion(probs: &[f32], target: &[f32], counts: &mut [f32], n: usize, k: usize) {
    for s in 0..n {
        counts[argmax(&target[s * k..][..k]) * k + argmax(&probs[s * k..][..k])] += 1.0;
    }
}

#[cfg(test)]
mod tests {
    /// Against f64's `ln_1p` over [0, 1]: within one f32 rounding (half an ulp of the result,
    /// plus the series' 1e-10).
    #[test]
    fn ln_1p_is_f32_accurate() {
        for i in 0..=100_000 {
            let e = i as f32 / 100_000.0;
            let (got, want) = (super::ln_1p(e) as f64, (e as f64).ln_1p());
            assert!(
                (got - want).abs() <= want * (0.5 * f32::EPSILON as f64 + 1e-10),
                "ln_1p({e}) = {got}, want {want}"
            );
        }
        assert_eq!(super::ln_1p(0.0), 0.0);
    }

    /// The sigmoid loss's chunks: every level the CPU runs gives the scalar level's bits
    /// (probabilities, gradients and sums), the probabilities are the logistic function's, and
    /// each chunk's loss is within Σ(4e-7 + 2⁻²¹·loss) of the f64 formula's (a few f32 roundings
    /// of values up to 100 per element), over logits in [-100, 100], targets 0 and 1, and a last
    /// chunk of an odd length (a partial vector, lanes left unfilled).
    #[test]
    fn sigmoid_loss_levels_agree() {
        use super::super::activation::apply_at;
        use super::super::level::Level;
        use crate::model::Act;
        let z: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-3).collect();
        let t: Vec<f32> = (0..z.len()).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let run = |level| {
            let (mut p, mut g) = (vec![0.0; z.len()], vec![0.0; z.len()]);
            let pieces = z.chunks(super::CHUNK).zip(t.chunks(super::CHUNK));
            let sums = pieces.zip(p.chunks_mut(super::CHUNK).zip(g.chunks_mut(super::CHUNK)));
            let sums: Vec<[f64; 4]> =
                sums.map(|((z, t), (p, g))| super::bce_chunk(level, (z, t), p, Some(g), 7.0)).collect();
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&p), bits(&g), sums)
        };
        let want = run(Level::Scalar);
        for level in Level::available() {
            assert!(run(level) == want, "{level:?}");
        }
        let mut logistic = z.clone();
        apply_at(Level::Scalar, Act::Sigmoid, &mut logistic);
        assert!(logistic.iter().zip(&want.0).all(|(a, &b)| a.to_bits() == b));
        for (i, sums) in want.2.iter().enumerate() {
            let range = i * super::CHUNK..((i + 1) * super::CHUNK).min(z.len());
            let (mut exact, mut bound) = (0.0, 0.0);
            for (&z, &t) in z[range.clone()].iter().zip(&t[range]) {
                let (z, t) = (z as f64, t as f64);
                let l = z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
                (exact, bound) = (exact + l, bound + 4e-7 + l * 2f64.powi(-21));
            }
            assert!((sums[0] - exact).abs() <= bound, "chunk {i}: {} vs {exact}", sums[0]);
        }
    }
}
