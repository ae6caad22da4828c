//! Matrix products through `matrixmultiply`, split across threads by rows of the output.

use rayon::prelude::*;

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

/// `c[m, n] = a[m, k]·b[k, n] + beta·c` on one thread; `c` is row-major.
pub fn gemm(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= m * n, "gemm output too small");
    assert!(
        k == 0 || (a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs),
        "gemm input too small"
    );
    // SAFETY: the asserts above keep every index that sgemm touches inside the slices.
    unsafe {
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
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// As [`gemm`], with the rows of `c` split across the thread pool when the product is large.
pub fn gemm_par(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    let threads = rayon::current_num_threads();
    if threads == 1 || m * k * n < 1 << 18 || m < 2 * threads {
        return gemm(m, k, n, a, b, beta, c);
    }
    let rows = m.div_ceil(threads);
    c[..m * n].par_chunks_mut(rows * n).enumerate().for_each(|(i, ci)| {
        let r0 = i * rows;
        let a_i = View { data: &a.data[r0 * a.rs..], ..a };
        gemm(ci.len() / n, k, n, a_i, b, beta, ci);
    });
}
