// Batch normalisation over x[n, c, hw] (Op::BatchNorm), forward.
//   statistics: one workgroup per channel. In training (p.train = 1), the channel's mean and
//     biased variance over the step's m = n·hw values (two passes, each a fixed tree of 256
//     partial sums), written to stats as (mean; c) then (1/√(var + ε); c), and the running mean
//     and variance (unbiased: var·m/(m-1)) moved toward them by p.momentum; channel 0 counts
//     the update. Outside training the running statistics stand in.
//   normalize: y = x·a + (β - μ·a), a = γ/√(σ² + ε); one thread per value. With FUSE = 1 it
//     also stores the activation of each value: act_out[i] = activate(y[i]).
// Bindings: x, gamma, beta, y, stats, running_mean, running_var, count, act_out.

struct P {
    c: u32,
    hw: u32,
    train: u32,
    momentum: f32,
    eps: f32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(9) var<storage, read_write> count: array<f32>;
@group(0) @binding(10) var<storage, read_write> act_out: array<f32>;

override FUSE: u32 = 0u;

// Where the i-th of channel ch's values lies.
fn channel_at(ch: u32, i: u32) -> u32 {
    return (i / p.hw * p.c + ch) * p.hw + i % p.hw;
}

@compute @workgroup_size(256)
fn statistics(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let ch = wg.x;
    let m = step.n * p.hw;
    if p.train == 0u {
        if li == 0u {
            stats[ch] = running_mean[ch];
            stats[p.c + ch] = 1.0 / sqrt(running_var[ch] + p.eps);
        }
        return;
    }
    var s = 0.0;
    for (var i = li; i < m; i += 256u) {
        s += x[channel_at(ch, i)];
    }
    let mean = workgroup_sum(li, vec4<f32>(s, 0.0, 0.0, 0.0)).x / f32(m);
    var q = 0.0;
    for (var i = li; i < m; i += 256u) {
        let d = x[channel_at(ch, i)] - mean;
        q += d * d;
    }
    let variance = workgroup_sum(li, vec4<f32>(q, 0.0, 0.0, 0.0)).x / f32(m);
    if li == 0u {
        stats[ch] = mean;
        stats[p.c + ch] = 1.0 / sqrt(variance + p.eps);
        let unbiased = select(variance, variance * f32(m) / f32(m - 1u), m > 1u);
        running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
        running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * unbiased;
        if ch == 0u {
            count[0] += 1.0;
        }
    }
}

@compute @workgroup_size(256)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.c * p.hw {
        return;
    }
    let ch = i / p.hw % p.c;
    let a = gamma[ch] * stats[p.c + ch];
    let v = fma(x[i], a, beta[ch] - stats[ch] * a);
    y[i] = v;
    if FUSE == 1u {
        act_out[i] = activate(v);
    }
}
