// Where a graph's branches meet, over n samples:
//   part: one half of a concatenation along the channels, or of its backward: each sample's
//         p.per values from src (at p.src_at of a sample's p.src_whole) to dst (at p.dst_at of
//         p.dst_whole); one thread per value copied.
//   sum:  dst = src + other over [n, p.per]: the gradient of a buffer that several layers read.
// Bindings: src, other, dst.

struct P {
    per: u32,
    src_at: u32,
    src_whole: u32,
    dst_at: u32,
    dst_whole: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> other: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn part(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    let s = i / p.per;
    let j = i % p.per;
    dst[s * p.dst_whole + p.dst_at + j] = src[s * p.src_whole + p.src_at + j];
}

@compute @workgroup_size(256)
fn sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    dst[i] = src[i] + other[i];
}
