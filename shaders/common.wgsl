// Prepended to every family: the per-step values, the flat index of a 1-D dispatch, a
// deterministic workgroup sum, Keras Adam on one parameter, and the maximum of a pooling window.

struct Step {
    // Samples in this batch.
    n: u32,
    // Where the batch starts in the index list.
    offset: u32,
    // 1-based count of optimiser updates.
    t: u32,
    // Adam's bias correction √(1-β2ᵗ)/(1-β1ᵗ) at step t, computed on the host as on the CPU.
    adam_correction: f32,
}

@group(0) @binding(0) var<uniform> step: Step;

// 1-D dispatches of 256-wide workgroups are folded into x and y when they exceed 65535 groups.
fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

var<workgroup> tree: array<vec4<f32>, 256>;

// The sum of every thread's `v` over a 256-thread workgroup, by a fixed tree (the same order on
// every run), given to every thread. Call from uniform control flow. It starts with a barrier,
// so that a call after another never writes the tree before every thread has read the earlier
// sum from it.
fn workgroup_sum(li: u32, v: vec4<f32>) -> vec4<f32> {
    workgroupBarrier();
    tree[li] = v;
    for (var half = 128u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if li < half {
            tree[li] += tree[li + half];
        }
    }
    workgroupBarrier();
    return tree[0];
}

// Keras Adam on one parameter w after gradient g: the new (w, m, v), with the step's bias
// correction (optim.wgsl; reduce.wgsl, where the update is taken as the gradients are summed).
fn adam_step(w: f32, m: f32, v: f32, g: f32, lr: f32, beta1: f32, beta2: f32, eps: f32) -> vec3<f32> {
    let alpha = lr * step.adam_correction;
    let m_new = m + (1.0 - beta1) * (g - m);
    let v_new = v + (1.0 - beta2) * (g * g - v);
    return vec3(w - alpha * m_new / (sqrt(v_new) + eps), m_new, v_new);
}

// Which of a 2x2 pooling window's values (top-left, top-right, bottom-left, bottom-right) is
// its maximum: the first, unless a later one is strictly greater, as on the CPU (maxpool.wgsl,
// and conv2d.wgsl reading its input through a pooling).
fn window_max(v: vec4<f32>) -> u32 {
    var best = 0u;
    for (var d = 1u; d < 4u; d++) {
        if v[d] > v[best] {
            best = d;
        }
    }
    return best;
}
