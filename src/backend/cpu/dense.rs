//! Dense layer: `y[n, o] = x[n, i]·w[o, i]ᵀ + b[o]` and its gradients.

use super::gemm::{gemm_par, in_place, transpose, View};
use super::grown;

/// `w_t` is scratch for the transposed weights `[n_in, n_out]`, grown when they are needed.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    w_t: &mut Vec<f32>,
    n: usize,
    n_in: usize,
    n_out: usize,
) {
    for row in y[..n * n_out].chunks_mut(n_out) {
        row.copy_from_slice(b);
    }
    // The in-place product wants the weights row-major along the outputs; matrixmultiply takes
    // them as they are.
    let w_op = if in_place() {
        let w_t = grown(w_t, n_in * n_out);
        transpose(w, n_out, n_in, w_t);
        View::rows(w_t, n_out)
    } else {
        View::t(w, n_in)
    };
    gemm_par(n, n_in, n_out, View::rows(x, n_in), w_op, 1.0, y);
}

/// `gx = gy·w`, `gw = gyᵀ·x`, `gb = Σ_n gy`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) {
    if let Some(gx) = gx {
        gemm_par(n, n_out, n_in, View::rows(gy, n_out), View::rows(w, n_in), 0.0, gx);
    }
    gemm_par(n_out, n, n_in, View::t(gy, n_out), View::rows(x, n_in), 0.0, gw);
    super::sum_rows(gy, n, n_out, 1, gb);
}
