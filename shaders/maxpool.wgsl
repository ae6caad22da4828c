// MaxPool2D 2x2, stride 2, 'valid': x[n, c, h, w] -> y[n, c, h/2, w/2]; an odd last row or
// column is dropped. The running maximum starts at the window's first element (so negative
// maxima are kept), and a later element wins only when strictly greater, as on the CPU.
//   forward:  y and argmax (the maximum's flat index within its sample).
//   backward: gx[i] = gy[o] where argmax[o] == i for i's window o, else 0; one thread per
//             input element, so no two threads write one place. With FUSE = 1 it also runs
//             the backward of the activation before the pooling (act.wgsl, from that
//             activation's output act_in): act_out[i] = gx[i]·activate'(act_in[i]).
// Bindings: src (x or gy), argmax (u32), dst (y or gx), act_in, act_out.

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
    var best = (ch * p.h + 2u * oy) * p.w + 2u * ox;
    for (var d = 1u; d < 4u; d++) {
        let e = (ch * p.h + 2u * oy + d / 2u) * p.w + 2u * ox + d % 2u;
        if src[base + e] > src[base + best] {
            best = e;
        }
    }
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
        let o = s * p.c * oh * ow + ((e / (p.h * p.w)) * oh + y / 2u) * ow + x / 2u;
        if argmax[o] == e {
            g = src[o];
        }
    }
    dst[i] = g;
    if FUSE == 1u {
        act_out[i] = g * derivative(act_in[i]);
    }
}
