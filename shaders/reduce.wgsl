// The weight and bias gradients of a step from the slices that the products wrote (matmul.wgsl
// with SPLITS > 1, and row_sums), all in one launch: one workgroup per gradient element, which
// adds that element's slices in order by a fixed tree.
//
// Segment s (one product's slices) covers workgroups seg[s].head.x .. seg[s + 1].head.x:
//   head  = (first workgroup, len: elements of the M·N' result, splits, where its slices start
//            in `part`), slice z of element e at part[start + z·len + e];
//   shape = (N: columns of the weight gradient, 1 if column N' - 1 = N is the bias gradient
//            (BIAS_COL), where the weight gradient starts in its output, where the bias
//            gradient starts in its output);
//   outs  = (output binding of the weight gradient, output binding of the bias gradient).
// Element (m, n) goes to w[m·N + n], or to bias[m] for the bias column.
// count = (segments, the optimiser step taken here: 0 none, 1 plain SGD, 2 Adam; the output
// binding of the gradient set; the rate as f32 bits), adam = (β1, β2, ε): then each gradient in
// that binding also moves its parameter, at the same place in the value set (`values`, and
// Adam's state in `state_m`, `state_v`).
// Bindings: part (the scratch), outputs o0..o2, values, state_m, state_v.

const MAX_SEGMENTS: u32 = 16u;

struct Segment {
    head: vec4<u32>,
    shape: vec4<u32>,
    outs: vec4<u32>,
}

struct P {
    count: vec4<u32>,
    adam: vec4<f32>,
    seg: array<Segment, MAX_SEGMENTS>,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> o0: array<f32>;
@group(0) @binding(4) var<storage, read_write> o1: array<f32>;
@group(0) @binding(5) var<storage, read_write> o2: array<f32>;
@group(0) @binding(6) var<storage, read_write> values: array<f32>;
@group(0) @binding(7) var<storage, read_write> state_m: array<f32>;
@group(0) @binding(8) var<storage, read_write> state_v: array<f32>;

fn put(out: u32, i: u32, g: f32) {
    switch out {
        case 0u: { o0[i] = g; }
        case 1u: { o1[i] = g; }
        default: { o2[i] = g; }
    }
    if p.count.y == 0u || out != p.count.z {
        return;
    }
    let lr = bitcast<f32>(p.count.w);
    if p.count.y == 1u {
        values[i] -= lr * g;
    } else {
        let r = adam_step(values[i], state_m[i], state_v[i], g, lr, p.adam.x, p.adam.y, p.adam.z);
        values[i] = r.x;
        state_m[i] = r.y;
        state_v[i] = r.z;
    }
}

@compute @workgroup_size(256)
fn sum_slices(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = wg.x + wg.y * groups.x;
    var s = 0u;
    while s + 1u < p.count.x && i >= p.seg[s + 1u].head.x {
        s++;
    }
    let head = p.seg[s].head;
    let e = i - head.x;
    if e >= head.y {
        return;
    }
    var sum = 0.0;
    for (var z = li; z < head.z; z += 256u) {
        sum += part[head.w + z * head.y + e];
    }
    let total = workgroup_sum(li, vec4(sum, 0.0, 0.0, 0.0));
    if li == 0u {
        let shape = p.seg[s].shape;
        let cols = shape.x + shape.y;
        let m = e / cols;
        let n = e % cols;
        if shape.y == 1u && n == shape.x {
            put(p.seg[s].outs.y, shape.w + m, total.x);
        } else {
            put(p.seg[s].outs.x, shape.z + m * shape.x + n, total.x);
        }
    }
}
