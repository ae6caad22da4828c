// Prepended to every family: the per-step values and the flat index of a 1-D dispatch.

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
