//! Matrix products through `matrixmultiply`, split across threads by rows of the output; products
//! with few rows and a row-major right operand (the convolutions') by [`small_m`], without
//! packing.

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
    if m <= SMALL_M && n >= MIN_N && b.cs == 1 && b.rs == n && small_m(m, k, n, a, b.data, beta, c) {
        return;
    }
    let rows_of_both = a.cs == 1 && a.rs == k && b.rs == 1 && b.cs == k;
    if rows_of_both && m * n <= MAX_NT && k >= MIN_K && small_nt(m, k, n, a.data, b.data, beta, c) {
        return;
    }
    packed(m, k, n, a, b, beta, c);
}

/// Products with at most this many rows and at least this many columns take [`small_m`] when
/// they can (with fewer columns, the last partial block costs more than packing saves).
const SMALL_M: usize = 64;
const MIN_N: usize = 256;
/// Products of two row-major operands with at most this many results, each summed over at
/// least this many terms (the weight gradients of convolutions with few channels), take
/// [`small_nt`]; larger ones reuse packed operands better.
const MAX_NT: usize = 1024;
const MIN_K: usize = 256;

/// matrixmultiply's packed product; the caller has checked the sizes.
fn packed(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
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

/// Rows of `c` per register block (eight independent sums hide the multiply-add latency), and
/// columns (one AVX-512 or two AVX2 registers per row).
const R: usize = 8;
const L: usize = 16;

/// Defines `fn $name(args) -> bool`, which runs `$body(args)` compiled for AVX-512 or for AVX2
/// with FMA, whichever the CPU has (found at run time), so that the body's loops (inlined into
/// each variant) are vectorised for that instruction set; it returns false where the CPU has
/// neither, for the caller to take the packed product.
macro_rules! vectorised {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, which includes FMA (checked just above).
                    unsafe { avx512($($arg),*) };
                    return true;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    unsafe { avx2($($arg),*) };
                    return true;
                }
            }
            let _ = ($($arg),*);
            false
        }
    };
}

vectorised! {
    /// `c = a·b + beta·c` for a row-major `b[k, n]` (its rows read in place, nothing packed):
    /// each block of R rows × L columns of `c` is summed in registers over all of k, in order,
    /// with fused multiply-adds.
    fn small_m(m: usize, k: usize, n: usize, a: View, b: &[f32], beta: f32, c: &mut [f32]) => small_m_blocks
}

vectorised! {
    /// `c = a·btᵀ + beta·c` for rows `a[m, k]` and `bt[n, k]`, both read in place: blocks of
    /// Q × Q outputs, each summed in L lanes over k in order, then across the lanes.
    fn small_nt(m: usize, k: usize, n: usize, a: &[f32], bt: &[f32], beta: f32, c: &mut [f32]) => small_nt_blocks
}

/// Rows and columns of `c` per block of [`small_nt`].
const Q: usize = 2;

#[inline(always)]
fn small_nt_blocks(m: usize, k: usize, n: usize, a: &[f32], bt: &[f32], beta: f32, c: &mut [f32]) {
    let full = k - k % L;
    for i0 in (0..m).step_by(Q) {
        for j0 in (0..n).step_by(Q) {
            // Rows past the end repeat the last one; their sums are not stored.
            let ar: [&[f32]; Q] = std::array::from_fn(|r| &a[(i0 + r).min(m - 1) * k..][..k]);
            let br: [&[f32]; Q] = std::array::from_fn(|q| &bt[(j0 + q).min(n - 1) * k..][..k]);
            let mut acc = [[[0.0f32; L]; Q]; Q];
            for k0 in (0..full).step_by(L) {
                let av: [&[f32; L]; Q] = ar.map(|r| r[k0..][..L].try_into().expect("L values"));
                let bv: [&[f32; L]; Q] = br.map(|r| r[k0..][..L].try_into().expect("L values"));
                for (acc, av) in acc.iter_mut().zip(av) {
                    for (acc, bv) in acc.iter_mut().zip(bv) {
                        for ((s, x), y) in acc.iter_mut().zip(av).zip(bv) {
                            *s = x.mul_add(*y, *s);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(m - i0) {
                for (q, lanes) in acc.iter().enumerate().take(n - j0) {
                    let s = (full..k).fold(lanes.iter().sum::<f32>(), |s, kk| ar[r][kk].mul_add(br[q][kk], s));
                    let o = &mut c[(i0 + r) * n + j0 + q];
                    *o = if beta == 0.0 { s } else { s + beta * *o };
                }
            }
        }
    }
}

/// The body of [`small_m`]: full blocks of L columns, then the last columns one by one.
#[inline(always)]
fn small_m_blocks(m: usize, k: usize, n: usize, a: View, b: &[f32], beta: f32, c: &mut [f32]) {
    let store = |o: &mut f32, s: f32| *o = if beta == 0.0 { s } else { s + beta * *o };
    let full = n - n % L;
    for p0 in (0..full).step_by(L) {
        for i0 in (0..m).step_by(R) {
            let rows = (m - i0).min(R);
            let mut acc = [[0.0f32; L]; R];
            for kk in 0..k {
                let bv: &[f32; L] = b[kk * n + p0..][..L].try_into().expect("L values");
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = a.data[(i0 + r.min(rows - 1)) * a.rs + kk * a.cs];
                    for (s, &x) in acc.iter_mut().zip(bv) {
                        *s = av.mul_add(x, *s);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                c[(i0 + r) * n + p0..][..L].iter_mut().zip(acc).for_each(|(o, &s)| store(o, s));
            }
        }
    }
    for i in 0..m {
        for j in full..n {
            let s = (0..k).fold(0.0f32, |s, kk| a.data[i * a.rs + kk * a.cs].mul_add(b[kk * n + j], s));
            store(&mut c[i * n + j], s);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// The unpacked product against matrixmultiply's on shapes with partial blocks, both
    /// layouts of `a`, and beta 0 and 1: within 1e-5 of the sum of |terms| (the two add the
    /// same terms, in blocks of k that may differ).
    /// The same for the product of two row-major operands (`b` seen transposed).
    #[test]
    fn small_nt_matches_the_packed_product() {
        for &(m, k, n) in &[(1, 64, 1), (3, 70, 5), (8, 784, 9), (16, 196, 72), (32, 1024, 145), (64, 100, 512)] {
            for beta in [0.0, 1.0] {
                let (av, bv) = (values(m * k, 1), values(n * k, 2));
                let (mut want, mut got) = (values(m * n, 3), values(m * n, 3));
                packed(m, k, n, View::rows(&av, k), View::t(&bv, k), beta, &mut want);
                if !small_nt(m, k, n, &av, &bv, beta, &mut got) {
                    return;
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let bound = 1e-5 * (k as f32 + beta.abs()) + 1e-6;
                    assert!((g - w).abs() <= bound, "{m}x{k}x{n} beta={beta}: [{i}] {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn small_m_matches_the_packed_product() {
        for &(m, k, n) in &[(1, 1, 1), (3, 7, 5), (8, 27, 16384 / 64), (13, 72, 196), (32, 144, 49), (64, 300, 33)] {
            for transposed in [false, true] {
                for beta in [0.0, 1.0] {
                    let (av, bv) = (values(m * k, 1), values(k * n, 2));
                    let a = if transposed { View::t(&av, m) } else { View::rows(&av, k) };
                    let b = View::rows(&bv, n);
                    let (mut want, mut got) = (values(m * n, 3), values(m * n, 3));
                    packed(m, k, n, a, b, beta, &mut want);
                    if !small_m(m, k, n, a, &bv, beta, &mut got) {
                        return; // neither AVX-512 nor AVX2: the packed product is used anyway
                    }
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let bound = 1e-5 * (k as f32 + beta.abs()) + 1e-6;
                        assert!((g - w).abs() <= bound, "{m}x{k}x{n} t={transposed} beta={beta}: [{i}] {g} vs {w}");
                    }
                }
            }
        }
    }
}
