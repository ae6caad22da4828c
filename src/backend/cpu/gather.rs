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
    out[..n * per].par_chunks_mut(per).enumerate().for_each(|(s, dst)| {
        let j = index[offset + s] as usize;
        if mirrored > 0 && j >= mirrored {
            let src = &data[(j - mirrored) * per..][..per];
            for (d, r) in dst.chunks_mut(shape.w).zip(src.chunks(shape.w)) {
                d.iter_mut().zip(r.iter().rev()).for_each(|(d, v)| *d = f(*v));
            }
        } else {
            dst.iter_mut().zip(&data[j * per..][..per]).for_each(|(d, v)| *d = f(*v));
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
