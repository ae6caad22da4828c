//! The in-place product of `avx512.rs` with AVX2 and FMA: the right operand read in place
//! (row-major, or rows at a convolution's tap offsets), no packing. Each output element is
//! summed as there (one fused multiply-add chain from zero over each block of [`KC`] terms,
//! each block then added to `c`), so the two levels give the same bits.

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

impl Tile {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize, const V: usize, const TAPS: bool>(&self) {
        let Rows { k, wp, plane } = self.rows;
        let masks = self.masks.map(|m| _mm256_loadu_si256(m.as_ptr().cast()));
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
                    *bv = _mm256_maskload_ps(row.add(8 * v), masks[v]);
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
                        let old = _mm256_mul_ps(_mm256_maskload_ps(cp, masks[v]), beta);
                        _mm256_add_ps(old, acc)
                    } else {
                        acc
                    };
                    _mm256_maskstore_ps(cp, masks[v], sum);
                }
            }
            k0 += kc;
        }
    }
}
