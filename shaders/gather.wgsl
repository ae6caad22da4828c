// Building a batch on the device from a split's u8 samples (packed four to a u32 word) by its
// index list: `j = index[offset + s]`.
//   gather:  out[s, e] = data[j, e]·scale, or (data[j, e] > 0) when binarize; indices
//            j ≥ mirrored > 0 take sample j - mirrored flipped left to right.
//   one_hot: out[s, c] = (labels[j] == c).
// Bindings: data (u8 words), index (u32), out (f32).

struct P {
    // Elements per sample: c·h·w (gather) or classes (one_hot).
    per: u32,
    w: u32,
    scale: f32,
    binarize: u32,
    mirrored: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn byte_at(i: u32) -> u32 {
    return (data[i / 4u] >> (8u * (i % 4u))) & 255u;
}

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    let s = i / p.per;
    var e = i % p.per;
    var j = index[step.offset + s];
    if p.mirrored > 0u && j >= p.mirrored {
        j -= p.mirrored;
        let x = e % p.w;
        e = e - x + (p.w - 1u - x);
    }
    let v = byte_at(j * p.per + e);
    if p.binarize != 0u {
        out[i] = select(0.0, 1.0, v > 0u);
    } else {
        out[i] = f32(v) * p.scale;
    }
}

@compute @workgroup_size(256)
fn one_hot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= step.n * p.per {
        return;
    }
    let label = byte_at(index[step.offset + i / p.per]);
    out[i] = select(0.0, 1.0, label == i % p.per);
}
