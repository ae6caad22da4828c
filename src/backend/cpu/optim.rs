//! Optimiser updates with Keras semantics, and the L2 penalty.

use crate::graph::slot;
use crate::optim::adam_correction;

pub fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
}

/// `v = m·v - lr·g; w += v`.
pub fn momentum(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, m: f32) {
    for ((w, g), v) in w.iter_mut().zip(g).zip(v) {
        *v = m * *v - lr * g;
        *w += *v;
    }
}

/// Keras Adam at step `t` (1-based): `w -= lr·√(1-β2ᵗ)/(1-β1ᵗ) · m / (√v + ε)`.
#[allow(clippy::too_many_arguments)]
pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, b1: f32, b2: f32, eps: f32, t: u32) {
    let alpha = lr * adam_correction(b1, b2, t);
    for (((w, g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
        *m += (1.0 - b1) * (g - *m);
        *v += (1.0 - b2) * (g * g - *v);
        *w -= alpha * *m / (v.sqrt() + eps);
    }
}

/// Adds `λ·Σw²` (× n, as the loss slot holds batch means × n) to the loss, `2λw` to `grad`.
pub fn l2(w: &[f32], grad: Option<&mut [f32]>, metrics: &mut [f32], lambda: f32, n: usize) {
    let sq: f64 = w.iter().map(|&v| (v as f64) * (v as f64)).sum();
    metrics[slot::LOSS] += (lambda as f64 * sq * n as f64) as f32;
    if let Some(g) = grad {
        g.iter_mut().zip(w).for_each(|(g, w)| *g += 2.0 * lambda * w);
    }
}
