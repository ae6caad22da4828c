// Tiled matrix product, appended to a family that says what the matrices are:
//   gemm_dims() -> (M, N, K) for this step,
//   load_a(z, m, k), load_b(z, k, n): the operands (z: the workgroup's third index),
//   store_c(z, m, n, v): where a result goes (with the bias, if any), through store_forward or
//   store_backward, which also do the activation that follows the product (FUSE).
// C[m, n] = Σ_k A[m, k]·B[k, n]. Transposed operands are only different load_a/load_b index
// maps, so no transpose pass is ever run.
//
// With SPLITS > 0 (weight gradients, where K runs over the whole batch), workgroup z sums the
// z-th of SPLITS fixed slices of K into `part[z, M, N]`, and `reduce.wgsl` adds the slices in
// order into `c` (with one slice the sum goes straight to `c`; with BIAS_COL the bias gradient
// comes as one more column, stored into `bias`). SPLITS = 0 is a plain product,
// stored by store_c. The summation order depends on the shapes only, never on timing.

// The family's variant (forward, backward-data, backward-weight, and for the transposed
// convolution backward-bias) and the operands every family binds: a, b, the bias, the result c,
// the weight-gradient slices, and the activation's output and input.
override MODE: u32 = 0u;

@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> act_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> act_in: array<f32>;

// The activation kernel that this product does in its last stage, in place of a launch after it:
// 1, forward: act_out = activate(result); 2, backward-data: act_out = result·activate'(act_in),
// where act_in is the activation's output.
override FUSE: u32 = 0u;

fn store_forward(i: u32, y: f32) {
    c[i] = y;
    if FUSE == 1u {
        act_out[i] = activate(y);
    }
}

fn store_backward(i: u32, g: f32) {
    c[i] = g;
    if FUSE == 2u {
        act_out[i] = g * derivative(act_in[i]);
    }
}

// 1 for weight gradients (MODE 2) whose bias gradient comes with them: B gets a column N of
// ones, so column N of the product is Σ_k A[m, k], stored into `bias`.
override BIAS_COL: u32 = 0u;

// (M, N, K) with the bias column counted.
fn dims() -> vec3<u32> {
    let d = gemm_dims();
    return vec3(d.x, d.y + BIAS_COL, d.z);
}

// 1 for weight gradients (MODE 2, one slice) whose optimiser step is plain SGD with rate p.lr:
// the product also takes the step, with the weights in act_out and the biases in act_in.
override UPDATE: u32 = 0u;

// A batch sum's element (m, n) of the weight gradient, or of the bias gradient in column N.
fn store_sum(m: u32, n: u32, v: f32) {
    let d = gemm_dims();
    if BIAS_COL == 1u && n == d.y {
        bias[m] = v;
        if UPDATE == 1u {
            act_in[m] -= p.lr * v;
        }
    } else {
        c[m * d.y + n] = v;
        if UPDATE == 1u {
            act_out[m * d.y + n] -= p.lr * v;
        }
    }
}

override SPLITS: u32 = 0u;
// Tile rows and columns: 64 (each of the 16x16 threads computes 4 adjacent ones) or 16 (one
// each), chosen per op so that small outputs do not fill 64-wide tiles with padding.
override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
// 1 where consecutive k of A (of B) are adjacent in memory, 0 where consecutive m (n) are: the
// tile loads walk the adjacent index first, so a warp reads contiguous memory.
override A_K_FAST: u32 = 0u;
override B_K_FAST: u32 = 0u;

// Row strides of the tiles, four more than the tile side: rows stay whole vec4s, and the 8 k by
// 4 rows that a warp stores when k is adjacent in memory fall in 32 different memory banks.
override SA: u32 = TILE_M + 4u;
override SB: u32 = TILE_N + 4u;
// Floats of workgroup memory for both tiles.
const TILES: u32 = 4352u;
// Tile depth: as many k as the tiles hold, in steps of 8 (32 for 64x64 tiles, 48 for 16x64,
// 104 for 16x16). Narrow tiles go to small products, whose few workgroups each walk all of K:
// deeper steps keep more loads in flight per barrier. Each element still sums over k in order,
// so the depth never changes a result.
override TK: u32 = TILES / (SA + SB) / 8u * 8u;

// A's tile [TK][SA], then B's [TK][SB], as vec4s: a thread reads its 4 adjacent rows (columns)
// of a 64-wide tile in one load.
var<workgroup> tiles: array<vec4<f32>, TILES / 4u>;

// The z-th of `splits` slices of [0, k) (all of it when splits is 0).
fn slice_of(z: u32, k: u32, splits: u32) -> vec2<u32> {
    if splits == 0u {
        return vec2(0u, k);
    }
    let chunk = (k + splits - 1u) / splits;
    let lo = min(z * chunk, k);
    return vec2(lo, min(lo + chunk, k));
}

fn k_slice(z: u32, k: u32) -> vec2<u32> {
    return slice_of(z, k, SPLITS);
}

// Where slice z's sum of element (m, n) goes: the result itself when there is one slice, else
// its part.
fn store_slice(z: u32, m: u32, n: u32, v: f32) {
    if SPLITS == 1u {
        store_sum(m, n, v);
    } else {
        let d = dims();
        part[(z * d.x + m) * d.y + n] = v;
    }
}

// Element `f` of a TK x side tile, as (row or column within the tile, k within the tile). Where
// k is adjacent in memory, each run of 32 elements is 4 rows of 8 adjacent k: whole 32-byte
// sectors to read, and 32 banks to store into.
fn tile_coords(f: u32, side: u32, k_fast: bool) -> vec2<u32> {
    if k_fast {
        let run = f / 32u;
        let w = f % 32u;
        let groups = side / 4u;
        return vec2(run % groups * 4u + w / 8u, run / groups * 8u + w % 8u);
    }
    return vec2(f % side, f / side);
}

// The values of row kk of the tile at float `base` (row stride `stride`) that thread t works
// on: its 4 adjacent ones in a 64-wide tile, or its one in .x.
fn tile_row(base: u32, stride: u32, side: u32, kk: u32, t: u32) -> vec4<f32> {
    let at = base + kk * stride;
    if side == 64u {
        return tiles[at / 4u + t];
    }
    return vec4(tiles[at / 4u + t / 4u][t % 4u], 0.0, 0.0, 0.0);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    product(wg, l, li);
}

// The tile (wg.x, wg.y) of slice wg.z, by the workgroup's thread l (li flat): rows
// m0 + rm·l.y + i and columns n0 + rn·l.x + j.
fn product(wg: vec3<u32>, l: vec3<u32>, li: u32) {
    let d = dims();
    let z = wg.z;
    let m0 = wg.y * TILE_M;
    let n0 = wg.x * TILE_N;
    let ks = k_slice(z, d.z);
    let rm = TILE_M / 16u;
    let rn = TILE_N / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = ks.x; k0 < ks.y; k0 += TK) {
        // Both tiles in one pass: A's TK·TILE_M elements, then B's TK·TILE_N.
        for (var e = li; e < TK * (TILE_M + TILE_N); e += 256u) {
            let is_b = e >= TK * TILE_M;
            let side = select(TILE_M, TILE_N, is_b);
            let rk = tile_coords(select(e, e - TK * TILE_M, is_b), side, select(A_K_FAST, B_K_FAST, is_b) == 1u);
            let r = select(m0, n0, is_b) + rk.x;
            let k = k0 + rk.y;
            var v = 0.0;
            if k < ks.y && r < select(d.x, d.y, is_b) {
                if is_b && BIAS_COL == 1u && r == d.y - 1u {
                    v = 1.0;
                } else if is_b {
                    v = load_b(z, k, r);
                } else {
                    v = load_a(z, r, k);
                }
            }
            let at = select(0u, TK * SA, is_b) + rk.y * select(SA, SB, is_b) + rk.x;
            tiles[at / 4u][at % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = tile_row(0u, SA, TILE_M, kk, l.y);
            let b = tile_row(TK * SA, SB, TILE_N, kk, l.x);
            for (var i = 0u; i < rm; i++) {
                acc[i] += a[i] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < rm; i++) {
        for (var j = 0u; j < rn; j++) {
            let m = m0 + rm * l.y + i;
            let n = n0 + rn * l.x + j;
            if m < d.x && n < d.y {
                if SPLITS > 0u {
                    store_slice(z, m, n, acc[i][j]);
                } else {
                    store_c(z, m, n, acc[i][j]);
                }
            }
        }
    }
}
