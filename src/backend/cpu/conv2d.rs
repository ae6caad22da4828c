//! Conv2D, stride 1, 'same' zero padding (other paddings and strides: `conv2d_general.rs`), as
//! products over a cache-sized block of image rows of one sample at a time: the forward and the
//! weight gradient read the kernel's taps in place from a zero-bordered copy of the block (or
//! from its im2col matrix), and the input gradient is the forward of the output gradient through
//! the kernel turned half a turn.
//! Shapes: `x[n, c_in, h, w]`, `w[c_out, c_in, k, k]`, `y[n, c_out, h, w]`.

use super::gemm::{
    copy_rows, gemm, gemm_taps, gemm_to, in_place, row_stride, transpose, transpose_rows, Rows, Shared, View,
};
use super::{
    activation, conv2d_general, cut, for_units, maxpool, weight_grad, Activate, BiasGrad, ForwardIo, Pooled, CHUNKS,
};
use crate::graph::ConvGeom;
use crate::model::Act;
use std::ops::Range;

/// For kernel column `kx` (padding `p`, width `w`): the output columns `ox` whose input column
/// `ox + kx - p` lies inside the image.
fn valid_cols(kx: usize, p: usize, w: usize) -> Range<usize> {
    let lo = p.saturating_sub(kx).min(w);
    lo..(w + p).saturating_sub(kx).min(w).max(lo)
}

/// For kernel tap (`ky`, `kx`) and the output pixels `i` of image rows `rows` (numbered from
/// the block's start): the input pixel is `src + i - inside.start`, inside the image for `i` in
/// `inside`; `None` if no pixel is. Within `inside`, pixels whose column crossed the image's left
/// or right edge (outside [`valid_cols`] in their row) still need zeroing.
fn tap(g: &ConvGeom, rows: &Range<usize>, ky: usize, kx: usize) -> Option<(usize, Range<usize>)> {
    let (hw, px, p) = ((g.h * g.w) as isize, (rows.len() * g.w) as isize, g.k / 2);
    let start = ((rows.start + ky) * g.w + kx) as isize - (p * g.w + p) as isize;
    let (lo, hi) = ((-start).clamp(0, px), (hw - start).clamp(0, px));
    (lo < hi).then(|| ((start + lo) as usize, lo as usize..hi as usize))
}

/// Zeroes the entries of each `w`-wide row of `out` outside `cols`, a column at a time (a
/// `k/2`-float fill per row would cost a call each).
fn zero_edges(out: &mut [f32], w: usize, cols: &Range<usize>) {
    for j in (0..cols.start).chain(cols.end..w) {
        out[j..].iter_mut().step_by(w).for_each(|v| *v = 0.0);
    }
}

/// Rows `taps` (numbered from `taps.start`) and image rows `rows` of the im2col matrix:
/// `col[(c·k + ky)·k + kx, (y - rows.start)·w + x] = x[c, y + ky - k/2, x + kx - k/2]`, zero
/// outside; rows of `col` `stride` apart. Each row is one shifted copy of an input plane with its
/// edges zeroed.
fn im2col(x: &[f32], g: &ConvGeom, rows: Range<usize>, taps: Range<usize>, col: &mut [f32], stride: usize) {
    let (hw, k, px) = (g.h * g.w, g.k, rows.len() * g.w);
    for (r, t) in taps.enumerate() {
        let (plane, ky, kx) = (&x[t / (k * k) * hw..][..hw], t / k % k, t % k);
        let out = &mut col[r * stride..][..px];
        let Some((src, inside)) = tap(g, &rows, ky, kx) else {
            out.fill(0.0);
            continue;
        };
        out[..inside.start].fill(0.0);
        out[inside.end..].fill(0.0);
        out[inside.clone()].copy_from_slice(&plane[src..][..inside.len()]);
        zero_edges(out, g.w, &valid_cols(kx, k / 2, g.w));
    }
}

/// Image rows per block of the im2col matrix: the whole image when its matrix is small, else
/// as many rows as keep a block within 64 Ki floats (so that it stays in the L2 cache between
/// being written and being read), or the fewest past that, with a pixel count that is a
/// multiple of 256, so that the weight gradient's 256-term sums start where the whole-image
/// product starts them.
fn block_rows(g: &ConvGeom) -> usize {
    let ckk = g.c_in * g.k * g.k;
    if ckk * g.h * g.w <= 1 << 16 {
        return g.h;
    }
    let aligned = |r: &usize| (r * g.w).is_multiple_of(256);
    let mut rows = (1..g.h).filter(aligned);
    rows.clone().rev().find(|r| r * g.w * ckk <= 1 << 16).or_else(|| rows.next()).unwrap_or(g.h)
}

/// Whether max pooling can run inside [`forward`], on each block of rows as it is done: when
/// every block starts at an even row.
pub fn pools_in_blocks(g: &ConvGeom) -> bool {
    let br = block_rows(g);
    br == g.h || br.is_multiple_of(2)
}

/// Floats of one im2col block (rows [`row_stride`] apart); 1 (unused) for 1x1 kernels, which
/// read `x` itself.
pub fn block_len(g: &ConvGeom) -> usize {
    if g.k == 1 {
        1
    } else {
        g.c_in * g.k * g.k * row_stride(block_rows(g) * g.w)
    }
}

/// The width `wp` of a bordered row ([`pad`]): the image's `w` floats, then `p = k/2` zeros that
/// are both this row's right border and the next row's left one (a tap `p` columns left of
/// the image's first reads the row before's last `p` floats). At least `k`, as the walk over
/// the taps needs.
fn padded_width(g: &ConvGeom) -> usize {
    (g.w + g.k / 2).max(g.k)
}

/// Floats of `planes` bands of `rows` image rows of `g`'s size with a zero border of `k/2`
/// ([`pad`]).
fn padded_len(g: &ConvGeom, planes: usize, rows: usize) -> usize {
    let p = g.k / 2;
    planes * (rows + 2 * p) * padded_width(g) + 2 * p
}

/// `dst` = image rows `rows` of the `planes` planes `h x w` of `src` with a zero border `p =
/// k/2` wide (the image's own rows where it has them, zeros past its edges): `p` zeros, then per
/// plane a band of `rows.len() + 2p` rows [`padded_width`] apart, then `p` zeros (where the last
/// band's last taps read past its end). A tap's input for output pixel `(y, x)` of the block,
/// numbered `y·wp + x`, is then the float at `(ky·wp + kx)` plus that number.
fn pad(src: &[f32], g: &ConvGeom, planes: usize, rows: Range<usize>, dst: &mut [f32]) {
    let (p, wp, hw) = (g.k / 2, padded_width(g), g.h * g.w);
    let (band, first) = ((rows.len() + 2 * p) * wp, rows.start.saturating_sub(p));
    let last = (rows.end + p).min(g.h);
    dst[..padded_len(g, planes, rows.len())].fill(0.0);
    for c in 0..planes {
        let at = c * band + (first + p - rows.start) * wp + p;
        copy_rows(&src[c * hw + first * g.w..], g.w, &mut dst[at..], wp, last - first, g.w);
    }
}

/// Whether the products read the kernel's taps in place from bordered copies: a bordered copy of
/// the input (and, for the forward, a copy of the output; for the weight gradient, a bordered
/// copy of the output gradient) instead of im2col's k² copies of the input, a gain when those are
/// fewer floats. (The weight gradient asks more: see [`backward`].)
fn reads_taps(g: &ConvGeom) -> bool {
    g.k > 1 && in_place() && g.k * g.k * g.c_in > g.c_in + g.c_out
}

/// Floats of one weight-gradient term: a bordered input block, the output gradient's block
/// bordered and transposed ([`reads_taps`]), or an im2col block and the output gradient's block
/// transposed (for 1x1 kernels, the whole transposed output gradient).
fn wgrad_unit_len(g: &ConvGeom, taps: bool) -> usize {
    let br = block_rows(g);
    if g.k == 1 {
        g.c_out * g.h * g.w
    } else if taps {
        padded_len(g, g.c_in, br) + 2 * g.c_out * br * padded_width(g)
    } else {
        block_len(g) + br * g.w * g.c_out
    }
}

/// The convolution whose forward is `g`'s input gradient: channels swapped.
fn turned(g: &ConvGeom) -> ConvGeom {
    ConvGeom { c_in: g.c_out, c_out: g.c_in, ..*g }
}

/// Scratch floats of [`forward`]: per chunk of work, one im2col block, or a block's
/// zero-bordered input and output.
fn forward_scratch(g: &ConvGeom) -> usize {
    let br = block_rows(g);
    let taps = CHUNKS * (padded_len(g, g.c_in, br) + g.c_out * br * padded_width(g));
    (CHUNKS * block_len(g)).max(taps)
}

/// Floats of the turned kernel and its zero bias, ahead of the input gradient's scratch.
fn turned_len(g: &ConvGeom) -> usize {
    g.c_out * g.c_in * g.k * g.k + g.c_in
}

/// Scratch floats of the forward and of the input gradient (the turned kernel, its zero bias,
/// and the [`turned`] forward's). (The weight gradient's blocks live beside its partials.)
pub fn scratch_len(g: &ConvGeom) -> usize {
    if !g.is_same() {
        return conv2d_general::scratch_len(g);
    }
    forward_scratch(g).max(turned_len(g) + forward_scratch(&turned(g)))
}

/// `y = conv(x, w) + b`, in units of one block of image rows of one sample (and of a group of
/// its output channels where a batch has few blocks); with an activation, each block is
/// activated while in cache, and with `pool` (output and argmax of a max pooling of the result,
/// [`pools_in_blocks`]), pooled, then the pooled maxima activated when `pool` names an activation
/// (given instead of the op's). `scratch` holds [`scratch_len`] floats.
pub fn forward(io: ForwardIo, pool: Option<Pooled>, scratch: &mut [f32], n: usize, g: &ConvGeom) {
    if !g.is_same() {
        assert!(io.act.is_none() && pool.is_none(), "only 'same' convolutions take epilogues");
        return conv2d_general::forward(io.x, io.w, io.b, io.y, scratch, n, g);
    }
    forward_in((io, None), pool, scratch, n, g, reads_taps(g))
}

/// [`forward`] through products that read the kernel's taps in place from zero-bordered copies of
/// the input (`taps`), or through im2col blocks. The same sums in the same order either way.
/// With `grad = Some((f, y))` the output is a gradient, each block multiplied in place by `f'` of
/// the forward output `y` while in cache.
fn forward_in(
    (io, grad): (ForwardIo, Option<(Act, &[f32])>),
    pool: Option<Pooled>,
    scratch: &mut [f32],
    n: usize,
    g: &ConvGeom,
    taps: bool,
) {
    let ForwardIo { x, w, b, y, act } = io;
    let (hw, ckk, br) = (g.h * g.w, g.c_in * g.k * g.k, block_rows(g));
    let (xl, yl, blocks) = (g.c_in * hw, g.c_out * hw, g.h.div_ceil(br));
    let (ow, pl) = (g.w / 2, g.h / 2 * (g.w / 2));
    let (p, wp) = (g.k / 2, padded_width(g));
    assert!(pool.is_none() || pools_in_blocks(g), "pooling blocks must start at even rows");
    let out = Shared::new(&mut y[..n * yl]);
    let act = act.map(|(f, a)| Activate::new((f, a.map(|a| &mut a[..n * yl]))));
    let pool = pool.map(|(py, pa, on_maxima)| {
        (Shared::new(&mut py[..n * g.c_out * pl]), Shared::new(&mut pa[..n * g.c_out * pl]), on_maxima)
    });
    let unit_len = if taps { padded_len(g, g.c_in, br) + g.c_out * br * wp } else { block_len(g) };
    // Groups of output channels, more than one when the batch's blocks are too few to keep the
    // threads busy (the U-Net's 16x16 layers: 5 samples of one block).
    let (per, parts) = cut(g.c_out, n * blocks);
    for_units(n * blocks * parts, scratch, unit_len, |u, buf| {
        let (s, y0, o0) = (u / parts / blocks, u / parts % blocks * br, u % parts * per);
        let (rows, chans) = (y0..(y0 + br).min(g.h), o0..(o0 + per).min(g.c_out));
        let (xs, px, at) = (&x[s * xl..][..xl], rows.len() * g.w, s * yl + y0 * g.w);
        let (w, b) = (&w[o0 * ckk..][..chans.len() * ckk], &b[chans.clone()]);
        // SAFETY: unit `u` alone touches these columns of channels `chans` of sample `s`'s rows
        // of `y` and `act`.
        unsafe {
            if taps {
                // The block's input rows with their border, then output rows `wp` wide (the
                // columns past `w` unused), then the first `w` of each.
                let (x_pad, buf) = buf.split_at_mut(padded_len(g, g.c_in, rows.len()));
                pad(xs, g, g.c_in, rows.clone(), x_pad);
                let q = rows.len() * wp;
                let buf = &mut buf[..chans.len() * q];
                let taps_at = Rows { k: g.k, wp, plane: (rows.len() + 2 * p) * wp };
                gemm_taps(chans.len(), ckk, q, View::rows(w, ckk), x_pad, taps_at, b, buf);
                for (o, plane) in chans.clone().zip(buf.chunks_exact(q)) {
                    copy_rows(plane, wp, out.slice(at + o * hw, px), g.w, rows.len(), g.w);
                }
            } else {
                let b_op = if g.k == 1 {
                    View::rows(&xs[y0 * g.w..], hw)
                } else {
                    let st = row_stride(br * g.w);
                    im2col(xs, g, rows.clone(), 0..ckk, buf, st);
                    View::rows(buf, st)
                };
                out.gemm_bias(chans.len(), ckk, px, View::rows(w, ckk), b_op, b, at + o0 * hw, hw);
            }
            if let Some(act) = &act {
                for at in chans.clone().map(|o| at + o * hw) {
                    act.apply(&out, at, px);
                }
            }
            if let Some((f, ys)) = grad {
                for at in chans.clone().map(|o| at + o * hw) {
                    activation::apply_grad(f, &ys[at..][..px], out.slice(at, px));
                }
            }
            if let Some((py, pa, on_maxima)) = &pool {
                let (pooled, orows) = (act.as_ref().map_or(&out, |a| a.result(&out)), rows.len() / 2 * ow);
                let p_at = |o: usize| s * g.c_out * pl + o * pl + y0 / 2 * ow;
                for o in chans.clone() {
                    let (ys, first) = (pooled.slice(at + o * hw, px), o * hw + y0 * g.w);
                    maxpool::pool_rows(ys, g.w, first, py.slice(p_at(o), orows), pa.slice(p_at(o), orows));
                }
                if let Some(f) = *on_maxima {
                    // A block of whole planes: the unit's pooled planes in one run.
                    let (runs, len) = if orows == pl { (o0..o0 + 1, chans.len() * pl) } else { (chans, orows) };
                    runs.for_each(|o| activation::apply(f, py.slice(p_at(o), len)));
                }
            }
        }
    });
}

/// `gw`, `gb` and, when asked, `gx`, then in place `gx·f'(y)` for a fused activation
/// `act = (f, y)`, unit by unit. `scratch` holds [`scratch_len`] floats; `partial` is the
/// weight-gradient partials' space.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    act: Option<(Act, &[f32])>,
    gw: &mut [f32],
    gb: &mut [f32],
    scratch: &mut [f32],
    partial: &mut Vec<f32>,
    n: usize,
    g: &ConvGeom,
) {
    if !g.is_same() {
        assert!(act.is_none(), "only 'same' convolutions take epilogues");
        return conv2d_general::backward(x, w, gy, gx, gw, gb, scratch, partial, n, g);
    }
    let kk = g.k * g.k;
    // In place, each product's rows are the channels under one tap: too few to fill the kernel's
    // tiles when a layer has few input channels or when a small batch cuts them into parts.
    let parts = cut(g.c_in * kk, n).1;
    weight_grad_in(x, gy, (gw, gb), partial, n, g, reads_taps(g) && g.c_in >= 8 && parts == 1);
    let Some(gx) = gx else { return };
    // `gx[c, iy, ix] = Σ_o Σ_ky Σ_kx w[o, c, ky, kx]·gy[o, iy + p - ky, ix + p - kx]`: the
    // convolution of `gy` with `w_t[c, o, ky, kx] = w[o, c, k-1-ky, k-1-kx]`, zero bias.
    let (w_t, scratch) = scratch.split_at_mut(turned_len(g));
    let (w_t, zeros) = w_t.split_at_mut(w.len());
    zeros.fill(0.0);
    for (oc, taps) in w.chunks_exact(kk).enumerate() {
        let (o, c) = (oc / g.c_in, oc % g.c_in);
        w_t[(c * g.c_out + o) * kk..][..kk].iter_mut().zip(taps.iter().rev()).for_each(|(t, &v)| *t = v);
    }
    let io = ForwardIo { x: gy, w: w_t, b: zeros, y: gx, act: None };
    forward_in((io, act), None, scratch, n, &turned(g), reads_taps(&turned(g)));
}

/// `gw[o, c, ky, kx] = Σ_s Σ_pixels gy[s, o, pixel]·x[s, c, pixel + tap]` in [`weight_grad`]'s
/// terms, each transposing the output gradient's block it needs while in cache: per block of
/// image rows, one product over its im2col matrix, or (`taps`) one per kernel position over the
/// bordered input ([`pad`]), whose rows for that position are the channels' planes apart, with the
/// output gradient bordered by zero columns.
#[allow(clippy::too_many_arguments)]
fn weight_grad_in(
    x: &[f32],
    gy: &[f32],
    (gw, gb): (&mut [f32], &mut [f32]),
    partial: &mut Vec<f32>,
    n: usize,
    g: &ConvGeom,
    taps_in_place: bool,
) {
    let (hw, kk, ol, br) = (g.h * g.w, g.k * g.k, g.c_out * g.h * g.w, block_rows(g));
    let (xl, p, wp) = (g.c_in * hw, g.k / 2, padded_width(g));
    let bias = BiasGrad { gy, cols: hw, gb };
    weight_grad(partial, gw, bias, n, g.c_out, wgrad_unit_len(g, taps_in_place), |s, acc, taps, buf| {
        let (xs, gys) = (&x[s * xl..][..xl], &gy[s * ol..][..ol]);
        if g.k == 1 {
            transpose(gys, g.c_out, hw, buf);
            let a = View::rows(&xs[taps.start * hw..], hw);
            return gemm(taps.len(), hw, g.c_out, a, View::rows(&buf[..ol], g.c_out), 1.0, acc);
        }
        for y0 in (0..g.h).step_by(br) {
            let rows = y0..(y0 + br).min(g.h);
            let px = rows.len() * g.w;
            if !taps_in_place {
                let (col, gy_t) = buf.split_at_mut(block_len(g));
                let st = row_stride(br * g.w);
                im2col(xs, g, rows, taps.clone(), col, st);
                transpose_rows(&gys[y0 * g.w..], hw, g.c_out, px, gy_t);
                gemm(taps.len(), px, g.c_out, View::rows(col, st), View::rows(gy_t, g.c_out), 1.0, acc);
                continue;
            }
            let (q, plane) = (rows.len() * wp, (rows.len() + 2 * p) * wp);
            let (x_pad, rest) = buf.split_at_mut(padded_len(g, g.c_in, rows.len()));
            let (gy_pad, gy_t) = rest.split_at_mut(g.c_out * q);
            pad(xs, g, g.c_in, rows.clone(), x_pad);
            gy_pad.fill(0.0);
            for o in 0..g.c_out {
                copy_rows(&gys[o * hw + y0 * g.w..], g.w, &mut gy_pad[o * q..], wp, rows.len(), g.w);
            }
            transpose(gy_pad, g.c_out, q, gy_t);
            let b = View::rows(&gy_t[..q * g.c_out], g.c_out);
            for t in 0..kk {
                // The channels `c` whose tap `c·k² + t` is among `taps`, each a row of `acc`.
                let (c0, c1) = (taps.start.saturating_sub(t).div_ceil(kk), taps.end.saturating_sub(t).div_ceil(kk));
                if c0 < c1 {
                    let a = View { data: &x_pad[c0 * plane + t / g.k * wp + t % g.k..], rs: plane, cs: 1 };
                    let out = &mut acc[(c0 * kk + t - taps.start) * g.c_out..];
                    gemm_to(c1 - c0, q, g.c_out, a, b, 1.0, out, kk * g.c_out);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Act, Shape};
    use crate::rng::Rng;

    /// Reading the taps in place from bordered copies gives im2col's bits: blocks of 36 + 4 rows,
    /// a whole odd-sized image, a 5x5 kernel, and an image smaller than the kernel.
    #[test]
    fn taps_in_place_match_im2col() {
        if !in_place() {
            return eprintln!("SKIPPED: products over taps need AVX2 or AVX-512, which this level lacks");
        }
        let mut rng = Rng::new(13);
        for (n, g) in [
            (2, ConvGeom::same(3, 4, 40, 64, 3)),
            (3, ConvGeom::same(2, 5, 7, 9, 3)),
            (2, ConvGeom::same(2, 3, 9, 11, 5)),
            (2, ConvGeom::same(2, 2, 2, 3, 5)),
        ] {
            let (hw, pl) = (g.h * g.w, g.h / 2 * (g.w / 2));
            let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
            let (x, w, b) = (values(n * g.c_in * hw), values(g.c_out * g.c_in * g.k * g.k), values(g.c_out));
            let mut scratch = vec![0.0; scratch_len(&g)];
            let mut run = |taps: bool| {
                let (mut y, mut a) = (vec![0.0; n * g.c_out * hw], vec![0.0; n * g.c_out * hw]);
                let (mut py, mut pa) = (vec![0.0; n * g.c_out * pl], vec![0; n * g.c_out * pl]);
                let io = ForwardIo { x: &x, w: &w, b: &b, y: &mut y, act: Some((Act::Relu, Some(&mut a))) };
                let pool = pools_in_blocks(&g).then_some((&mut py[..], &mut pa[..], None));
                forward_in((io, None), pool, &mut scratch, n, &g, taps);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (bits(&y), bits(&a), bits(&py), pa)
            };
            assert!(run(true) == run(false), "{g:?}");
        }
    }

    /// The weight gradient read from bordered copies gives im2col's bits where each block's sums
    /// are one chain (at most 256 bordered pixels: the border's zero terms change no sum): the
    /// MNIST CNN's middle layer, odd sizes, a 5x5 kernel, an image smaller than the kernel; two
    /// or three samples, so that the taps are cut into parts that split a channel's taps. Where
    /// blocks of 12 + 12 + 12 + 4 rows 65 wide cut the chains elsewhere, each result within 1e-5
    /// of the sum of its terms' magnitudes (about 100 roundings of 6e-8, as for direct sums).
    #[test]
    fn weight_grad_taps_match_im2col() {
        if !in_place() {
            return eprintln!("SKIPPED: products over taps need AVX2 or AVX-512, which this level lacks");
        }
        let mut rng = Rng::new(14);
        for (n, g) in [
            (3, ConvGeom::same(8, 16, 14, 14, 3)),
            (2, ConvGeom::same(5, 7, 7, 9, 3)),
            (2, ConvGeom::same(3, 4, 9, 11, 5)),
            (3, ConvGeom::same(2, 2, 2, 3, 5)),
            (2, ConvGeom::same(8, 5, 40, 64, 3)),
        ] {
            let hw = g.h * g.w;
            let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
            let (x, gy) = (values(n * g.c_in * hw), values(n * g.c_out * hw));
            let run = |x: &[f32], gy: &[f32], taps: bool| {
                let (mut gw, mut gb) = (vec![0.0f32; g.c_out * g.c_in * g.k * g.k], vec![0.0; g.c_out]);
                weight_grad_in(x, gy, (&mut gw, &mut gb), &mut Vec::new(), n, &g, taps);
                gw
            };
            let (got, want) = (run(&x, &gy, true), run(&x, &gy, false));
            if g.h * padded_width(&g) <= 256 {
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(bits(&got) == bits(&want), "{g:?}");
                continue;
            }
            assert!(block_rows(&g) == 12);
            let abs = |v: &[f32]| v.iter().map(|v| v.abs()).collect::<Vec<f32>>();
            let mag = run(&abs(&x), &abs(&gy), false);
            for (i, ((&a, &b), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                assert!((a - b).abs() <= 1e-5 * m, "{g:?} gw[{i}]: {a} vs {b}");
            }
        }
    }

    /// Max pooling inside the blocks gives the bits of pooling the activated output afterwards:
    /// blocks of 36 + 4 rows, and a whole odd-sized image whose last row and column are dropped.
    #[test]
    fn pooling_inside_blocks_matches_pooling_after() {
        let mut rng = Rng::new(12);
        for (n, g) in [(2, ConvGeom::same(3, 4, 40, 64, 3)), (3, ConvGeom::same(2, 5, 7, 9, 3))] {
            assert!(pools_in_blocks(&g));
            let (hw, pl) = (g.h * g.w, g.h / 2 * (g.w / 2));
            let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
            let (x, w, b) = (values(n * g.c_in * hw), values(g.c_out * g.c_in * 9), values(g.c_out));
            let mut scratch = vec![0.0; scratch_len(&g)];
            let mut run = |fused: bool| {
                let (mut y, mut a) = (vec![0.0; n * g.c_out * hw], vec![0.0; n * g.c_out * hw]);
                let (mut py, mut pa) = (vec![0.0; n * g.c_out * pl], vec![0; n * g.c_out * pl]);
                let io = ForwardIo { x: &x, w: &w, b: &b, y: &mut y, act: Some((Act::Relu, Some(&mut a))) };
                forward(io, fused.then_some((&mut py[..], &mut pa[..], None)), &mut scratch, n, &g);
                if !fused {
                    let shape = Shape { c: g.c_out, h: g.h, w: g.w };
                    maxpool::forward(&a, &mut py, &mut pa, n, &shape);
                }
                (py.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), pa)
            };
            assert_eq!(run(true), run(false), "{g:?}");
        }
    }

    /// A shape large enough to be cut into im2col blocks (36 + 4 rows), against direct sums in
    /// f64. Each result may differ by the f32 rounding of its sum: at most 1e-5 of the sum of
    /// its terms' magnitudes (about 100 roundings of 6e-8 each for these few-thousand-term sums).
    #[test]
    fn blocked_im2col_matches_direct_sums() {
        let (n, g) = (3, ConvGeom::same(3, 5, 40, 64, 3));
        assert!(block_rows(&g) < g.h);
        let mut rng = Rng::new(11);
        let mut values = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        let (x, w, b, gy) = (values(n * 3 * 2560), values(5 * 27), values(5), values(n * 5 * 2560));
        let (mut y, mut gx, mut gw, mut gb) =
            (vec![0.0; n * 5 * 2560], vec![0.0; n * 3 * 2560], vec![0.0; 135], vec![0.0; 5]);
        let mut scratch = vec![0.0; scratch_len(&g)];
        let mut partial = Vec::new();
        forward(ForwardIo { x: &x, w: &w, b: &b, y: &mut y, act: None }, None, &mut scratch, n, &g);
        backward(&x, &w, &gy, Some(&mut gx), None, &mut gw, &mut gb, &mut scratch, &mut partial, n, &g);
        // The input pixel under tap (ky, kx) of output pixel (oy, ox), if inside.
        let at = |oy: usize, ox: usize, ky: usize, kx: usize| {
            let (iy, ix) = ((oy + ky).checked_sub(1)?, (ox + kx).checked_sub(1)?);
            (iy < 40 && ix < 64).then_some(iy * 64 + ix)
        };
        let (mut y_ref, mut gx_ref, mut gw_ref) =
            (vec![(0.0f64, 0.0f64); y.len()], vec![(0.0, 0.0); gx.len()], vec![(0.0, 0.0); 135]);
        let add = |acc: &mut (f64, f64), a: f32, b: f32| {
            *acc = (acc.0 + a as f64 * b as f64, acc.1 + (a as f64 * b as f64).abs())
        };
        for s in 0..n {
            for (o, &bias) in b.iter().enumerate() {
                for (oy, ox) in (0..40).flat_map(|oy| (0..64).map(move |ox| (oy, ox))) {
                    let yi = (s * 5 + o) * 2560 + oy * 64 + ox;
                    add(&mut y_ref[yi], bias, 1.0);
                    for (c, ky, kx) in (0..3).flat_map(|c| (0..3).flat_map(move |ky| (0..3).map(move |kx| (c, ky, kx))))
                    {
                        let Some(xi) = at(oy, ox, ky, kx) else { continue };
                        let (wi, xi) = (o * 27 + (c * 3 + ky) * 3 + kx, (s * 3 + c) * 2560 + xi);
                        add(&mut y_ref[yi], w[wi], x[xi]);
                        add(&mut gw_ref[wi], gy[yi], x[xi]);
                        add(&mut gx_ref[xi], gy[yi], w[wi]);
                    }
                }
            }
        }
        for (name, got, want) in [("y", &y, &y_ref), ("gx", &gx, &gx_ref), ("gw", &gw, &gw_ref)] {
            for (i, (&v, &(sum, mag))) in got.iter().zip(want.iter()).enumerate() {
                assert!((v as f64 - sum).abs() <= 1e-5 * mag + 1e-6, "{name}[{i}]: {v} vs {sum}");
            }
        }
    }
}
