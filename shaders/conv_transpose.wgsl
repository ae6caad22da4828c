// Conv2DTranspose, kernel 2, stride 2: x[n, c_in, h, w], w[c_in, c_out, 2, 2],
// y[n, c_out, 2h, 2w], as index maps for matmul.wgsl. P = h·w; each output pixel
// (2i + dy, 2j + dx) takes exactly one input pixel (i, j), so a tap d = (dy, dx) is a column.
//   MODE 0 forward (z = sample): y[z, co, 2i+dy, 2j+dx] = Σ_ci w[ci, (co,d)]·x[z, ci, (i,j)] + b[co]
//                                (M c_out·4, N P, K c_in)
//   MODE 1 backward-data (z = sample): gx[z, ci, (i,j)] = Σ_(co,d) w[ci, (co,d)]·gy[z, co, 2i+dy, 2j+dx]
//                                (M c_in, N P, K c_out·4)
//   MODE 2 backward-weight: gw[ci, (co,d)] = Σ_(s,(i,j)) x[s, ci, (i,j)]·gy[s, co, 2i+dy, 2j+dx]
//                                (M c_in, N c_out·4, K n·P), split
//   MODE 3 backward-bias: gb[co] = Σ_(s,q) gy[s, co, q]    (M c_out, N 1, K n·4P), split, as
//                                row sums (row_sums), or with the weight gradient in one launch
//                                (weight_and_bias)
// Bindings: a = w (0, 1) or x (2); b = x (0) or gy (1, 2, 3); bias = b (0); c = the result.

struct P {
    c_in: u32,
    c_out: u32,
    h: u32,
    w: u32,
    // weight_and_bias: where the bias gradient's slices start in part.
    rows_at: u32,
    // The SGD step's rate, where the weight gradient takes the step (UPDATE in matmul.wgsl).
    lr: f32,
}

@group(0) @binding(1) var<uniform> p: P;

fn gemm_dims() -> vec3<u32> {
    let hw = p.h * p.w;
    switch MODE {
        case 0u: { return vec3(p.c_out * 4u, hw, p.c_in); }
        case 1u: { return vec3(p.c_in, hw, p.c_out * 4u); }
        case 2u: { return vec3(p.c_in, p.c_out * 4u, step.n * hw); }
        default: { return vec3(p.c_out, 1u, bias_terms()); }
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
        default: { return a[((k / hw) * p.c_in + m) * hw + k % hw]; }
    }
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    let hw = p.h * p.w;
    switch MODE {
        case 0u: { return b[(z * p.c_in + k) * hw + n]; }
        case 1u: { return b[out_index(z, k / 4u, k % 4u, n)]; }
        default: { return b[out_index(k / hw, n / 4u, n % 4u, k % hw)]; }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    switch MODE {
        case 0u: { store_forward(out_index(z, m / 4u, m % 4u, n), v + bias[m / 4u]); }
        default: { store_backward((z * p.c_in + m) * p.h * p.w + n, v); }
    }
}

// Terms of each bias gradient element in this step: every output pixel of every sample.
fn bias_terms() -> u32 {
    return step.n * 4u * p.h * p.w;
}

// Channel co's bias gradient summed over slice z of `splits` (256 threads each adding every
// 256th term of gy, then a fixed tree), given to every thread. Call from uniform control flow.
fn bias_row(co: u32, z: u32, splits: u32, li: u32) -> f32 {
    let per = 4u * p.h * p.w;
    let ks = slice_of(z, bias_terms(), splits);
    var s = 0.0;
    for (var k = ks.x + li; k < ks.y; k += 256u) {
        s += b[((k / per) * p.c_out + co) * per + k % per];
    }
    return workgroup_sum(li, vec4(s, 0.0, 0.0, 0.0)).x;
}

// Bias gradients alone (MODE 3): part[z, co] (or gb[co] with one slice), one workgroup per
// (co = y, slice z).
@compute @workgroup_size(256)
fn row_sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let total = bias_row(wg.y, wg.z, SPLITS, li);
    if li == 0u {
        store_slice(wg.z, wg.y, 0u, total);
    }
}

// Slices of the bias gradient summed by weight_and_bias, at part[p.rows_at + z·c_out + co].
override ROW_SPLITS: u32 = 0u;

// The weight gradient (MODE 2, in SPLITS slices) and the bias gradient (in ROW_SPLITS slices)
// in one launch: the first workgroups tile the product, the others each sum one bias slice.
@compute @workgroup_size(16, 16)
fn weight_and_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                   @builtin(local_invocation_id) l: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * groups.x;
    let d = dims();
    let across = (d.y + TILE_N - 1u) / TILE_N;
    let down = (d.x + TILE_M - 1u) / TILE_M;
    let tiles = across * down * SPLITS;
    if g < tiles {
        product(vec3(g % across, g / across % down, g / (across * down)), l, li);
    } else if g - tiles < p.c_out * ROW_SPLITS {
        let co = (g - tiles) % p.c_out;
        let z = (g - tiles) / p.c_out;
        let total = bias_row(co, z, ROW_SPLITS, li);
        if li == 0u {
            part[p.rows_at + z * p.c_out + co] = total;
        }
    }
}
