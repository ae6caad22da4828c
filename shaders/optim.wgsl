// Optimiser updates with Keras semantics, and the L2 penalty.
//   sgd:      w -= lr·g
//   momentum: v = m·v - lr·g; w += v
//   adam:     m += (1-β1)(g-m); v += (1-β2)(g²-v); w -= lr·√(1-β2ᵗ)/(1-β1ᵗ)·m/(√v + ε)
//   l2:       loss += λ·Σw²·n (one workgroup, fixed tree); grad += 2λw when has_grad
// Bindings: w, g, m (momentum's v, Adam's m; l2: the metrics), v.

struct P {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    has_grad: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i < p.len {
        w[i] -= p.lr * g[i];
    }
}

// beta1 holds the momentum.
@compute @workgroup_size(256)
fn momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i < p.len {
        m[i] = p.beta1 * m[i] - p.lr * g[i];
        w[i] += m[i];
    }
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= p.len {
        return;
    }
    let r = adam_step(w[i], m[i], v[i], g[i], p.lr, p.beta1, p.beta2, p.eps);
    w[i] = r.x;
    m[i] = r.y;
    v[i] = r.z;
}

// lr holds λ.
@compute @workgroup_size(256)
fn l2(@builtin(local_invocation_index) li: u32) {
    var sq = 0.0;
    for (var i = li; i < p.len; i += 256u) {
        let wi = w[i];
        sq += wi * wi;
        if p.has_grad != 0u {
            g[i] += 2.0 * p.lr * wi;
        }
    }
    let total = workgroup_sum(li, vec4(sq, 0.0, 0.0, 0.0));
    if li == 0u {
        m[0] += p.lr * total.x * f32(step.n);
    }
}
