//! Building a batch from a split's u8 samples by its index list.

use crate::model::Shape;
use rayon::prelude::*;

/// `out[s] = f(data[j])`, `j = index[offset + s]`; `j ≥ mirrored > 0` takes sample
/// `j - mirrored` flipped left to right. `f(v) = v·scale`, or `v > 0` when `binarize`. Samples
/// run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    data: &[u8],
    index: &[u32],
    out: &mut [f32],
    shape: &Shape,
    scale: f32,
    binarize: bool,
    mirrored: usize,
    n: usize,
    offset: usize,
) {
    let per = shape.len();
    let f = |v: u8| {
        if binarize {
            f32::from(u8::from(v > 0))
        } else {
            v as f32 * scale
        }
    };
    // Sample `s`'s stored bytes, and whether they are flipped.
    let source = |s: usize| {
        let j = index[offset + s] as usize;
        let flip = mirrored > 0 && j >= mirrored;
        (&data[(j - if flip { mirrored } else { 0 }) * per..][..per], flip)
    };
    out[..n * per].par_chunks_mut(per).enumerate().for_each(|(s, dst)| {
        // The next sample, which this thread is likely to take next.
        if s + 1 < n {
            prefetch(source(s + 1).0);
        }
        let (src, flip) = source(s);
        if flip {
            for (d, r) in dst.chunks_mut(shape.w).zip(src.chunks(shape.w)) {
                d.iter_mut().zip(r.iter().rev()).for_each(|(d, v)| *d = f(*v));
            }
        } else {
            dst.iter_mut().zip(src).for_each(|(d, v)| *d = f(*v));
        }
    });
}

/// One-hot rows `out[s, labels[index[offset + s]]] = 1`.
pub fn one_hot(labels: &[u8], index: &[u32], out: &mut [f32], classes: usize, n: usize, offset: usize) {
    for (s, row) in out[..n * classes].chunks_mut(classes).enumerate() {
        row.fill(0.0);
        row[labels[index[offset + s] as usize] as usize] = 1.0;
    }
}

/// Asks the cache for `src`'s lines ahead of their use: a batch's samples lie at random places
/// of a set too large for the caches, and each waits on memory otherwise. A hint only (none off
/// x86).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn prefetch(src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in src.chunks(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing and `line` is in bounds.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}
