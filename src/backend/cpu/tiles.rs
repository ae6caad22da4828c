//! What the in-place product kernels (`avx2.rs`, `avx512.rs`) share: the output's cutting into
//! tiles, each tile's operands, and the walk over the right operand's rows. The kernels differ
//! only in their vectors; each sums every output element as matrixmultiply does (one fused
//! multiply-add chain from zero over each block of [`KC`] terms, each block then added to `c`).

use super::gemm::{Rows, Start, View};
use std::cell::RefCell;

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
    /// Where row `p` of the right operand starts, from `b` ([`row_offsets`]), for `p < k`.
    pub offsets: *const usize,
    /// Live lanes of each of the two column vectors (at most a vector's width each).
    pub lanes: [usize; 2],
    pub beta: f32,
    /// The bias of the tile's first row, the others' after it; null when the sums start from
    /// `beta·c` instead.
    pub bias: *const f32,
    pub c: *mut f32,
    pub rs_c: usize,
}

/// A table of [`row_offsets`], and the rows and depth it is for.
type Offsets = (Option<(Rows, usize)>, Vec<usize>);

thread_local! {
    /// This thread's last table: a layer's products come one after another with the same rows.
    static OFFSETS: RefCell<Offsets> = const { RefCell::new((None, Vec::new())) };
}

/// The offsets of the right operand's first `depth` rows ([`Rows::offset`]), walked tap by tap
/// once per product, so that the kernels' inner loops read each row's start from a table
/// instead of stepping through the kernel's columns, rows and channels.
pub fn row_offsets(rows: Rows, depth: usize) -> Vec<usize> {
    let Rows { k, wp, plane } = rows;
    let mut out = Vec::with_capacity(depth);
    let (mut off, mut kx, mut ky) = (0, 0, 0);
    for _ in 0..depth {
        out.push(off);
        if k == 1 {
            off += plane;
            continue;
        }
        (off, kx) = (off + 1, kx + 1);
        if kx == k {
            (off, kx, ky) = (off + wp - k, 0, ky + 1);
            if ky == k {
                (off, ky) = (off + plane - k * wp, 0);
            }
        }
    }
    out
}

/// `c[i·rs_c + j] = Σ_p a(i, p)·b[rows.offset(p) + j] + start(i, j)` for `i < m`, `j < n`,
/// `p < k` ([`Start`]: `beta·c[i·rs_c + j]` or `bias[i]`), cut into tiles for a kernel of
/// `width`-lane vectors that keeps at most `most` rows of one vector in registers (half as many
/// of two): column blocks of two vectors, the last of one when one holds it; as few row blocks
/// as fit, their heights differing by one at most, so that no thin last block reloads the right
/// operand for few sums. `run(tile, rows, two vectors)` sums each.
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
    start: Start,
    (c, rs_c): (*mut f32, usize),
    (width, most): (usize, usize),
    run: impl FnMut(&Tile, usize, bool),
) {
    if m == 0 || n == 0 {
        return;
    }
    let (beta, bias) = match start {
        Start::Scaled(beta) => (beta, None),
        Start::Bias(bias) => (0.0, Some(&bias[..m])),
    };
    if k == 0 {
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(c.add(i * rs_c), n);
            let v = |v: f32| bias.map_or(if beta == 0.0 { 0.0 } else { v * beta }, |b| b[i]);
            row.iter_mut().for_each(|c| *c = v(*c));
        }
        return;
    }
    assert!(rows.k == 1 || (rows.wp >= rows.k && rows.plane >= rows.k * rows.wp), "taps out of order");
    assert!(
        a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && b.len() >= rows.offset(k - 1) + n,
        "gemm input too small"
    );
    OFFSETS.with_borrow_mut(|(key, offsets)| {
        if *key != Some((rows, k)) {
            *offsets = row_offsets(rows, k);
            *key = Some((rows, k));
        }
        cut((m, k, n), a, b, offsets, (beta, bias), (c, rs_c), (width, most), run)
    })
}

/// [`for_tiles`] with the right operand's row `offsets`.
///
/// # Safety
/// As [`for_tiles`].
#[allow(clippy::too_many_arguments)]
unsafe fn cut(
    (m, k, n): (usize, usize, usize),
    a: View,
    b: &[f32],
    offsets: &[usize],
    (beta, bias): (f32, Option<&[f32]>),
    (c, rs_c): (*mut f32, usize),
    (width, most): (usize, usize),
    mut run: impl FnMut(&Tile, usize, bool),
) {
    for j0 in (0..n).step_by(2 * width) {
        let live = n - j0;
        let two = live > width;
        let lanes = [live.min(width), live.saturating_sub(width).min(width)];
        let tall = if two { most / 2 } else { most };
        let blocks = m.div_ceil(tall);
        for (i0, i1) in (0..blocks).map(|r| (r * m / blocks, (r + 1) * m / blocks)) {
            let t = Tile {
                k,
                a: a.data.as_ptr().add(i0 * a.rs),
                rs_a: a.rs,
                cs_a: a.cs,
                b: b.as_ptr().add(j0),
                offsets: offsets.as_ptr(),
                lanes,
                beta,
                bias: bias.map_or(std::ptr::null(), |b| b[i0..].as_ptr()),
                c: c.add(i0 * rs_c + j0),
                rs_c,
            };
            run(&t, i1 - i0, two);
        }
    }
}

/// Calls `$run::<R, V>($t)` with the tile's row count `$r` among `$n…` as a constant.
macro_rules! dispatch {
    ($run:ident, $t:expr, $r:expr, $v:literal, $($n:literal)+) => {
        match $r {
            $($n => $run::<$n, $v>($t),)+
            _ => unreachable!("tile rows out of range"),
        }
    };
}
pub(super) use dispatch;
