//! Batches, activations, dropout, losses with their metrics, and the optimisers' updates, as
//! their formulas in f64.

use crate::graph::slot;
use crate::model::{Act, Shape, LEAKY_SLOPE};
use crate::rng::mask_uniform;

/// `out[s] = f(data[j])`, `j = index[offset + s]`; `j ≥ mirrored > 0` takes sample
/// `j - mirrored` flipped left to right. `f(v) = v·scale`, or `v > 0` when `binarize`.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    data: &[u8],
    index: &[u32],
    out: &mut [f32],
    shape: &Shape,
    (scale, binarize, mirrored): (f32, bool, usize),
    n: usize,
    offset: usize,
) {
    let per = shape.len();
    for s in 0..n {
        let j = index[offset + s] as usize;
        let (src, flip) = if mirrored > 0 && j >= mirrored { (j - mirrored, true) } else { (j, false) };
        for e in 0..per {
            let x = if flip { e - e % shape.w + shape.w - 1 - e % shape.w } else { e };
            let v = data[src * per + x];
            out[s * per + e] = if binarize { f32::from(u8::from(v > 0)) } else { f32::from(v) * scale };
        }
    }
}

/// `out[s, labels[index[offset + s]]] = 1`, 0 elsewhere.
pub fn one_hot(labels: &[u8], index: &[u32], out: &mut [f32], classes: usize, n: usize, offset: usize) {
    for s in 0..n {
        for c in 0..classes {
            out[s * classes + c] = f32::from(u8::from(usize::from(labels[index[offset + s] as usize]) == c));
        }
    }
}

/// For each of `n` samples, `per` values from `src` (at `from.0` of a sample's `from.1`) to
/// `dst` (at `to.0` of `to.1`): one half of a concatenation or of its backward.
pub fn copy_part(src: &[f32], dst: &mut [f32], n: usize, per: usize, from: (usize, usize), to: (usize, usize)) {
    for s in 0..n {
        for j in 0..per {
            dst[s * to.1 + to.0 + j] = src[s * from.1 + from.0 + j];
        }
    }
}

/// `y = a + b`.
pub fn sum(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = (f64::from(a) + f64::from(b)) as f32;
    }
}

/// `y = f(x)`.
pub fn activation(act: Act, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        let x = f64::from(x);
        *y = match act {
            Act::Relu => x.max(0.0),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::LeakyRelu if x > 0.0 => x,
            Act::LeakyRelu => x * f64::from(LEAKY_SLOPE),
            Act::Softmax => unreachable!("softmax is part of the loss"),
        } as f32;
    }
}

/// `gx = gy·f'(x)`, from the forward's output `y = f(x)`.
pub fn activation_backward(act: Act, y: &[f32], gy: &[f32], gx: &mut [f32]) {
    for ((gx, &y), &gy) in gx.iter_mut().zip(y).zip(gy) {
        let (y, gy) = (f64::from(y), f64::from(gy));
        *gx = match act {
            Act::Relu => {
                if y > 0.0 {
                    gy
                } else {
                    0.0
                }
            }
            Act::Sigmoid => gy * y * (1.0 - y),
            Act::Tanh => gy * (1.0 - y * y),
            // y has x's sign, and at x = 0 the slope is PyTorch's.
            Act::LeakyRelu if y > 0.0 => gy,
            Act::LeakyRelu => gy * f64::from(LEAKY_SLOPE),
            Act::Softmax => unreachable!("softmax is part of the loss"),
        } as f32;
    }
}

/// `mask[i] = 0` where the counter hash of (`seed`, `step`, `i`) is below `rate`, else
/// `1/(1 - rate)`; `y = x·mask`.
pub fn dropout(x: &[f32], y: &mut [f32], mask: &mut [f32], rate: f32, seed: u32, step: u32) {
    for (i, ((y, m), &x)) in y.iter_mut().zip(mask.iter_mut()).zip(x).enumerate() {
        *m = if mask_uniform(seed, step, i as u32) < rate { 0.0 } else { (1.0 / (1.0 - f64::from(rate))) as f32 };
        *y = (f64::from(x) * f64::from(*m)) as f32;
    }
}

/// `gx = gy·mask`.
pub fn dropout_backward(gy: &[f32], mask: &[f32], gx: &mut [f32]) {
    for ((gx, &g), &m) in gx.iter_mut().zip(gy).zip(mask) {
        *gx = (f64::from(g) * f64::from(m)) as f32;
    }
}

/// The index of the first maximum.
fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Softmax and categorical cross-entropy of one batch of `n` rows of `k`, mean over the batch:
/// `probs`, the gradient `(p - t)/n`, and the batch's loss × n and correct count in `metrics`.
pub fn softmax_cross_entropy(
    (logits, target): (&[f32], &[f32]),
    probs: &mut [f32],
    grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    n: usize,
    k: usize,
) {
    let (mut loss, mut correct) = (0.0f64, 0);
    let mut g = vec![0.0f64; n * k];
    for s in 0..n {
        let (z, t) = (&logits[s * k..][..k], &target[s * k..][..k]);
        let m = z.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
        let log_sum = z.iter().map(|&v| (f64::from(v) - m).exp()).sum::<f64>().ln();
        for i in 0..k {
            let log_p = f64::from(z[i]) - m - log_sum;
            probs[s * k + i] = log_p.exp() as f32;
            loss -= f64::from(t[i]) * log_p;
            g[s * k + i] = (log_p.exp() - f64::from(t[i])) / n as f64;
        }
        correct += usize::from(argmax(&probs[s * k..][..k]) == argmax(t));
    }
    if let Some(grad) = grad {
        grad.iter_mut().zip(&g).for_each(|(o, &v)| *o = v as f32);
    }
    slot::add_batch(metrics, loss, correct as f64, n);
}

/// Sigmoid and binary cross-entropy of one batch of `n` samples of `per`, mean over every
/// element: `probs`, the gradient `(p - t)/(n·per)`, and in `metrics` the batch's loss × n, its
/// Dice `2Σtp/(Σt + Σp)` (1 when both sums are 0) and those sums.
pub fn sigmoid_bce(
    (logits, target): (&[f32], &[f32]),
    probs: &mut [f32],
    grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    n: usize,
    per: usize,
) {
    let len = n * per;
    let (mut loss, mut yp, mut y, mut p_sum) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut g = vec![0.0f64; len];
    for i in 0..len {
        let (z, t) = (f64::from(logits[i]), f64::from(target[i]));
        let p = 1.0 / (1.0 + (-z).exp());
        probs[i] = p as f32;
        loss += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
        (yp, y, p_sum) = (yp + t * p, y + t, p_sum + p);
        g[i] = (p - t) / len as f64;
    }
    if let Some(grad) = grad {
        grad.iter_mut().zip(&g).for_each(|(o, &v)| *o = v as f32);
    }
    slot::add_segmentation_batch(metrics, loss, (yp, y, p_sum), n, per);
}

/// Softmax over the `k` channels and cross-entropy at each pixel of one batch of `n` samples
/// `[k, per]` against class indices `target[n, per]`, mean over every pixel: `probs`, the
/// gradient `(p - onehot)/(n·per)`, and in `metrics` the batch's loss × n, its mean per-class
/// Dice and the per-class counts, the prediction being the most probable class (the first of
/// ties).
pub fn pixel_softmax_cross_entropy(
    (logits, target): (&[f32], &[f32]),
    probs: &mut [f32],
    grad: Option<&mut [f32]>,
    metrics: &mut [f32],
    (n, k, per): (usize, usize, usize),
) {
    let mut loss = 0.0f64;
    let mut counts = vec![[0u64; 3]; k];
    let mut g = vec![0.0f64; n * k * per];
    for s in 0..n {
        for q in 0..per {
            let at = |c: usize| (s * k + c) * per + q;
            let t = target[s * per + q] as usize;
            let m = (0..k).map(|c| f64::from(logits[at(c)])).fold(f64::NEG_INFINITY, f64::max);
            let log_sum = (0..k).map(|c| (f64::from(logits[at(c)]) - m).exp()).sum::<f64>().ln();
            for c in 0..k {
                let log_p = f64::from(logits[at(c)]) - m - log_sum;
                probs[at(c)] = log_p.exp() as f32;
                g[at(c)] = (log_p.exp() - f64::from(u8::from(c == t))) / (n * per) as f64;
                if c == t {
                    loss -= log_p;
                }
            }
            let predicted = (1..k).fold(0, |best, c| if probs[at(c)] > probs[at(best)] { c } else { best });
            counts[t][1] += 1;
            counts[predicted][2] += 1;
            counts[t][0] += u64::from(predicted == t);
        }
    }
    if let Some(grad) = grad {
        grad.iter_mut().zip(&g).for_each(|(o, &v)| *o = v as f32);
    }
    slot::add_class_batch(metrics, loss, &counts, n, per);
}

/// `counts[true·k + predicted] += 1` per sample.
pub fn confusion(probs: &[f32], target: &[f32], counts: &mut [f32], n: usize, k: usize) {
    for s in 0..n {
        counts[argmax(&target[s * k..][..k]) * k + argmax(&probs[s * k..][..k])] += 1.0;
    }
}

/// Adds `λ·Σw²·n` to the loss slot and `2λw` to `grad`.
pub fn l2(w: &[f32], grad: Option<&mut [f32]>, metrics: &mut [f32], lambda: f32, n: usize) {
    let sq: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    metrics[slot::LOSS] += (f64::from(lambda) * sq * n as f64) as f32;
    if let Some(g) = grad {
        for (g, &w) in g.iter_mut().zip(w) {
            *g = (f64::from(*g) + 2.0 * f64::from(lambda) * f64::from(w)) as f32;
        }
    }
}

/// `w -= lr·g`.
pub fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, &g) in w.iter_mut().zip(g) {
        *w = (f64::from(*w) - f64::from(lr) * f64::from(g)) as f32;
    }
}

/// Keras momentum: `v = m·v - lr·g; w += v`.
pub fn momentum(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, m: f32) {
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v) {
        *v = (f64::from(m) * f64::from(*v) - f64::from(lr) * f64::from(g)) as f32;
        *w = (f64::from(*w) + f64::from(*v)) as f32;
    }
}

/// Keras Adam at step `t` (1-based): `m += (1-β1)(g - m)`, `v += (1-β2)(g² - v)`,
/// `w -= lr·√(1-β2ᵗ)/(1-β1ᵗ) · m/(√v + ε)`.
#[allow(clippy::too_many_arguments)]
pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, (b1, b2, eps): (f32, f32, f32), t: u32) {
    let (b1t, b2t) = (f64::from(b1).powi(t as i32), f64::from(b2).powi(t as i32));
    let alpha = f64::from(lr) * (1.0 - b2t).sqrt() / (1.0 - b1t);
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
        let g = f64::from(g);
        *m = (f64::from(*m) + (1.0 - f64::from(b1)) * (g - f64::from(*m))) as f32;
        *v = (f64::from(*v) + (1.0 - f64::from(b2)) * (g * g - f64::from(*v))) as f32;
        *w = (f64::from(*w) - alpha * f64::from(*m) / (f64::from(*v).sqrt() + f64::from(eps))) as f32;
    }
}
