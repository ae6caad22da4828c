// MaxPool2D 2x2, stride 2, 'valid': x[n, c, h, w] -> y[n, c, h/2, w/2]; an odd last row or
// column is dropped. The running maximum starts at the window's first element (so negative
// maxima are kept), and a later element wins only when strictly greater, as on the CPU.
//   forward:  y and argmax (the maximum's flat index within its sample).
//   backward: gx[i] = gy[o] where argmax[o] == i for i's window o, else 0; one thread per
//             input element, so no two threads write one place. With FUSE = 1 it also runs
//             the backward of the activation before the pooling (act.wgsl, from that
//             activation's output act_in): act_out[i] = gx[i]·activate'(act_in[i]). With
//             FROM_INPUT = 1 the pooling's input x is bound in argmax's place and each
//             window's maximum is found again from it: the forward never ran, because the
//             convolutions after it read x through the pooling (conv2d.wgsl, POOLED).
// Bindings: src (x or gy), argmax (u32; x's bits with FROM_INPUT), dst (y or gx), act_in,
// act_out.

struct P {
    c: u32,
    h: u32,
    w: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> act_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> act_out: array<f32>;

override FUSE: u32 = 0u;
override FROM_INPUT: u32 = 0u;

// The flat index within its sample of the first element of window (oy, ox) of channel ch.
fn window_at(ch: u32, oy: u32, ox: u32) -> u32 {
    return (ch * p.h + 2u * oy) * p.w + 2u * ox;
}

// The flat index of the window's maximum, given its first element's and its four values.
fn window_argmax(at: u32, v: vec4<f32>) -> u32 {
    let d = window_max(v);
    return at + d / 2u * p.w + d % 2u;
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let per_out = p.c * oh * ow;
    let i = flat(gid, groups);
    if i >= step.n * per_out {
        return;
    }
    let s = i / per_out;
    let o = i % per_out;
    let ch = o / (oh * ow);
    let oy = (o / ow) % oh;
    let ox = o % ow;
    let base = s * p.c * p.h * p.w;
    let at = window_at(ch, oy, ox);
    let v = vec4(src[base + at], src[base + at + 1u], src[base + at + p.w], src[base + at + p.w + 1u]);
    let best = window_argmax(at, v);
    dst[i] = src[base + best];
    argmax[i] = best;
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let per_in = p.c * p.h * p.w;
    let i = flat(gid, groups);
    if i >= step.n * per_in {
        return;
    }
    let s = i / per_in;
    let e = i % per_in;
    let y = (e / p.w) % p.h;
    let x = e % p.w;
    var g = 0.0;
    if y / 2u < oh && x / 2u < ow {
        let ch = e / (p.h * p.w);
        let o = s * p.c * oh * ow + (ch * oh + y / 2u) * ow + x / 2u;
        var best = 0u;
        if FROM_INPUT == 1u {
            let at = window_at(ch, y / 2u, x / 2u);
            let x0 = i - e + at;
            let v = vec4(argmax[x0], argmax[x0 + 1u], argmax[x0 + p.w], argmax[x0 + p.w + 1u]);
            best = window_argmax(at, bitcast<vec4<f32>>(v));
        } else {
            best = argmax[o];
        }
        if best == e {
            g = src[o];
        }
    }
    dst[i] = g;
    if FUSE == 1u {
        act_out[i] = g * derivative(act_in[i]);
    }
}
