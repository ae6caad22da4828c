//! Losses fused with the output activation, and the metrics they add to a metrics buffer
//! (slots in [`crate::graph::slot`]). Sums run in f64.

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
    let sums = |(z, t, p): (&[f32], &[f32], &mut [f32])| {
        // e^-|z| (a libm call, element by element) into `p`; then, in a loop the compiler
        // vectorises, the probability and the stable loss max(z, 0) - z·t + ln(1 + e^-|z|);
        // then the sums, in order.
        p.iter_mut().zip(z).for_each(|(p, z)| *p = (-z.abs()).exp());
        let mut loss = [0.0f32; CHUNK];
        for (((l, p), &z), &t) in loss.iter_mut().zip(p.iter_mut()).zip(z).zip(t) {
            let e = *p;
            *p = if z >= 0.0 { 1.0 } else { e } / (1.0 + e);
            *l = z.max(0.0) - z * t + ln_1p(e);
        }
        let mut acc = [0.0f64; 4];
        for ((&l, &p), &t) in loss.iter().zip(p.iter()).zip(t) {
            acc[0] += l as f64;
            acc[1] += (t * p) as f64;
            acc[2] += t as f64;
            acc[3] += p as f64;
        }
        acc
    };
    let (z, t) = (&logits[..len], &target[..len]);
    let chunks = z.par_chunks(CHUNK).zip(t.par_chunks(CHUNK)).zip(probs[..len].par_chunks_mut(CHUNK));
    chunks.map(|((z, t), p)| sums((z, t, p))).collect_into_vec(parts);
    if let Some(g) = grad {
        g[..len].par_chunks_mut(CHUNK).zip(probs[..len].par_chunks(CHUNK).zip(t.par_chunks(CHUNK))).for_each(
            |(g, (p, t))| g.iter_mut().zip(p.iter().zip(t)).for_each(|(g, (p, t))| *g = (p - t) / len as f32),
        );
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
}
