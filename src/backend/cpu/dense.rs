//! Dense layer: `y[n, o] = x[n, i]·w[o, i]ᵀ + b[o]` and its gradients.

use super::gemm::{gemm_par, in_place, par_rows, transpose_rows, Shared, View};
use super::{activation, Activate};
use crate::model::Act;
use rayon::prelude::*;

/// With `act`, each task then activates its block while in cache: in place, or into the
/// activation's own output when `y` is still needed. `w_t` is scratch for the transposed
/// weights (`n_in·n_out` floats).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    act: Option<(Act, Option<&mut [f32]>)>,
    w_t: &mut [f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) {
    // Each task computes a block of outputs' columns of `y`. The in-place product wants the
    // weights row-major along the outputs, so the task first turns its block's weights into a
    // `[n_in, cols]` block of `w_t` (the turning split across the threads too); matrixmultiply
    // takes them as they are.
    let tasks = if par_rows(n, n_in, n_out) == n { 1 } else { rayon::current_num_threads() };
    let cols = n_out.div_ceil(tasks).next_multiple_of(8);
    let out = Shared::new(&mut y[..n * n_out]);
    let act = act.map(|(f, a)| Activate::new((f, a.map(|a| &mut a[..n * n_out]))));
    w_t[..n_in * n_out].par_chunks_mut(n_in * cols).enumerate().for_each(|(j, w_t)| {
        let (j0, cols) = (j * cols, w_t.len() / n_in);
        let w_op = if in_place() {
            transpose_rows(&w[j0 * n_in..], n_in, cols, n_in, w_t);
            View::rows(w_t, cols)
        } else {
            View::t(&w[j0 * n_in..], n_in)
        };
        // SAFETY: task `j` alone writes columns `j0..j0 + cols` of `y`.
        unsafe {
            (0..n).for_each(|i| out.slice(i * n_out + j0, cols).copy_from_slice(&b[j0..][..cols]));
            out.gemm(n, n_in, cols, View::rows(x, n_in), w_op, 1.0, j0, n_out);
            if let Some(act) = &act {
                (0..n).for_each(|i| act.apply(&out, i * n_out + j0, cols));
            }
        }
    });
}

/// `gx = gy·w`, then in place `gx·f'(y)` for a fused activation `act = (f, y)`; `gw = gyᵀ·x`,
/// `gb = Σ_n gy`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    act: Option<(Act, &[f32])>,
    gw: &mut [f32],
    gb: &mut [f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) {
    if let Some(gx) = gx {
        gemm_par(n, n_out, n_in, View::rows(gy, n_out), View::rows(w, n_in), 0.0, gx);
        if let Some((f, y)) = act {
            activation::apply_grad_par(f, y, gx, n * n_in);
        }
    }
    gemm_par(n_out, n, n_in, View::t(gy, n_out), View::rows(x, n_in), 0.0, gw);
    super::sum_rows(gy, n, n_out, 1, gb);
}

#[cfg(test)]
mod tests {
    use super::super::gemm::gemm;
    use super::*;
    use crate::rng::Rng;

    /// Cut into blocks of outputs across the threads, each block turning its own weights: the
    /// same bits as one product over the untouched weights, on shapes large enough to be cut,
    /// whose outputs are no multiple of the blocks, and on one too small to be.
    #[test]
    fn forward_in_blocks_matches_one_product() {
        let mut rng = Rng::new(8);
        for (n, n_in, n_out) in [(100, 784, 100), (64, 300, 37), (9, 1000, 130), (3, 5, 7)] {
            let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
            let (x, w, b) = (values(n * n_in), values(n_out * n_in), values(n_out));
            let (mut y, mut w_t) = (vec![0.0; n * n_out], vec![0.0; n_in * n_out]);
            forward(&x, &w, &b, &mut y, None, &mut w_t, n, n_in, n_out);
            let mut want: Vec<f32> = (0..n).flat_map(|_| b.iter().copied()).collect();
            gemm(n, n_in, n_out, View::rows(&x, n_in), View::t(&w, n_in), 1.0, &mut want);
            assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}x{n_in}x{n_out}");
        }
    }
}
