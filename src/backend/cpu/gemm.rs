//! Matrix products: at the AVX2 and AVX-512 levels a packing-free kernel of the level's own
//! vectors reads a row-major right operand (or a convolution's taps) in place; elsewhere
//! `matrixmultiply`, which picks its kernel by the CPU alone. All give the same bits. Split
//! across threads by rows or column blocks of the output. Also the copies and transposes that
//! arrange their operands.

use super::level::{level, Level};
#[cfg(target_arch = "x86_64")]
use super::tiles::{for_tiles, Tile};
use rayon::prelude::*;
use std::marker::PhantomData;

/// A row-major or transposed view of a matrix: element (i, j) sits at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: 1, cs: cols }
    }
}

/// What a product adds its sums to, element by element: `beta·c` (`c` not read when `beta` is
/// 0), or the bias of the element's row (`c` not read).
#[derive(Clone, Copy)]
pub enum Start<'a> {
    Scaled(f32),
    Bias(&'a [f32]),
}

/// `c[m, n] = a[m, k]·b[k, n] + beta·c` on one thread; `c` is row-major.
pub fn gemm(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    gemm_to(m, k, n, a, b, beta, c, n)
}

/// As [`gemm`], with the rows of `c` `rs_c` apart.
#[allow(clippy::too_many_arguments)]
pub fn gemm_to(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32], rs_c: usize) {
    check_out(m, n, c.len(), rs_c);
    // SAFETY: `c` holds the output block and is borrowed mutably.
    unsafe { gemm_raw(m, k, n, a, b, Start::Scaled(beta), c.as_mut_ptr(), rs_c) }
}

fn check_out(m: usize, n: usize, len: usize, rs_c: usize) {
    assert!(m == 0 || n == 0 || (rs_c >= n && len >= (m - 1) * rs_c + n), "gemm output too small");
}

/// [`gemm_to`] into a raw output, from `start`. matrixmultiply takes no bias: its rows are
/// filled with it first and added to, the same sums.
///
/// # Safety
/// `c` must be valid for reads and writes at `i·rs_c + j` for `i < m`, `j < n`, and nothing else
/// may access those elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(m: usize, k: usize, n: usize, a: View, b: View, start: Start, c: *mut f32, rs_c: usize) {
    if b.cs == 1 && in_place() {
        // SAFETY: `in_place` holds only where the CPU runs the kernel; it checks the inputs'
        // bounds, the caller `c`'s.
        return in_place_raw(m, k, n, a, b.data, Rows::strided(b.rs), start, c, rs_c);
    }
    let beta = match start {
        Start::Scaled(beta) => beta,
        Start::Bias(bias) => {
            assert!(bias.len() >= m, "bias too short");
            (0..m).for_each(|i| std::slice::from_raw_parts_mut(c.add(i * rs_c), n).fill(bias[i]));
            1.0
        }
    };
    packed_raw(m, k, n, a, b, beta, c, rs_c)
}

/// The in-place kernel of the process's level: AVX-512 or AVX2 (the same bits).
///
/// # Safety
/// The level must have an in-place kernel ([`in_place`]); `c` as for [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
unsafe fn in_place_raw(
    m: usize,
    k: usize,
    n: usize,
    a: View,
    b: &[f32],
    rows: Rows,
    start: Start,
    c: *mut f32,
    rs_c: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some((tiles, tile)) = kernel(level()) {
        return for_tiles((m, k, n), a, b, rows, start, (c, rs_c), tiles, |t, r, two| tile(t, r, two));
    }
    unreachable!("no in-place kernel at this level")
}

/// A level's in-place kernel: its tiles' vector width and most rows, and the function that sums
/// one tile.
#[cfg(target_arch = "x86_64")]
type Kernel = ((usize, usize), unsafe fn(&Tile, usize, bool));

/// The in-place kernel of `level`, if it has one: AVX-512 or AVX2 (the same bits).
#[cfg(target_arch = "x86_64")]
fn kernel(level: Level) -> Option<Kernel> {
    match level {
        Level::Avx512 => Some((super::avx512::TILES, super::avx512::tile)),
        Level::Avx2 => Some((super::avx2::TILES, super::avx2::tile)),
        _ => None,
    }
}

/// `c[m, n] = a[m, k]·B + bias` (`bias[i]` on row `i`) with row `p` of `B` the `n` floats of
/// `b` from `rows.offset(p)`: a convolution's taps read in place from zero-bordered planes.
/// Needs AVX2 or AVX-512 ([`in_place`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_taps(m: usize, k: usize, n: usize, a: View, b: &[f32], rows: Rows, bias: &[f32], c: &mut [f32]) {
    assert!(in_place(), "products over taps need AVX2 or AVX-512");
    check_out(m, n, c.len(), n);
    // SAFETY: the level has the kernel; it checks the inputs' bounds, `c` is borrowed.
    unsafe { in_place_raw(m, k, n, a, b, rows, Start::Bias(bias), c.as_mut_ptr(), n) }
}

/// Whether the in-place kernel runs at the process's level, for every product with a row-major
/// right operand and for [`gemm_taps`]. At AVX-512 it is about as fast as matrixmultiply's
/// packed kernel on large products too, and at AVX2 it is the one kernel that uses no wider vectors
/// than the level allows (matrixmultiply would choose AVX-512 where the CPU has it).
pub fn in_place() -> bool {
    cfg!(target_arch = "x86_64") && level() >= Level::Avx2
}

/// [`gemm_to`] through matrixmultiply, which packs both operands.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn packed(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32], rs_c: usize) {
    check_out(m, n, c.len(), rs_c);
    // SAFETY: `c` holds the output block and is borrowed mutably.
    unsafe { packed_raw(m, k, n, a, b, beta, c.as_mut_ptr(), rs_c) }
}

/// # Safety
/// As [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn packed_raw(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: *mut f32, rs_c: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k == 0 || (a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs),
        "gemm input too small"
    );
    // SAFETY: the assert keeps every input index inside the slices; the caller vouches for `c`.
    matrixmultiply::sgemm(
        m,
        k,
        n,
        1.0,
        a.data.as_ptr(),
        a.rs as isize,
        a.cs as isize,
        b.data.as_ptr(),
        b.rs as isize,
        b.cs as isize,
        beta,
        c,
        rs_c as isize,
        1,
    );
}

/// Where the rows of a product's right operand start: row `p` at `(p / k²)·plane + (p / k % k)·wp
/// + p % k`, the tap `p` of a `k x k` kernel (channel-major, then kernel row, then column) over
/// zero-bordered planes `plane` floats apart whose image rows are `wp` wide. With `k = 1`, a
/// row-major matrix whose rows are `plane` apart.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Rows {
    pub k: usize,
    pub wp: usize,
    pub plane: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Rows {
    pub fn strided(rs: usize) -> Self {
        Rows { k: 1, wp: 0, plane: rs }
    }

    pub fn offset(&self, p: usize) -> usize {
        let k = self.k;
        p / (k * k) * self.plane + p / k % k * self.wp + p % k
    }
}

/// A matrix that parallel tasks write at places no slice borrow can separate, such as one
/// column block of every row; each task must touch only its own elements.
pub struct Shared<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    /// Holds the matrix's mutable borrow for as long as `Shared` lives.
    borrow: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<'_, T> {}

// SAFETY: `Shared` only hands out writes through its unsafe methods, whose callers guarantee
// that tasks touch disjoint elements.
unsafe impl<T: Send> Send for Shared<'_, T> {}
unsafe impl<T: Send> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub fn new(data: &'a mut [T]) -> Self {
        Shared { ptr: data.as_mut_ptr(), len: data.len(), borrow: PhantomData }
    }

    /// The `len` elements from `at`.
    ///
    /// # Safety
    /// Nothing else may access them while the slice lives.
    #[allow(clippy::mut_from_ref)] // disjoint places of one matrix, as the type is for
    pub unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        assert!(at + len <= self.len, "shared slice out of range");
        std::slice::from_raw_parts_mut(self.ptr.add(at), len)
    }
}

impl Shared<'_, f32> {
    /// [`gemm_to`] into the `m x n` block that starts at `at`, rows `rs_c` apart.
    ///
    /// # Safety
    /// Nothing else may access that block meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(&self, m: usize, k: usize, n: usize, a: View, b: View, beta: f32, at: usize, rs_c: usize) {
        check_out(m, n, self.len.saturating_sub(at), rs_c);
        gemm_raw(m, k, n, a, b, Start::Scaled(beta), self.ptr.add(at), rs_c)
    }

    /// [`Shared::gemm`] with row `i` of the block starting from `bias[i]` instead of from `c`.
    ///
    /// # Safety
    /// As [`Shared::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_bias(
        &self,
        m: usize,
        k: usize,
        n: usize,
        a: View,
        b: View,
        bias: &[f32],
        at: usize,
        rs_c: usize,
    ) {
        check_out(m, n, self.len.saturating_sub(at), rs_c);
        gemm_raw(m, k, n, a, b, Start::Bias(bias), self.ptr.add(at), rs_c)
    }
}

/// Rows of `c` per task of [`gemm_par`]: all of them for small products.
pub fn par_rows(m: usize, k: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads == 1 || m * k * n < 1 << 18 || m < 2 * threads {
        m
    } else {
        m.div_ceil(threads)
    }
}

/// As [`gemm`], with `c` split across the thread pool when the product is large: into column
/// blocks when it is wider than tall (so that each thread reads only its part of `b`), else
/// into rows.
pub fn gemm_par(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    let rows = par_rows(m, k, n);
    if rows == m {
        return gemm(m, k, n, a, b, beta, c);
    }
    if n > m {
        let cols = n.div_ceil(rayon::current_num_threads()).next_multiple_of(32);
        let out = Shared::new(&mut c[..m * n]);
        return (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
            let (j0, b_j) = (j * cols, View { data: &b.data[j * cols * b.cs..], ..b });
            // SAFETY: task `j` alone writes columns `j0..j0 + cols` of `c`.
            unsafe { out.gemm(m, k, cols.min(n - j0), a, b_j, beta, j0, n) }
        });
    }
    c[..m * n].par_chunks_mut(rows * n).enumerate().for_each(|(i, ci)| {
        let r0 = i * rows;
        let a_i = View { data: &a.data[r0 * a.rs..], ..a };
        gemm(ci.len() / n, k, n, a_i, b, beta, ci);
    });
}

/// The row stride for a scratch matrix with rows of `len` floats: rows a multiple of 4 KiB apart
/// fall in the same L1 cache sets and evict each other when a product reads many of them at
/// once, so those get 16 floats of padding.
pub fn row_stride(len: usize) -> usize {
    if len.is_multiple_of(1024) {
        len + 16
    } else {
        len
    }
}

/// `dst[r·ds + j] = src[r·ss + j]` for `r < rows`, `j < len`: rows of one matrix into another
/// with a different row stride.
pub fn copy_rows(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, rows: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: the CPU has the level's instructions; the functions check the slice bounds.
        Level::Avx512 => return unsafe { super::avx512::copy_rows(src, ss, dst, ds, rows, len) },
        Level::Avx2 => return unsafe { super::avx2::copy_rows(src, ss, dst, ds, rows, len) },
        _ => {}
    }
    for r in 0..rows {
        dst[r * ds..][..len].copy_from_slice(&src[r * ss..][..len]);
    }
}

/// `dst[j·rows + i] = src[i·cols + j]` for a row-major `rows x cols` matrix.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_rows(src, cols, rows, cols, dst)
}

/// The whole 8x8 tiles of [`transpose_rows`] in vectors, where the level has them: the rows
/// and columns they cover.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn transpose_tiles(src: &[f32], rs: usize, rows: usize, cols: usize, dst: &mut [f32]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if level() >= Level::Avx2 {
        // SAFETY: the CPU has AVX2; the function checks the slice bounds.
        unsafe { super::avx2::transpose_tiles(src, rs, rows, cols, dst) };
        return (rows - rows % 8, cols - cols % 8);
    }
    (0, 0)
}

/// `dst[j·rows + i] = src[i·rs + j]`: the transpose of a `rows x cols` matrix whose rows are
/// `rs` apart.
pub fn transpose_rows(src: &[f32], rs: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    if rows == 1 {
        return dst[..cols].copy_from_slice(&src[..cols]);
    }
    let (tiled_rows, tiled_cols) = transpose_tiles(src, rs, rows, cols, dst);
    let mut scalar = |i_range: std::ops::Range<usize>, j_range: std::ops::Range<usize>| {
        for i in i_range {
            for j in j_range.clone() {
                dst[j * rows + i] = src[i * rs + j];
            }
        }
    };
    scalar(0..tiled_rows, tiled_cols..cols);
    scalar(tiled_rows..rows, 0..cols);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The kernel chosen by [`gemm`] and matrixmultiply give the same bits: odd shapes (partial
    /// tiles and vectors), depths across the 256-term blocks, transposed left operands, strided
    /// right operands and outputs, both `beta`s, and a bias per row (against matrixmultiply
    /// adding to rows filled with it).
    #[test]
    fn gemm_matches_matrixmultiply_bit_for_bit() {
        let mut rng = Rng::new(3);
        let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        for (m, k, n) in [
            (1, 1, 1),
            (8, 27, 100),
            (13, 300, 17),
            (27, 600, 8),
            (30, 5, 33),
            (100, 784, 50),
            (70, 530, 90),
            (5, 0, 3),
        ] {
            let bias = values(m);
            for (transposed, pad, beta) in [
                (false, 0, Some(0.0)),
                (true, 3, Some(1.0)),
                (false, 5, Some(1.0)),
                (true, 0, Some(0.0)),
                (true, 2, None),
            ] {
                let a = values(m * k);
                let a = if transposed { View::t(&a, m) } else { View::rows(&a, k) };
                let b = values(k * (n + pad) + 1);
                let b = View { data: &b, rs: n + pad, cs: 1 };
                let c0 = values(m * (n + pad));
                let (mut fast, mut reference) = (c0.clone(), c0);
                match beta {
                    Some(beta) => gemm_to(m, k, n, a, b, beta, &mut fast, n + pad),
                    // SAFETY: `fast` holds m rows n + pad apart.
                    None => unsafe { Shared::new(&mut fast).gemm_bias(m, k, n, a, b, &bias, 0, n + pad) },
                }
                if beta.is_none() {
                    reference.chunks_mut(n + pad).zip(&bias).for_each(|(row, &v)| row[..n].fill(v));
                }
                packed(m, k, n, a, b, beta.unwrap_or(1.0), &mut reference, n + pad);
                let same = fast.iter().zip(&reference).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{k}x{n}, transposed {transposed}, beta {beta:?}");
            }
        }
    }

    /// The AVX2 and AVX-512 in-place kernels give the same bits, over rows and over taps, adding
    /// to `c` or to a bias (where this CPU has both levels).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn in_place_kernels_agree_across_levels() {
        if !Level::available().contains(&Level::Avx512) {
            eprintln!("SKIPPED: this CPU has no AVX-512 to compare the AVX2 kernel with");
            return;
        }
        let mut rng = Rng::new(5);
        let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        for (m, k, n, taps) in [(1, 1, 1, 1), (7, 300, 19, 1), (13, 27, 40, 3), (24, 75, 9, 5), (30, 600, 33, 1)] {
            let (wp, plane) = (n + taps + 2, (n + taps + 2) * (taps + 3));
            let rows = if taps > 1 { Rows { k: taps, wp, plane } } else { Rows::strided(wp) };
            let a = values(m * k);
            let b = values(rows.offset(k.max(1) - 1) + n + 1);
            let (c0, bias) = (values(m * n), values(m));
            for start in [Start::Scaled(1.0), Start::Bias(&bias)] {
                let run = |level: Level| {
                    let ((tiles, tile), mut c) = (kernel(level).unwrap(), c0.clone());
                    let (a, out) = (View::rows(&a, k), (c.as_mut_ptr(), n));
                    // SAFETY: the CPU has both levels' instructions; `c` holds m x n.
                    unsafe { for_tiles((m, k, n), a, &b, rows, start, out, tiles, |t, r, two| tile(t, r, two)) };
                    c
                };
                let (avx2, avx512) = (run(Level::Avx2), run(Level::Avx512));
                let same = avx2.iter().zip(&avx512).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{k}x{n}, taps {taps}");
            }
        }
    }

    /// Split across threads by columns (wide products) or rows (tall ones), the same bits as on
    /// one thread.
    #[test]
    fn split_products_match_one_thread() {
        let mut rng = Rng::new(4);
        let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        for (m, k, n) in [(10, 100, 1568), (100, 10, 1570), (300, 40, 70), (100, 100, 784)] {
            let (a, b) = (values(m * k), values(k * n));
            let (mut split, mut one) = (vec![0.0; m * n], vec![0.0; m * n]);
            gemm_par(m, k, n, View::rows(&a, k), View::rows(&b, n), 0.0, &mut split);
            gemm(m, k, n, View::rows(&a, k), View::rows(&b, n), 0.0, &mut one);
            assert!(split.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()), "{m}x{k}x{n}");
        }
    }

    /// Rows shorter than a vector, of whole vectors and between, at the process's level: each
    /// row's floats land at their place and nothing around them moves.
    #[test]
    fn copy_rows_moves_each_row_and_nothing_else() {
        for (rows, len) in
            [(3, 1), (2, 3), (2, 4), (3, 5), (4, 7), (2, 8), (5, 9), (4, 14), (3, 16), (2, 17), (6, 28), (1, 40)]
        {
            let (ss, ds) = (len + 3, len + 5);
            let src: Vec<f32> = (0..rows * ss).map(|v| v as f32).collect();
            let mut dst = vec![-1.0; rows * ds];
            copy_rows(&src, ss, &mut dst, ds, rows, len);
            for (i, &v) in dst.iter().enumerate() {
                let (r, j) = (i / ds, i % ds);
                let want = if j < len { src[r * ss + j] } else { -1.0 };
                assert_eq!(v, want, "{rows} rows of {len}: [{r}][{j}]");
            }
        }
    }

    /// Whole 8x8 tiles, partial ones at both edges, matrices smaller than a tile, and vectors.
    #[test]
    fn transpose_moves_every_element() {
        for (rows, cols) in [(37, 21), (8, 784), (32, 49), (3, 5), (16, 16), (1, 40), (40, 1)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![-1.0; src.len()];
            transpose(&src, rows, cols, &mut dst);
            assert!((0..rows).all(|i| (0..cols).all(|j| dst[j * rows + i] == src[i * cols + j])), "{rows}x{cols}");
            // The first `cols - 3` columns alone, as a matrix with rows `cols` apart.
            let part = cols.saturating_sub(3);
            transpose_rows(&src, cols, rows, part, &mut dst);
            assert!(
                (0..rows).all(|i| (0..part).all(|j| dst[j * rows + i] == src[i * cols + j])),
                "{rows}x{part} of {cols}"
            );
        }
    }
}
