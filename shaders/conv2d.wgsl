// Conv2D, kernel k, `pad` zeros on each side, stride 1 or 2: x[n, c_in, h, w],
// w[c_out, c_in, k, k], y[n, c_out, oh, ow], as index maps for matmul.wgsl (im2col done on the
// fly by load_b, never stored). P = h·w input pixels, Q = oh·ow output pixels, R = k·k; x[q + r]
// is the input pixel under tap r of output pixel q (0 in the padding).
//   MODE 0 forward (z = sample):  y[z, co, q] = Σ_(ci,r) w[co, ci, r]·x[z, ci, q + r] + b[co]
//                                 (M c_out, N Q, K c_in·R)
//   MODE 1 backward-data (z = sample): gx[z, ci, p] = Σ_(co,r) w[co, ci, flip r]·gy[z, co, q]
//                                 over the q whose tap (flip r) is p (M c_in, N P, K c_out·R)
//   MODE 2 backward-weight: gw[co, (ci,r)] = Σ_(s,q) gy[s, co, q]·x[s, ci, q + r]
//                                 (M c_out, N c_in·R, K n·Q), split, with
//                                 gb[co] = Σ_(s,q) gy[s, co, q] as column c_in·R (BIAS_COL)
// Bindings: a = w (0, 1) or gy (2); b = x (0, 2) or gy (1); bias = b (0) or gb (2); c = the
// result.

struct P {
    c_in: u32,
    c_out: u32,
    h: u32,
    w: u32,
    k: u32,
    // The SGD step's rate, where the weight gradient takes the step (UPDATE in matmul.wgsl).
    lr: f32,
    pad: u32,
    stride: u32,
    oh: u32,
    ow: u32,
}

@group(0) @binding(1) var<uniform> p: P;

fn gemm_dims() -> vec3<u32> {
    let hw = p.h * p.w;
    let q = p.oh * p.ow;
    let r = p.k * p.k;
    switch MODE {
        case 0u: { return vec3(p.c_out, q, p.c_in * r); }
        case 1u: { return vec3(p.c_in, hw, p.c_out * r); }
        default: { return vec3(p.c_out, p.c_in * r, step.n * q); }
    }
}

// 1 where x is read through a 2x2 max pooling of the [n, c_in, 2h, 2w] tensor bound in its
// place (MODE 0 and 2 only), so that the pooling's output is never stored.
override POOLED: u32 = 0u;

// x[z, ch, qy·stride + ky - pad, qx·stride + kx - pad] for output pixel q = (qy, qx), or 0
// outside the image.
fn window(z: u32, ch: u32, r: u32, q: u32) -> f32 {
    let ky = r / p.k;
    let kx = r % p.k;
    let y = i32((q / p.ow) * p.stride + ky) - i32(p.pad);
    let x = i32((q % p.ow) * p.stride + kx) - i32(p.pad);
    if y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w) {
        return 0.0;
    }
    let plane = z * p.c_in + ch;
    if POOLED == 1u {
        let w2 = 2u * p.w;
        let at = (plane * 2u * p.h + 2u * u32(y)) * w2 + 2u * u32(x);
        let v = vec4(b[at], b[at + 1u], b[at + w2], b[at + w2 + 1u]);
        return v[window_max(v)];
    }
    return b[(plane * p.h + u32(y)) * p.w + u32(x)];
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    let r = p.k * p.k;
    let q = p.oh * p.ow;
    switch MODE {
        case 0u: { return a[m * p.c_in * r + k]; }
        // w[co, ci = m, flipped r]
        case 1u: {
            let co = k / r;
            let rr = r - 1u - k % r;
            return a[(co * p.c_in + m) * r + rr];
        }
        default: { return a[((k / q) * p.c_out + m) * q + k % q]; }
    }
}

// gy[z, co, q] for the output pixel q whose tap (k-1-ky', k-1-kx') (r = ky'·k + kx', the
// flipped tap) is input pixel pix, or 0 where no output pixel's is.
fn spread(z: u32, co: u32, r: u32, pix: u32) -> f32 {
    let ty = i32(pix / p.w + p.pad + r / p.k) - i32(p.k - 1u);
    let tx = i32(pix % p.w + p.pad + r % p.k) - i32(p.k - 1u);
    let s = i32(p.stride);
    if ty < 0 || tx < 0 || ty % s != 0 || tx % s != 0 {
        return 0.0;
    }
    let qy = u32(ty / s);
    let qx = u32(tx / s);
    if qy >= p.oh || qx >= p.ow {
        return 0.0;
    }
    return b[((z * p.c_out + co) * p.oh + qy) * p.ow + qx];
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    let r = p.k * p.k;
    let q = p.oh * p.ow;
    switch MODE {
        case 0u: { return window(z, k / r, k % r, n); }
        case 1u: { return spread(z, k / r, k % r, n); }
        default: { return window(k / q, n / r, n % r, k % q); }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    switch MODE {
        case 0u: { store_forward((z * p.c_out + m) * p.oh * p.ow + n, v + bias[m]); }
        default: {
            store_backward((z * p.c_in + m) * p.h * p.w + n, v);
            if UNPOOL == 1u {
                unpool(z * p.c_in + m, n, v);
            }
        }
    }
}

// 1 where the data gradient (MODE 1) goes on back through the 2x2 max pooling before this
// convolution and the activation before that, as maxpool.wgsl's backward would: act_in holds
// the pooling's input [n, c_in, 2h, 2w], and act_out gets, at each input of pixel pix's window,
// g·activate'(x) at the window's maximum and 0·activate'(x) elsewhere.
override UNPOOL: u32 = 0u;

fn unpool(plane: u32, pix: u32, g: f32) {
    let w2 = 2u * p.w;
    let at = (plane * 2u * p.h + 2u * (pix / p.w)) * w2 + 2u * (pix % p.w);
    let best = window_max(vec4(act_in[at], act_in[at + 1u], act_in[at + w2], act_in[at + w2 + 1u]));
    for (var d = 0u; d < 4u; d++) {
        let j = at + d / 2u * w2 + d % 2u;
        act_out[j] = select(0.0, g, d == best) * derivative(act_in[j]);
    }
}
