// Conv2DTranspose, kernel 2, stride 2: x[n, c_in, h, w], w[c_in, c_out, 2, 2],
// y[n, c_out, 2h, 2w], as index maps for matmul.wgsl. P = h·w; each output pixel
// (2i + dy, 2j + dx) takes exactly one input pixel (i, j), so a tap d = (dy, dx) is a column.
//   MODE 0 forward (z = sample): y[z, co, 2i+dy, 2j+dx] = Σ_ci w[ci, (co,d)]·x[z, ci, (i,j)] + b[co]
//                                (M c_out·4, N P, K c_in)
//   MODE 1 backward-data (z = sample): gx[z, ci, (i,j)] = Σ_(co,d) w[ci, (co,d)]·gy[z, co, 2i+dy, 2j+dx]
//                                (M c_in, N P, K c_out·4)
//   MODE 2 backward-weight: gw[ci, (co,d)] = Σ_(s,(i,j)) x[s, ci, (i,j)]·gy[s, co, 2i+dy, 2j+dx]
//                                (M c_in, N c_out·4, K n·P), split
//   MODE 3 backward-bias: gb[co] = Σ_(s,q) gy[s, co, q]    (M c_out, N 1, K n·4P), split
// Bindings: a = w (0, 1), x (2) or gy (3); b = x (0) or gy (1, 2); bias = b (0); c = the result.

struct P {
    c_in: u32,
    c_out: u32,
    h: u32,
    w: u32,
}

@group(0) @binding(1) var<uniform> p: P;

fn gemm_dims() -> vec3<u32> {
    let hw = p.h * p.w;
    switch MODE {
        case 0u: { return vec3(p.c_out * 4u, hw, p.c_in); }
        case 1u: { return vec3(p.c_in, hw, p.c_out * 4u); }
        case 2u: { return vec3(p.c_in, p.c_out * 4u, step.n * hw); }
        default: { return vec3(p.c_out, 1u, step.n * hw * 4u); }
    }
}

// The flat index in an output-sized tensor of sample s, channel co, tap d, input pixel pix.
fn out_index(s: u32, co: u32, d: u32, pix: u32) -> u32 {
    let y = 2u * (pix / p.w) + d / 2u;
    let x = 2u * (pix % p.w) + d % 2u;
    return ((s * p.c_out + co) * 2u * p.h + y) * 2u * p.w + x;
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    let hw = p.h * p.w;
    switch MODE {
        case 0u: { return a[k * p.c_out * 4u + m]; }
        case 1u: { return a[m * p.c_out * 4u + k]; }
        case 2u: { return a[((k / hw) * p.c_in + m) * hw + k % hw]; }
        default: { return a[((k / (4u * hw)) * p.c_out + m) * 4u * hw + k % (4u * hw)]; }
    }
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    let hw = p.h * p.w;
    switch MODE {
        case 0u: { return b[(z * p.c_in + k) * hw + n]; }
        case 1u: { return b[out_index(z, k / 4u, k % 4u, n)]; }
        case 2u: { return b[out_index(k / hw, n / 4u, n % 4u, k % hw)]; }
        default: { return 1.0; }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    switch MODE {
        case 0u: { store_forward(out_index(z, m / 4u, m % 4u, n), v + bias[m / 4u]); }
        default: { store_backward((z * p.c_in + m) * p.h * p.w + n, v); }
    }
}
