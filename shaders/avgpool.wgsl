// AvgPool2D 2x2, stride 2, 'valid': x[n, c, h, w] -> y[n, c, h/2, w/2]; an odd last row or
// column is dropped. Each mean is ((a + b) + (c + d))·0.25, as on the CPU.
//   forward:  one thread per output element.
//   backward: gx[i] = gy[o]·0.25 for i's window o, 0 in a dropped row or column; one thread
//             per input element, so no two threads write one place.
// With WHOLE = 1 the windows are summed and spread unscaled: nearest 2x upsampling to [c, h, w]
// is `backward`, and its backward `forward`.
// Bindings: src (x or gy), dst (y or gx).

struct P {
    c: u32,
    h: u32,
    w: u32,
}

override WHOLE: u32 = 0u;

fn scale() -> f32 {
    return select(0.25, 1.0, WHOLE == 1u);
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let i = flat(gid, groups);
    if i >= step.n * p.c * oh * ow {
        return;
    }
    let plane = i / (oh * ow);
    let at = plane * p.h * p.w + (i / ow % oh) * 2u * p.w + (i % ow) * 2u;
    dst[i] = ((src[at] + src[at + 1u]) + (src[at + p.w] + src[at + p.w + 1u])) * scale();
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let i = flat(gid, groups);
    if i >= step.n * p.c * p.h * p.w {
        return;
    }
    let plane = i / (p.h * p.w);
    let oy = i / p.w % p.h / 2u;
    let ox = i % p.w / 2u;
    var g = 0.0;
    if oy < oh && ox < ow {
        g = src[(plane * oh + oy) * ow + ox] * scale();
    }
    dst[i] = g;
}
