// Batch normalisation over x[n, c, hw] (Op::BatchNormBackward), from the forward's stats
// (mean; c) then (1/√(σ² + ε); c), with x̂ = (x - μ)/√(σ² + ε) and m = n·hw:
//   sums: one workgroup per channel: gβ = Σgy and gγ = Σgy·x̂, each a fixed tree of 256
//     partial sums.
//   input: gx = γ/√(σ² + ε)·(gy - (gβ + x̂·gγ)/m); one thread per value.
// Bindings: x, gamma, stats, gy, gx, ggamma, gbeta.

struct P {
    c: u32,
    hw: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> gy: array<f32>;
@group(0) @binding(6) var<storage, read_write> gx: array<f32>;
@group(0) @binding(7) var<storage, read_write> ggamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> gbeta: array<f32>;

@compute @workgroup_size(256)
fn sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let ch = wg.x;
    let m = step.n * p.hw;
    let mean = stats[ch];
    let inv = stats[p.c + ch];
    var s = vec4<f32>(0.0);
    for (var i = li; i < m; i += 256u) {
        let at = (i / p.hw * p.c + ch) * p.hw + i % p.hw;
        s += vec4<f32>(gy[at], gy[at] * (x[at] - mean) * inv, 0.0, 0.0);
    }
    let total = workgroup_sum(li, s);
    if li == 0u {
        gbeta[ch] = total.x;
        ggamma[ch] = total.y;
    }
}

@compute @workgroup_size(256)
fn input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.c * p.hw {
        return;
    }
    let ch = i / p.hw % p.c;
    let m = f32(step.n * p.hw);
    let inv = stats[p.c + ch];
    let a = gamma[ch] * inv;
    let xhat = (x[i] - stats[ch]) * inv;
    gx[i] = a * (gy[i] - (gbeta[ch] + xhat * ggamma[ch]) / m);
}
