//! Where a graph's branches meet: a concatenation along the channels (a copy of each sample's
//! block) and its backward, and the sum of the gradients that several readers give a buffer.
//! Both in parallel pieces: a U-Net's copies are megabytes.

use rayon::prelude::*;

/// Floats per parallel piece.
const PIECE: usize = 1 << 14;

/// For each of `n` samples, `per` values from `src` (at `from.0` of a sample's `from.1`) to
/// `dst` (at `to.0` of `to.1`).
pub fn copy_part(src: &[f32], dst: &mut [f32], n: usize, per: usize, from: (usize, usize), to: (usize, usize)) {
    let sources = src.par_chunks(from.1).map(|s| &s[from.0..from.0 + per]);
    dst.par_chunks_mut(to.1).zip(sources).take(n).for_each(|(d, s)| {
        d[to.0..to.0 + per].par_chunks_mut(PIECE).zip(s.par_chunks(PIECE)).for_each(|(d, s)| d.copy_from_slice(s));
    });
}

/// `y = a + b`.
pub fn sum(a: &[f32], b: &[f32], y: &mut [f32]) {
    let pieces = y.par_chunks_mut(PIECE).zip(a.par_chunks(PIECE).zip(b.par_chunks(PIECE)));
    pieces.for_each(|(y, (a, b))| y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = a + b));
}
