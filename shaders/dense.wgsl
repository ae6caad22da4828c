// Dense layer, y[n, o] = x[n, i]·w[o, i]ᵀ + b[o], as index maps for matmul.wgsl.
//   MODE 0 forward:        y[s, o]  = Σ_i x[s, i]·w[o, i] + b[o]      (M n,     N n_out, K n_in)
//   MODE 1 backward-data:  gx[s, i] = Σ_o gy[s, o]·w[o, i]            (M n,     N n_in,  K n_out)
//   MODE 2 backward-weight: gw[o, i] = Σ_s gy[s, o]·x[s, i]           (M n_out, N n_in,  K n), split,
//                          with gb[o] = Σ_s gy[s, o] as column n_in (BIAS_COL)
// Bindings: a = x (0) or gy (1, 2); b = w (0, 1) or x (2); bias = b (0) or gb (2); c = the result.

struct P {
    n_in: u32,
    n_out: u32,
    // The SGD step's rate, where the weight gradient takes the step (UPDATE in matmul.wgsl).
    lr: f32,
}

@group(0) @binding(1) var<uniform> p: P;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3(step.n, p.n_out, p.n_in); }
        case 1u: { return vec3(step.n, p.n_in, p.n_out); }
        default: { return vec3(p.n_out, p.n_in, step.n); }
    }
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return a[m * p.n_in + k]; }
        case 1u: { return a[m * p.n_out + k]; }
        default: { return a[k * p.n_out + m]; }
    }
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    switch MODE {
        case 0u: { return b[n * p.n_in + k]; }
        default: { return b[k * p.n_in + n]; }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    switch MODE {
        case 0u: { store_forward(m * p.n_out + n, v + bias[n]); }
        default: { store_backward(m * p.n_in + n, v); }
    }
}
