//! What the in-place product kernels (`avx2.rs`, `avx512.rs`) share: the output's cutting into
//! tiles, each tile's operands, and the walk over the right operand's rows. The kernels differ
//! only in their vectors; each sums every output element as matrixmultiply does (one fused
//! multiply-add chain from zero over each block of [`KC`] terms, each block then added to `c`).

use super::gemm::{Rows, View};

/// matrixmultiply's depth block for f32 (`S_KC`).
pub const KC: usize = 256;

/// One block of at most `R` rows and `V` vectors of columns of `c`, with pointers at its first
/// element.
pub struct Tile {
    pub k: usize,
    pub a: *const f32,
    pub rs_a: usize,
    pub cs_a: usize,
    pub b: *const f32,
    pub rows: Rows,
    /// Live lanes of each of the two column vectors (at most a vector's width each).
    pub lanes: [usize; 2],
    pub beta: f32,
    pub c: *mut f32,
    pub rs_c: usize,
}

/// The right operand's row offsets from row `p` on, tap by tap.
pub struct RowWalk {
    off: usize,
    kx: usize,
    ky: usize,
    rows: Rows,
}

impl RowWalk {
    pub fn from(rows: Rows, p: usize) -> Self {
        let k = rows.k;
        RowWalk { off: rows.offset(p), kx: p % k, ky: p / k % k, rows }
    }

    /// This row's offset, then on to the next row (`TAPS`: the rows are a kernel's taps).
    #[inline(always)]
    pub fn next<const TAPS: bool>(&mut self) -> usize {
        let (row, Rows { k, wp, plane }) = (self.off, self.rows);
        if TAPS {
            (self.off, self.kx) = (self.off + 1, self.kx + 1);
            if self.kx == k {
                (self.off, self.kx, self.ky) = (self.off + wp - k, 0, self.ky + 1);
                if self.ky == k {
                    (self.off, self.ky) = (self.off + plane - k * wp, 0);
                }
            }
        } else {
            self.off += plane;
        }
        row
    }
}

/// `c[i·rs_c + j] = Σ_p a(i, p)·b[rows.offset(p) + j] + beta·c[i·rs_c + j]` for `i < m`, `j < n`,
/// `p < k`, cut into tiles for a kernel of `width`-lane vectors that keeps at most `most` rows
/// of one vector in registers (half as many of two): column blocks of two vectors, the last of
/// one when one holds it; row blocks of even height, so that no thin last block reloads the
/// right operand for few sums. `run(tile, rows, two vectors)` sums each.
///
/// # Safety
/// `run` must be safe to call on this CPU; `c` must be valid for reads and writes at those
/// places, and nothing else may access them meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn for_tiles(
    (m, k, n): (usize, usize, usize),
    a: View,
    b: &[f32],
    rows: Rows,
    beta: f32,
    (c, rs_c): (*mut f32, usize),
    (width, most): (usize, usize),
    mut run: impl FnMut(&Tile, usize, bool),
) {
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
    for j0 in (0..n).step_by(2 * width) {
        let live = n - j0;
        let two = live > width;
        let lanes = [live.min(width), live.saturating_sub(width).min(width)];
        let tall = if two { most / 2 } else { most };
        let height = m.div_ceil(m.div_ceil(tall));
        for i0 in (0..m).step_by(height) {
            let t = Tile {
                k,
                a: a.data.as_ptr().add(i0 * a.rs),
                rs_a: a.rs,
                cs_a: a.cs,
                b: b.as_ptr().add(j0),
                rows,
                lanes,
                beta,
                c: c.add(i0 * rs_c + j0),
                rs_c,
            };
            run(&t, height.min(m - i0), two);
        }
    }
}

/// Calls `$run::<R, V, TAPS>($t)` with the tile's row count `$r` among `$n…` and whether its
/// right operand's rows are kernel taps as constants.
macro_rules! dispatch {
    ($run:ident, $t:expr, $r:expr, $v:literal, $($n:literal)+) => {
        match ($r, $t.rows.k > 1) {
            $(($n, false) => $run::<$n, $v, false>($t),)+
            $(($n, true) => $run::<$n, $v, true>($t),)+
            _ => unreachable!("tile rows out of range"),
        }
    };
}
pub(super) use dispatch;
