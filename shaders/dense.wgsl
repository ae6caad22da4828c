// Dense layer, y[n, o] = x[n, i]·w[o, i]ᵀ + b[o], as index maps for matmul.wgsl.
//   MODE 0 forward:        y[s, o]  = Σ_i x[s, i]·w[o, i] + b[o]      (M n,     N n_out, K n_in)
//   MODE 1 backward-data:  gx[s, i] = Σ_o gy[s, o]·w[o, i]            (M n,     N n_in,  K n_out)
//   MODE 2 backward-weight: gw[o, i] = Σ_s gy[s, o]·x[s, i]           (M n_out, N n_in,  K n), split
//   MODE 3 backward-bias:  gb[o]    = Σ_s gy[s, o]                    (M n_out, N 1,     K n), split
// Bindings: a = x (0) or gy (1-3); b = w (0, 1) or x (2); bias = b (0); c = the result.

struct P {
    n_in: u32,
    n_out: u32,
}

@group(0) @binding(1) var<uniform> p: P;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3(step.n, p.n_out, p.n_in); }
        case 1u: { return vec3(step.n, p.n_in, p.n_out); }
        case 2u: { return vec3(p.n_out, p.n_in, step.n); }
        default: { return vec3(p.n_out, 1u, step.n); }
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
        case 1u: { return b[k * p.n_in + n]; }
        case 2u: { return b[k * p.n_in + n]; }
        default: { return 1.0; }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    switch MODE {
        case 0u: { store_forward(m * p.n_out + n, v + bias[n]); }
        default: { c[m * p.n_in + n] = v; }
    }
}
