//! Optimiser updates with Keras semantics, and the L2 penalty.

//! The updates run element by element in parallel chunks, so the cut changes no result.

use crate::graph::slot;
use crate::optim::adam_correction;
use rayon::prelude::*;

/// Floats per parallel task of an update.
const CHUNK: usize = 1 << 13;

pub fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(w, g)| {
        w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
    });
}

/// `v = m·v - lr·g; w += v`.
pub fn momentum(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, m: f32) {
    let chunks = w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(v.par_chunks_mut(CHUNK));
    chunks.for_each(|((w, g), v)| {
        for ((w, g), v) in w.iter_mut().zip(g).zip(v) {
            *v = m * *v - lr * g;
            *w += *v;
        }
    });
}

/// Keras Adam at step `t` (1-based): `w -= lr·√(1-β2ᵗ)/(1-β1ᵗ) · m / (√v + ε)`.
#[allow(clippy::too_many_arguments)]
pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, b1: f32, b2: f32, eps: f32, t: u32) {
    let alpha = lr * adam_correction(b1, b2, t);
    let chunks =
        w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK));
    chunks.for_each(|(((w, g), m), v)| {
        for (((w, g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
            *m += (1.0 - b1) * (g - *m);
            *v += (1.0 - b2) * (g * g - *v);
            *w -= alpha * *m / (v.sqrt() + eps);
        }
    });
}

/// Adds `λ·Σw²` (× n, as the loss slot holds batch means × n) to the loss, `2λw` to `grad`.
pub fn l2(w: &[f32], grad: Option<&mut [f32]>, metrics: &mut [f32], lambda: f32, n: usize) {
    let sq: f64 = w.iter().map(|&v| (v as f64) * (v as f64)).sum();
    metrics[slot::LOSS] += (lambda as f64 * sq * n as f64) as f32;
    if let Some(g) = grad {
        g.iter_mut().zip(w).for_each(|(g, w)| *g += 2.0 * lambda * w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Over several parallel chunks and a partial one, each update gives every element the bits
    /// of its formula applied alone (in f32, in the order written).
    #[test]
    fn chunked_updates_match_each_element() {
        let mut rng = Rng::new(21);
        let len = 3 * CHUNK + 5;
        let mut values = |scale: f32| (0..len).map(|_| scale * rng.normal()).collect::<Vec<f32>>();
        let (w0, g, m0, v0) =
            (values(1.0), values(1.0), values(0.1), values(0.1).iter().map(|x| x * x).collect::<Vec<_>>());
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        let mut w = w0.clone();
        sgd(&mut w, &g, 0.3);
        let want: Vec<f32> = w0.iter().zip(&g).map(|(w, g)| w - 0.3 * g).collect();
        assert!(same(&w, &want), "sgd");
        let (mut w, mut v) = (w0.clone(), m0.clone());
        momentum(&mut w, &g, &mut v, 0.3, 0.8);
        let want_v: Vec<f32> = m0.iter().zip(&g).map(|(v, g)| 0.8 * v - 0.3 * g).collect();
        let want: Vec<f32> = w0.iter().zip(&want_v).map(|(w, v)| w + v).collect();
        assert!(same(&v, &want_v) && same(&w, &want), "momentum");
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        adam(&mut w, &g, &mut m, &mut v, 1e-3, 0.9, 0.999, 1e-7, 3);
        let alpha = 1e-3 * adam_correction(0.9, 0.999, 3);
        for i in 0..len {
            let mi = m0[i] + (1.0 - 0.9) * (g[i] - m0[i]);
            let vi = v0[i] + (1.0 - 0.999) * (g[i] * g[i] - v0[i]);
            let wi = w0[i] - alpha * mi / (vi.sqrt() + 1e-7);
            assert_eq!([w[i], m[i], v[i]].map(f32::to_bits), [wi, mi, vi].map(f32::to_bits), "adam at {i}");
        }
    }
}
