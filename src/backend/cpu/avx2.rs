//! The in-place product of `avx512.rs` with AVX2 and FMA: the right operand read in place
//! (row-major, or rows at a convolution's tap offsets), no packing. Each output element is
//! summed as there ([`super::tiles`]), so the two levels give the same bits. Also the transposes
//! (8x8 tiles of 256-bit vectors), at both levels, and the max pooling's rows.

use super::tiles::{dispatch, Tile, KC};
use std::arch::x86_64::*;

/// Most rows of a tile: 12 rows of one vector or 6 rows of two, with the right operand's
/// vectors and the broadcast, fit the 16 registers.
const ROWS: usize = 12;

/// The tiles of [`for_tiles`](super::tiles::for_tiles) for this level: 8-lane vectors, at most [`ROWS`] rows of one.
pub const TILES: (usize, usize) = (8, ROWS);

/// Sums one tile of `r` rows of one vector, or of two (`two`), as [`for_tiles`](super::tiles::for_tiles) describes: the
/// level's in-place product, with the right operand read in place (row-major, or rows at a
/// convolution's tap offsets).
///
/// # Safety
/// The CPU must support AVX2 and FMA; the tile's pointers must be valid as [`for_tiles`](super::tiles::for_tiles) requires.
pub unsafe fn tile(t: &Tile, r: usize, two: bool) {
    if two {
        dispatch!(run, t, r, 2, 1 2 3 4 5 6);
    } else {
        dispatch!(run, t, r, 1, 1 2 3 4 5 6 7 8 9 10 11 12);
    }
}

/// Eight set lanes, then eight clear: the 8 from `8 - n` are the mask of the first `n`.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The mask of the first `lanes` of 8 (at most 8): one load.
#[inline(always)]
unsafe fn lane_mask(lanes: usize) -> __m256i {
    _mm256_loadu_si256(MASKS[8 - lanes..].as_ptr().cast())
}

/// The 8 floats at `p`, or only the first `lanes` (the others 0) through `mask`: masked moves
/// are slow on some CPUs, so whole vectors move plainly.
#[inline(always)]
unsafe fn load(p: *const f32, lanes: usize, mask: __m256i) -> __m256 {
    if lanes == 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask)
    }
}

/// The sums of rows `k0..end` of the right operand into `acc`; `FULL`: every vector's 8 lanes
/// are live, so none is masked (decided once per block, not per row).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_rows<const R: usize, const V: usize, const FULL: bool>(
    t: &Tile,
    (k0, end): (usize, usize),
    masks: &[__m256i; 2],
    acc: &mut [[__m256; V]; R],
) {
    for p in k0..end {
        let row = t.b.add(*t.offsets.add(p));
        let mut bv = [_mm256_setzero_ps(); V];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = if FULL { _mm256_loadu_ps(row.add(8 * v)) } else { load(row.add(8 * v), t.lanes[v], masks[v]) };
        }
        let a = t.a.add(p * t.cs_a);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(*a.add(i * t.rs_a));
            for (acc, bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm256_fmadd_ps(av, *bv, *acc);
            }
        }
    }
}

/// One tile of `R` rows and `V` vectors.
#[target_feature(enable = "avx2,fma")]
unsafe fn run<const R: usize, const V: usize>(t: &Tile) {
    let masks = t.lanes.map(|n| lane_mask(n));
    let full = t.lanes[..V].iter().all(|&l| l == 8);
    for k0 in (0..t.k).step_by(KC) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        let block = (k0, (k0 + KC).min(t.k));
        if full {
            sum_rows::<R, V, true>(t, block, &masks, &mut acc);
        } else {
            sum_rows::<R, V, false>(t, block, &masks, &mut acc);
        }
        let (store, bias) = (k0 > 0 || t.beta != 0.0, k0 == 0 && !t.bias.is_null());
        let beta = _mm256_set1_ps(if k0 > 0 { 1.0 } else { t.beta });
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                let cp = t.c.add(i * t.rs_c + 8 * v);
                let sum = if store {
                    _mm256_add_ps(_mm256_mul_ps(load(cp, t.lanes[v], masks[v]), beta), acc)
                } else if bias {
                    _mm256_add_ps(acc, _mm256_set1_ps(*t.bias.add(i)))
                } else {
                    acc
                };
                if t.lanes[v] == 8 {
                    _mm256_storeu_ps(cp, sum);
                } else {
                    _mm256_maskstore_ps(cp, masks[v], sum);
                }
            }
        }
    }
}

/// `dst[r·ds + j] = src[r·ss + j]` for `r < rows`, `j < len`, in vectors, each row's last one
/// ending at its end and overlapping the one before (rows of 4 to 7 floats: two overlapping
/// halves; of fewer, one by one). Rows of a few floats would cost a call each through `memcpy`,
/// and AVX2's masked stores cost more than the copy, here and in what next reads the rows.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn copy_rows(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, rows: usize, len: usize) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * ss + len && dst.len() >= (rows - 1) * ds + len, "copy_rows slices too small");
    for r in 0..rows {
        let (s, d) = (src.as_ptr().add(r * ss), dst.as_mut_ptr().add(r * ds));
        if len >= 8 {
            for j in (0..len - 8).step_by(8).chain([len - 8]) {
                _mm256_storeu_ps(d.add(j), _mm256_loadu_ps(s.add(j)));
            }
        } else if len >= 4 {
            _mm_storeu_ps(d, _mm_loadu_ps(s));
            _mm_storeu_ps(d.add(len - 4), _mm_loadu_ps(s.add(len - 4)));
        } else {
            (0..len).for_each(|j| *d.add(j) = *s.add(j));
        }
    }
}

/// `dst[j·rows + i] = src[i·rs + j]`: 8x8 tiles transposed in registers; the caller handles
/// the rows and columns past the last whole tile.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn transpose_tiles(src: &[f32], rs: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(
        rows == 0 || (src.len() >= (rows - 1) * rs + cols && dst.len() >= rows * cols),
        "transpose slices too small"
    );
    for i0 in (0..rows - rows % 8).step_by(8) {
        for j0 in (0..cols - cols % 8).step_by(8) {
            let s = src.as_ptr().add(i0 * rs + j0);
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * rs)));
            // Pairs, then quads, then halves: the standard three-stage 8x8 shuffle.
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            let u: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (t[i / 4 * 4 + i % 2], t[i / 4 * 4 + i % 2 + 2]);
                if i % 4 < 2 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xee>(a, b)
                }
            });
            let d = dst.as_mut_ptr().add(j0 * rows + i0);
            for (j, &lo) in [u[0], u[2], u[1], u[3]].iter().enumerate() {
                let hi = u[[4, 6, 5, 7][j]];
                _mm256_storeu_ps(d.add(j * rows), _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(d.add((j + 4) * rows), _mm256_permute2f128_ps::<0x31>(lo, hi));
            }
        }
    }
}

/// The masks of the first `2·windows` of 16 floats, in two vectors.
#[inline(always)]
unsafe fn pair_masks(windows: usize) -> [__m256i; 2] {
    [lane_mask((2 * windows).min(8)), lane_mask((2 * windows).saturating_sub(8))]
}

/// The even and odd floats of the `2·windows` (at most 16) from `p`, zeros past them.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn split_pairs(p: *const f32, windows: usize) -> (__m256, __m256) {
    let (a, b) = if windows == 8 {
        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    } else {
        let [ma, mb] = pair_masks(windows);
        (_mm256_maskload_ps(p, ma), _mm256_maskload_ps(p.add(8), mb))
    };
    // Within each 128-bit half: a's pair of evens (odds), then b's; then the halves' middle
    // 64-bit quarters swapped.
    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    (order(_mm256_shuffle_ps::<0b10_00_10_00>(a, b)), order(_mm256_shuffle_ps::<0b11_01_11_01>(a, b)))
}

/// Stores the first `windows` of `even` and `odd` interleaved as `2·windows` floats from `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn join_pairs(p: *mut f32, windows: usize, even: __m256, odd: __m256) {
    let (lo, hi) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
    let (a, b) = (_mm256_permute2f128_ps::<0x20>(lo, hi), _mm256_permute2f128_ps::<0x31>(lo, hi));
    if windows == 8 {
        _mm256_storeu_ps(p, a);
        _mm256_storeu_ps(p.add(8), b);
    } else {
        let [ma, mb] = pair_masks(windows);
        _mm256_maskstore_ps(p, ma, a);
        _mm256_maskstore_ps(p.add(8), mb, b);
    }
}

/// The groups of windows that cover a row of `ow`, as (first window, windows): groups of 8, the
/// last ending at the row's end (overlapping the one before, whose windows it does again with
/// the same result), or one group of all `ow` when the row is shorter than 8.
fn groups(ow: usize) -> impl Iterator<Item = (usize, usize)> {
    let whole = ow - ow % 8;
    let last = (!ow.is_multiple_of(8)).then(|| if ow > 8 { (ow - 8, 8) } else { (0, ow) });
    (0..whole).step_by(8).map(|o0| (o0, 8)).chain(last)
}

/// The max pooling of `super::maxpool`'s rows `r0`, `r1` (`w` wide) in groups of windows
/// ([`groups`]): each window's first greatest value (a NaN first in its window stays) into `y`
/// and its index, `first` plus its place in the rows, into `argmax`. A row of fewer than 8
/// windows moves whole vectors where the slices run on far enough past it
/// ([`super::maxpool::each_row`]), instead of masked moves: those cost more than the pooling, and
/// their stores stall the loads that next read them.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max_pool_row(r0: &[f32], r1: &[f32], w: usize, first: u32, y: &mut [f32], argmax: &mut [u32]) {
    let ow = w / 2;
    assert!(r0.len() >= 2 * ow && r1.len() >= 2 * ow && y.len() >= ow && argmax.len() >= ow, "pooling rows too short");
    let even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (o0, n) in groups(ow) {
        let whole = n == 8 || r1.len() >= 2 * o0 + 16 && y.len().min(argmax.len()) >= o0 + 8;
        let lanes = if whole { 8 } else { n };
        let ((v00, v01), (v10, v11)) =
            (split_pairs(r0.as_ptr().add(2 * o0), lanes), split_pairs(r1.as_ptr().add(2 * o0), lanes));
        let (mut best, mut off) = (v00, _mm256_setzero_si256());
        for (v, o) in [(v01, 1), (v10, w), (v11, w + 1)] {
            let m = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
            best = _mm256_blendv_ps(best, v, m);
            off = _mm256_blendv_epi8(off, _mm256_set1_epi32(o as i32), _mm256_castps_si256(m));
        }
        let index = _mm256_add_epi32(_mm256_set1_epi32((first as usize + 2 * o0) as i32), _mm256_add_epi32(even, off));
        let (y, am) = (y.as_mut_ptr().add(o0), argmax.as_mut_ptr().add(o0).cast());
        if lanes == 8 {
            _mm256_storeu_ps(y, best);
            _mm256_storeu_si256(am, index);
        } else {
            _mm256_maskstore_ps(y, lane_mask(n), best);
            _mm256_maskstore_epi32(am.cast(), lane_mask(n), index);
        }
    }
}

/// The adjoint of [`max_pool_row`] for the same groups of windows: the first two floats per
/// window of input-gradient rows `g0`, `g1` (the first two rows of `rows`) get each window's
/// gradient at its maximum and 0 elsewhere; whole vectors past a short row as there.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max_pool_grad_row(gy: &[f32], argmax: &[u32], w: usize, first: u32, rows: &mut [f32]) {
    let ow = w / 2;
    let len = rows.len();
    assert!(gy.len() >= ow && argmax.len() >= ow && len >= w + 2 * ow, "pooling rows too short");
    let g0 = rows.as_mut_ptr();
    let g1 = g0.add(w);
    let even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (o0, n) in groups(ow) {
        let whole = n == 8 || gy.len().min(argmax.len()) >= o0 + 8 && len >= w + 2 * o0 + 16;
        let lanes = if whole { 8 } else { n };
        let (g, am) = (gy.as_ptr().add(o0), argmax.as_ptr().add(o0).cast());
        let (g, am) = if lanes == 8 {
            (_mm256_loadu_ps(g), _mm256_loadu_si256(am))
        } else {
            (_mm256_maskload_ps(g, lane_mask(n)), _mm256_maskload_epi32(am.cast(), lane_mask(n)))
        };
        let off = _mm256_sub_epi32(am, _mm256_add_epi32(_mm256_set1_epi32((first as usize + 2 * o0) as i32), even));
        let at = |o: usize| _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(off, _mm256_set1_epi32(o as i32))), g);
        join_pairs(g0.add(2 * o0), lanes, at(0), at(1));
        join_pairs(g1.add(2 * o0), lanes, at(w), at(w + 1));
    }
}

super::maxpool::plane_kernels!("avx2");
