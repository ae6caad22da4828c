//! Products whose right operand is read in place with AVX-512 (row-major, or rows at a
//! convolution's tap offsets): no packing, which for the small channel counts of these networks
//! costs as much as the arithmetic. Also the vector rows of pooling, and copies.
//!
//! Every output element is summed in matrixmultiply's order ([`super::tiles`]), so the results
//! are bit for bit those of the packed path.

use super::tiles::{dispatch, Tile, KC};
use std::arch::x86_64::*;

/// Most rows of a tile: 24 rows of one vector or 12 rows of two keep the sums in registers.
const ROWS: usize = 24;

/// Whether this CPU runs the kernels here (matrixmultiply's AVX-512 path is then the one they
/// reproduce).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The tiles of [`for_tiles`](super::tiles::for_tiles) for this level: 16-lane vectors, at most [`ROWS`] rows of one.
pub const TILES: (usize, usize) = (16, ROWS);

/// Sums one tile of `r` rows of one vector, or of two (`two`), as [`for_tiles`](super::tiles::for_tiles) describes: the
/// level's in-place product, with the right operand read in place (row-major, or rows at a
/// convolution's tap offsets).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]); the tile's pointers must be valid as [`for_tiles`](super::tiles::for_tiles) requires.
pub unsafe fn tile(t: &Tile, r: usize, two: bool) {
    if two {
        dispatch!(run, t, r, 2, 1 2 3 4 5 6 7 8 9 10 11 12);
    } else {
        dispatch!(run, t, r, 1, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
    }
}

/// The first `lanes` of 16 lanes (all of them from 16 up).
fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        u16::MAX
    } else {
        (1u16 << lanes) - 1
    }
}

/// One tile of `R` rows and `V` vectors.
#[target_feature(enable = "avx512f")]
unsafe fn run<const R: usize, const V: usize>(t: &Tile) {
    let masks = t.lanes.map(lane_mask);
    for k0 in (0..t.k).step_by(KC) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in k0..(k0 + KC).min(t.k) {
            let row = t.b.add(*t.offsets.add(p));
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_ps(masks[v], row.add(16 * v));
            }
            let a = t.a.add(p * t.cs_a);
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * t.rs_a));
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *bv, *acc);
                }
            }
        }
        let (store, bias) = (k0 > 0 || t.beta != 0.0, k0 == 0 && !t.bias.is_null());
        let beta = _mm512_set1_ps(if k0 > 0 { 1.0 } else { t.beta });
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                let cp = t.c.add(i * t.rs_c + 16 * v);
                let sum = if store {
                    _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(masks[v], cp), beta), acc)
                } else if bias {
                    _mm512_add_ps(acc, _mm512_set1_ps(*t.bias.add(i)))
                } else {
                    acc
                };
                _mm512_mask_storeu_ps(cp, masks[v], sum);
            }
        }
    }
}

/// `dst[r·ds + j] = src[r·ss + j]` for `r < rows`, `j < len`, in masked vectors (rows of a few
/// floats would cost a call each through `memcpy`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
pub unsafe fn copy_rows(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, rows: usize, len: usize) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * ss + len && dst.len() >= (rows - 1) * ds + len, "copy_rows slices too small");
    for r in 0..rows {
        let (s, d) = (src.as_ptr().add(r * ss), dst.as_mut_ptr().add(r * ds));
        for j in (0..len).step_by(16) {
            let m = lane_mask(len - j);
            _mm512_mask_storeu_ps(d.add(j), m, _mm512_maskz_loadu_ps(m, s.add(j)));
        }
    }
}

/// The even and odd elements of the `2·pairs` floats from `p` (`pairs` ≤ 16; lanes past them 0).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn split_pairs(p: *const f32, pairs: usize) -> (__m512, __m512) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let a = _mm512_maskz_loadu_ps(lane_mask(2 * pairs), p);
    let b = _mm512_maskz_loadu_ps(lane_mask((2 * pairs).saturating_sub(16)), p.add(16));
    (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
}

/// Stores the first `pairs` (≤ 16) lanes of `even` and `odd` interleaved from `p`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join_pairs(p: *mut f32, pairs: usize, even: __m512, odd: __m512) {
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    _mm512_mask_storeu_ps(p, lane_mask(2 * pairs), _mm512_permutex2var_ps(even, lo, odd));
    _mm512_mask_storeu_ps(p.add(16), lane_mask((2 * pairs).saturating_sub(16)), _mm512_permutex2var_ps(even, hi, odd));
}

/// One output row of 2x2 max pooling from input rows `r0`, `r1` (at least `2·(w/2)` floats):
/// `y[ox]` for `ox < w/2` is its window's maximum, the first in order (0,0), (0,1), (1,0), (1,1)
/// when tied (a NaN wins only in the first place), and `argmax[ox]` its index, `first + 2·ox`
/// plus 1 for the right column and `w` for the lower row.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_row(r0: &[f32], r1: &[f32], w: usize, first: u32, y: &mut [f32], argmax: &mut [u32]) {
    let ow = w / 2;
    assert!(r0.len() >= 2 * ow && r1.len() >= 2 * ow && y.len() >= ow && argmax.len() >= ow, "pooling rows too short");
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let even = _mm512_add_epi32(lanes, lanes);
    for o0 in (0..ow).step_by(16) {
        let n = (ow - o0).min(16);
        // The rows' even and odd columns under these 16 windows.
        let ((v00, v01), (v10, v11)) =
            (split_pairs(r0.as_ptr().add(2 * o0), n), split_pairs(r1.as_ptr().add(2 * o0), n));
        let (mut best, mut off) = (v00, _mm512_setzero_si512());
        for (v, o) in [(v01, 1), (v10, w), (v11, w + 1)] {
            let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
            best = _mm512_mask_blend_ps(m, best, v);
            off = _mm512_mask_blend_epi32(m, off, _mm512_set1_epi32(o as i32));
        }
        let index = _mm512_add_epi32(_mm512_set1_epi32((first as usize + 2 * o0) as i32), _mm512_add_epi32(even, off));
        _mm512_mask_storeu_ps(y.as_mut_ptr().add(o0), lane_mask(n), best);
        _mm512_mask_storeu_epi32(argmax.as_mut_ptr().add(o0).cast(), lane_mask(n), index);
    }
}

/// The adjoint of [`max_pool_row`]: writes the first `2·(w/2)` floats of input-gradient rows
/// `g0`, `g1` (the first two rows of `rows`), each window's gradient at its maximum and 0
/// elsewhere.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_grad_row(gy: &[f32], argmax: &[u32], w: usize, first: u32, rows: &mut [f32]) {
    let ow = w / 2;
    assert!(gy.len() >= ow && argmax.len() >= ow && rows.len() >= w + 2 * ow, "pooling rows too short");
    let (g0, g1) = rows.split_at_mut(w);
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let even = _mm512_add_epi32(lanes, lanes);
    for o0 in (0..ow).step_by(16) {
        let n = (ow - o0).min(16);
        let g = _mm512_maskz_loadu_ps(lane_mask(n), gy.as_ptr().add(o0));
        let am = _mm512_maskz_loadu_epi32(lane_mask(n), argmax.as_ptr().add(o0).cast());
        let off = _mm512_sub_epi32(am, _mm512_add_epi32(_mm512_set1_epi32((first as usize + 2 * o0) as i32), even));
        let at = |o: usize| _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(off, _mm512_set1_epi32(o as i32)), g);
        join_pairs(g0.as_mut_ptr().add(2 * o0), n, at(0), at(1));
        join_pairs(g1.as_mut_ptr().add(2 * o0), n, at(w), at(w + 1));
    }
}

super::maxpool::plane_kernels!("avx512f");
