// Building a batch on the device from a split's u8 samples (packed four to a u32 word) by its
// index list, `j = index[offset + s]`: the inputs and the targets of a batch in one launch, as
// two parts, the threads of part 1 after those of part 0 (a part with `per` 0 is unused).
//   values:    out[s, e] = data[j, e]·scale, or (data[j, e] > 0) when binarized; indices
//              j ≥ mirrored > 0 take sample j - mirrored flipped left to right.
//   one-hot:   out[s, c] = (data[j] == c).
// Bindings: index (u32), then per part its data (u8 words) and its output (f32).

struct Part {
    // Elements per sample: c·h·w, or classes for one-hot rows.
    per: u32,
    w: u32,
    scale: f32,
    // 0: values, 1: binarized values, 2: one-hot rows.
    kind: u32,
    mirrored: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

struct P {
    parts: array<Part, 2>,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> data0: array<u32>;
@group(0) @binding(3) var<storage, read_write> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> data1: array<u32>;
@group(0) @binding(6) var<storage, read_write> out1: array<f32>;

fn byte_at(part: u32, i: u32) -> u32 {
    var word: u32;
    if part == 0u {
        word = data0[i / 4u];
    } else {
        word = data1[i / 4u];
    }
    return (word >> (8u * (i % 4u))) & 255u;
}

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    var i = flat(gid, groups);
    var k = 0u;
    if i >= step.n * p.parts[0].per {
        i -= step.n * p.parts[0].per;
        k = 1u;
    }
    let q = p.parts[k];
    if i >= step.n * q.per {
        return;
    }
    let s = i / q.per;
    var e = i % q.per;
    var j = index[step.offset + s];
    var v: f32;
    if q.kind == 2u {
        v = select(0.0, 1.0, byte_at(k, j) == e);
    } else {
        if q.mirrored > 0u && j >= q.mirrored {
            j -= q.mirrored;
            let x = e % q.w;
            e = e - x + (q.w - 1u - x);
        }
        let b = byte_at(k, j * q.per + e);
        v = select(f32(b) * q.scale, select(0.0, 1.0, b > 0u), q.kind == 1u);
    }
    if k == 0u {
        out0[i] = v;
    } else {
        out1[i] = v;
    }
}
