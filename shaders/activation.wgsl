// Elementwise activations (act.wgsl) and dropout over [n, per], forward and backward; the
// backward passes read the forward output y.
//   dropout: mask = 0 where the counter hash of (seed, step t, element) falls below rate, else
//   1/(1 - rate) (the same hash as the CPU's rng::mask_uniform); y = x·mask.
// Bindings: a (x, y or mask), b (gy), c (y or gx), d (mask).

struct P {
    per: u32,
    rate: f32,
    seed: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> d: array<f32>;


@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    c[i] = activate(a[i]);
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    c[i] = b[i] * derivative(a[i]);
}

// PCG-style integer hash (rng::hash32).
fn hash32(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    let h = hash32(i ^ hash32(step.t ^ hash32(p.seed)));
    let u = f32(h >> 8u) / 16777216.0;
    let m = select(1.0 / (1.0 - p.rate), 0.0, u < p.rate);
    d[i] = m;
    c[i] = a[i] * m;
}

@compute @workgroup_size(256)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    c[i] = b[i] * a[i];
}
