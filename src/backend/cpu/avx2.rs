//! The in-place product of `avx512.rs` with AVX2 and FMA: the right operand read in place
//! (row-major, or rows at a convolution's tap offsets), no packing. Each output element is
//! summed as there (one fused multiply-add chain from zero over each block of [`KC`] terms,
//! each block then added to `c`), so the two levels give the same bits. Also the transposes
//! (8x8 tiles of 256-bit vectors), at both levels.

use super::gemm::{Rows, View};
use std::arch::x86_64::*;

/// matrixmultiply's depth block for f32, as in `avx512.rs`.
const KC: usize = 256;
/// Most rows of a tile: 12 rows of one vector or 6 rows of two, with the right operand's
/// vectors and the broadcast, fit the 16 registers.
const ROWS: usize = 12;

/// Calls [`Tile::run`] with the tile's row count `r` and whether its right operand's rows are
/// kernel taps as constants.
macro_rules! dispatch {
    ($t:expr, $r:expr, $v:literal, $($n:literal)+) => {
        match ($r, $t.rows.k > 1) {
            $(($n, false) => $t.run::<$n, $v, false>(),)+
            $(($n, true) => $t.run::<$n, $v, true>(),)+
            _ => unreachable!("tile rows out of range"),
        }
    };
}

/// `c[i·rs_c + j] = Σ_p a(i, p)·b[rows.offset(p) + j] + beta·c[i·rs_c + j]` for `i < m`, `j < n`,
/// `p < k`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `c` must be valid for reads and writes at those places,
/// and nothing else may access them meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(m: usize, k: usize, n: usize, a: View, b: &[f32], rows: Rows, beta: f32, c: *mut f32, rs_c: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(c.add(i * rs_c), n);
            row.iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { *v * beta });
        }
        return;
    }
    assert!(rows.k == 1 || (rows.wp >= rows.k && rows.plane >= rows.k * rows.wp), "taps out of order");
    assert!(
        a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && b.len() >= rows.offset(k - 1) + n,
        "gemm input too small"
    );
    // Column blocks of two vectors, the last of one when 8 lanes hold it; row blocks of even
    // height, so that no thin last block reloads the right operand for few sums.
    for j0 in (0..n).step_by(16) {
        let lanes = n - j0;
        let two = lanes > 8;
        let masks = [lane_mask(lanes), lane_mask(lanes.saturating_sub(8))];
        let most = if two { ROWS / 2 } else { ROWS };
        let height = m.div_ceil(m.div_ceil(most));
        for i0 in (0..m).step_by(height) {
            let r = height.min(m - i0);
            let t = Tile {
                k,
                a: a.data.as_ptr().add(i0 * a.rs),
                rs_a: a.rs,
                cs_a: a.cs,
                b: b.as_ptr().add(j0),
                rows,
                masks,
                beta,
                c: c.add(i0 * rs_c + j0),
                rs_c,
            };
            if two {
                dispatch!(t, r, 2, 1 2 3 4 5 6);
            } else {
                dispatch!(t, r, 1, 1 2 3 4 5 6 7 8 9 10 11 12);
            }
        }
    }
}

/// The first `lanes` of 8 lanes (all of them from 8 up), as `maskload`'s sign bits.
fn lane_mask(lanes: usize) -> [i32; 8] {
    std::array::from_fn(|l| if l < lanes { -1 } else { 0 })
}

/// One block of at most `R` rows and `8·V` columns of `c`, with pointers at its first element.
struct Tile {
    k: usize,
    a: *const f32,
    rs_a: usize,
    cs_a: usize,
    b: *const f32,
    rows: Rows,
    /// Live lanes of each of the `V` column vectors.
    masks: [[i32; 8]; 2],
    beta: f32,
    c: *mut f32,
    rs_c: usize,
}

/// The 8 floats at `p`, or only the lanes of `mask` (the others 0) when not `full`.
#[inline(always)]
unsafe fn load(p: *const f32, full: bool, mask: __m256i) -> __m256 {
    if full {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask)
    }
}

impl Tile {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize, const V: usize, const TAPS: bool>(&self) {
        let Rows { k, wp, plane } = self.rows;
        let masks = self.masks.map(|m| _mm256_loadu_si256(m.as_ptr().cast()));
        // Masked moves are slow on some CPUs: whole vectors move plainly.
        let full = self.masks.map(|m| m[7] != 0);
        let mut k0 = 0;
        while k0 < self.k {
            let kc = KC.min(self.k - k0);
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            // Row `p`'s offset, kept up to date tap by tap.
            let (mut off, mut kx, mut ky) =
                if TAPS { (self.rows.offset(k0), k0 % k, k0 / k % k) } else { (k0 * plane, 0, 0) };
            for p in k0..k0 + kc {
                let row = self.b.add(off);
                if TAPS {
                    (off, kx) = (off + 1, kx + 1);
                    if kx == k {
                        (off, kx, ky) = (off + wp - k, 0, ky + 1);
                        if ky == k {
                            (off, ky) = (off + plane - k * wp, 0);
                        }
                    }
                } else {
                    off += plane;
                }
                let mut bv = [_mm256_setzero_ps(); V];
                for (v, bv) in bv.iter_mut().enumerate() {
                    *bv = load(row.add(8 * v), full[v], masks[v]);
                }
                let a = self.a.add(p * self.cs_a);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(i * self.rs_a));
                    for (acc, bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm256_fmadd_ps(av, *bv, *acc);
                    }
                }
            }
            let store = k0 > 0 || self.beta != 0.0;
            let beta = _mm256_set1_ps(if k0 > 0 { 1.0 } else { self.beta });
            for (i, acc) in acc.iter().enumerate() {
                for (v, &acc) in acc.iter().enumerate() {
                    let cp = self.c.add(i * self.rs_c + 8 * v);
                    let sum = if store {
                        let old = _mm256_mul_ps(load(cp, full[v], masks[v]), beta);
                        _mm256_add_ps(old, acc)
                    } else {
                        acc
                    };
                    if full[v] {
                        _mm256_storeu_ps(cp, sum);
                    } else {
                        _mm256_maskstore_ps(cp, masks[v], sum);
                    }
                }
            }
            k0 += kc;
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
