// Tiled matrix product, appended to a family that says what the matrices are:
//   gemm_dims() -> (M, N, K) for this step,
//   load_a(z, m, k), load_b(z, k, n): the operands (z: the workgroup's third index),
//   store_c(z, m, n, v): where a result goes (with the bias, if any).
// C[m, n] = Σ_k A[m, k]·B[k, n]. Transposed operands are only different load_a/load_b index
// maps, so no transpose pass is ever run.
//
// With SPLITS > 0 (weight gradients, where K runs over the whole batch), workgroup z sums the
// z-th of SPLITS fixed slices of K into `part[z, M, N]`, and `reduce_splits` adds the slices in
// order into `c`. SPLITS = 0 is a plain product, stored by store_c. The summation order depends on the shapes only, never on timing.

override SPLITS: u32 = 0u;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

// 16x16 threads, each computing a 4x4 block of a 64x64 tile of C.
@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let d = gemm_dims();
    let z = wg.z;
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    var k_lo = 0u;
    var k_hi = d.z;
    if SPLITS > 0u {
        let chunk = (d.z + SPLITS - 1u) / max(SPLITS, 1u);
        k_lo = min(z * chunk, d.z);
        k_hi = min(k_lo + chunk, d.z);
    }
    var acc: array<f32, 16>;
    for (var k0 = k_lo; k0 < k_hi; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            let mm = e % TM;
            let kk = e / TM;
            var va = 0.0;
            if m0 + mm < d.x && k0 + kk < k_hi {
                va = load_a(z, m0 + mm, k0 + kk);
            }
            tile_a[e] = va;
            let nn = e % TN;
            var vb = 0.0;
            if n0 + nn < d.y && k0 + kk < k_hi {
                vb = load_b(z, k0 + kk, n0 + nn);
            }
            tile_b[e] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_a[kk * TM + l.y + 16u * i];
                b[i] = tile_b[kk * TN + l.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let m = m0 + l.y + 16u * i;
            let n = n0 + l.x + 16u * j;
            if m < d.x && n < d.y {
                if SPLITS > 0u {
                    part[(z * d.x + m) * d.y + n] = acc[i * 4u + j];
                } else {
                    store_c(z, m, n, acc[i * 4u + j]);
                }
            }
        }
    }
}

// c[i] = Σ_z part[z, i] over the SPLITS slices, in order; i < M·N.
@compute @workgroup_size(256)
fn reduce_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let dims = gemm_dims();
    let len = dims.x * dims.y;
    let i = flat(gid, groups);
    if i >= len {
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < SPLITS; z++) {
        s += part[z * len + i];
    }
    c[i] = s;
}
