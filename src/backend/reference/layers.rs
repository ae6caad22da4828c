//! Dense, convolution, transposed convolution and max pooling as their formulas: loops over
//! every term, each sum in f64, forward and backward side by side. Backward ops overwrite their
//! gradients.

use crate::graph::ConvGeom;
use crate::model::Shape;

/// `y[s, o] = b[o] + Σ_i x[s, i]·w[o, i]`.
pub fn dense(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], n: usize, n_in: usize, n_out: usize) {
    for s in 0..n {
        for o in 0..n_out {
            let dot: f64 = (0..n_in).map(|i| f64::from(x[s * n_in + i]) * f64::from(w[o * n_in + i])).sum();
            y[s * n_out + o] = (f64::from(b[o]) + dot) as f32;
        }
    }
}

/// `gb[o] = Σ_s gy[s, o]`, `gw[o, i] = Σ_s gy[s, o]·x[s, i]`, `gx[s, i] = Σ_o gy[s, o]·w[o, i]`.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) {
    let gy = |s: usize, o: usize| f64::from(gy[s * n_out + o]);
    for o in 0..n_out {
        gb[o] = (0..n).map(|s| gy(s, o)).sum::<f64>() as f32;
        for i in 0..n_in {
            gw[o * n_in + i] = (0..n).map(|s| gy(s, o) * f64::from(x[s * n_in + i])).sum::<f64>() as f32;
        }
    }
    if let Some(gx) = gx {
        for s in 0..n {
            for i in 0..n_in {
                gx[s * n_in + i] = (0..n_out).map(|o| gy(s, o) * f64::from(w[o * n_in + i])).sum::<f64>() as f32;
            }
        }
    }
}

/// Every (output pixel, tap, input pixel) of a convolution's plane.
fn taps(g: &ConvGeom) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let (oh, ow) = g.out();
    (0..oh * ow).flat_map(move |out| {
        (0..g.k * g.k).filter_map(move |t| g.under(out / ow, out % ow, t / g.k, t % g.k).map(|i| (out, t, i)))
    })
}

/// `y[s, o, oy, ox] = b[o] + Σ_c Σ_(ky,kx) w[o, c, ky, kx]·x[s, c, oy·stride + ky - pad,
/// ox·stride + kx - pad]`, zero outside the image.
pub fn conv2d(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], n: usize, g: &ConvGeom) {
    let (hw, kk, ohw) = (g.h * g.w, g.k * g.k, g.out().0 * g.out().1);
    let mut acc = vec![0.0f64; n * g.c_out * ohw];
    for s in 0..n {
        for o in 0..g.c_out {
            let out = &mut acc[(s * g.c_out + o) * ohw..][..ohw];
            out.fill(f64::from(b[o]));
            for c in 0..g.c_in {
                let xs = &x[(s * g.c_in + c) * hw..][..hw];
                for (p, t, i) in taps(g) {
                    out[p] += f64::from(w[(o * g.c_in + c) * kk + t]) * f64::from(xs[i]);
                }
            }
        }
    }
    store(&acc, y);
}

/// The adjoint of [`conv2d`]: `gb`, `gw` and `gx` as sums over every term that used them.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    n: usize,
    g: &ConvGeom,
) {
    let (hw, kk, ohw) = (g.h * g.w, g.k * g.k, g.out().0 * g.out().1);
    let (mut acc_gw, mut acc_gb, mut acc_gx) =
        (vec![0.0f64; gw.len()], vec![0.0f64; g.c_out], vec![0.0; n * g.c_in * hw]);
    for s in 0..n {
        for o in 0..g.c_out {
            let gys = &gy[(s * g.c_out + o) * ohw..][..ohw];
            acc_gb[o] += gys.iter().map(|&v| f64::from(v)).sum::<f64>();
            for c in 0..g.c_in {
                let (xs, at) = (&x[(s * g.c_in + c) * hw..][..hw], (s * g.c_in + c) * hw);
                for (p, t, i) in taps(g) {
                    let wi = (o * g.c_in + c) * kk + t;
                    acc_gw[wi] += f64::from(gys[p]) * f64::from(xs[i]);
                    acc_gx[at + i] += f64::from(gys[p]) * f64::from(w[wi]);
                }
            }
        }
    }
    store_grads((&acc_gx, &acc_gw, &acc_gb), gx, gw, gb);
}

/// `y[s, o, 2i + dy, 2j + dx] = b[o] + Σ_c x[s, c, i, j]·w[c, o, dy, dx]`: 2x2, stride 2; the
/// input is `h x w`, the output `2h x 2w`.
pub fn conv_transpose2d(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], n: usize, g: &ConvGeom) {
    let (hw, ow) = (g.h * g.w, 2 * g.w);
    for s in 0..n {
        for o in 0..g.c_out {
            for (oy, ox) in (0..2 * g.h).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let (i, t) = ((oy / 2) * g.w + ox / 2, (oy % 2) * 2 + ox % 2);
                let sum: f64 = (0..g.c_in)
                    .map(|c| f64::from(x[(s * g.c_in + c) * hw + i]) * f64::from(w[(c * g.c_out + o) * 4 + t]))
                    .sum();
                y[((s * g.c_out + o) * 2 * g.h + oy) * ow + ox] = (f64::from(b[o]) + sum) as f32;
            }
        }
    }
}

/// The adjoint of [`conv_transpose2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: &mut [f32],
    gb: &mut [f32],
    n: usize,
    g: &ConvGeom,
) {
    let (hw, ow, ohw) = (g.h * g.w, 2 * g.w, 4 * g.h * g.w);
    let (mut acc_gw, mut acc_gb, mut acc_gx) =
        (vec![0.0f64; gw.len()], vec![0.0f64; g.c_out], vec![0.0; n * g.c_in * hw]);
    for s in 0..n {
        for o in 0..g.c_out {
            for (oy, ox) in (0..2 * g.h).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let d = f64::from(gy[(s * g.c_out + o) * ohw + oy * ow + ox]);
                let (i, t) = ((oy / 2) * g.w + ox / 2, (oy % 2) * 2 + ox % 2);
                acc_gb[o] += d;
                for c in 0..g.c_in {
                    let (xi, wi) = ((s * g.c_in + c) * hw + i, (c * g.c_out + o) * 4 + t);
                    acc_gw[wi] += d * f64::from(x[xi]);
                    acc_gx[xi] += d * f64::from(w[wi]);
                }
            }
        }
    }
    store_grads((&acc_gx, &acc_gw, &acc_gb), gx, gw, gb);
}

/// 2x2 max pooling, stride 2 (an odd last row or column is dropped): each window's first
/// maximum in the order (0,0), (0,1), (1,0), (1,1), and its index `(c·h + iy)·w + ix` within the
/// sample. A NaN is never greater, so it wins only as the window's first element.
pub fn max_pool(x: &[f32], y: &mut [f32], argmax: &mut [u32], n: usize, s: &Shape) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    for (plane, (ys, am)) in y[..n * s.c * oh * ow].chunks_mut(oh * ow).zip(argmax.chunks_mut(oh * ow)).enumerate() {
        let (xs, first) = (&x[plane * s.h * s.w..][..s.h * s.w], plane % s.c * s.h * s.w);
        for (o, (y, am)) in ys.iter_mut().zip(am).enumerate() {
            let (oy, ox) = (o / ow, o % ow);
            let window = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| (2 * oy + dy) * s.w + 2 * ox + dx);
            let best = window.into_iter().fold(window[0], |best, i| if xs[i] > xs[best] { i } else { best });
            (*y, *am) = (xs[best], (first + best) as u32);
        }
    }
}

/// The adjoint of [`max_pool`]: each window's gradient at its maximum, 0 elsewhere.
pub fn max_pool_backward(gy: &[f32], argmax: &[u32], gx: &mut [f32], n: usize, s: &Shape) {
    let per_out = s.c * (s.h / 2) * (s.w / 2);
    gx[..n * s.len()].fill(0.0);
    for (j, (&d, &at)) in gy[..n * per_out].iter().zip(argmax).enumerate() {
        gx[j / per_out * s.len() + at as usize] += d;
    }
}

/// Each 2x2 window's sum times `scale`, stride 2 (an odd last row or column is dropped), in
/// f64: mean pooling at 0.25, an upsampling's backward at 1.
pub fn avg_pool(x: &[f32], y: &mut [f32], n: usize, s: &Shape, scale: f64) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    for (plane, ys) in y[..n * s.c * oh * ow].chunks_mut(oh * ow).enumerate() {
        let xs = &x[plane * s.h * s.w..][..s.h * s.w];
        for (o, y) in ys.iter_mut().enumerate() {
            let (iy, ix) = (2 * (o / ow), 2 * (o % ow));
            let window = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| f64::from(xs[(iy + dy) * s.w + ix + dx]));
            *y = (window.iter().sum::<f64>() * scale) as f32;
        }
    }
}

/// The adjoint of [`avg_pool`]: each window's value times `scale` at each of its elements, 0 in
/// a dropped row or column (nearest upsampling at 1).
pub fn avg_pool_backward(gy: &[f32], gx: &mut [f32], n: usize, s: &Shape, scale: f64) {
    let (oh, ow) = (s.h / 2, s.w / 2);
    for (plane, gs) in gx[..n * s.len()].chunks_mut(s.h * s.w).enumerate() {
        for (i, g) in gs.iter_mut().enumerate() {
            let (oy, ox) = (i / s.w / 2, i % s.w / 2);
            *g = if oy < oh && ox < ow { (f64::from(gy[(plane * oh + oy) * ow + ox]) * scale) as f32 } else { 0.0 };
        }
    }
}

fn store(acc: &[f64], out: &mut [f32]) {
    out.iter_mut().zip(acc).for_each(|(o, &v)| *o = v as f32);
}

/// Rounds a backward's f64 sums (input, weight and bias gradients) into its outputs.
fn store_grads((ax, aw, ab): (&[f64], &[f64], &[f64]), gx: Option<&mut [f32]>, gw: &mut [f32], gb: &mut [f32]) {
    store(aw, gw);
    store(ab, gb);
    if let Some(gx) = gx {
        store(ax, gx);
    }
}

/// The `K` sums `Σ f(a, b)[k]` in f64 over channel `ch` of `a` and `b` (each `[n, c, hw]`), in
/// one pass, sample by sample: each plane in eight running sums per `k` (value `i` into sum
/// `i % 8`, so that the additions need not wait on one another), added in order. Inlined, so
/// that the CPU's callers vectorise it at their level.
#[inline(always)]
fn channel_sums<const K: usize>(
    a: &[f32],
    b: &[f32],
    n: usize,
    (c, hw): (usize, usize),
    ch: usize,
    f: impl Fn(f64, f64) -> [f64; K],
) -> [f64; K] {
    let mut total = [0.0; K];
    for s in 0..n {
        let at = (s * c + ch) * hw;
        let (a, b) = (&a[at..][..hw], &b[at..][..hw]);
        let mut lanes = [[0.0f64; K]; 8];
        let add = |l: &mut [f64; K], a: f32, b: f32| {
            let v = f(f64::from(a), f64::from(b));
            l.iter_mut().zip(v).for_each(|(l, v)| *l += v);
        };
        let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
        for (a, b) in (&mut ca).zip(&mut cb) {
            for ((l, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
                add(l, a, b);
            }
        }
        for ((l, &a), &b) in lanes.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
            add(l, a, b);
        }
        (0..K).for_each(|k| total[k] += lanes.iter().map(|l| l[k]).sum::<f64>());
    }
    total
}

/// [`channel_sums`] of one function.
#[inline(always)]
fn channel_sum(a: &[f32], b: &[f32], n: usize, (c, hw): (usize, usize), ch: usize, f: impl Fn(f64, f64) -> f64) -> f64 {
    channel_sums(a, b, n, (c, hw), ch, |a, b| [f(a, b)])[0]
}

/// Batch normalisation of channel `ch` in training: its mean and biased variance over the
/// `n·hw` values, in f64 ([`channel_sum`]; the CPU keeps the order too).
#[inline(always)]
pub fn batch_moments(x: &[f32], n: usize, (c, hw): (usize, usize), ch: usize) -> (f64, f64) {
    let m = (n * hw) as f64;
    let mean = channel_sum(x, x, n, (c, hw), ch, |v, _| v) / m;
    let var = channel_sum(x, x, n, (c, hw), ch, |v, _| (v - mean) * (v - mean)) / m;
    (mean, var)
}

/// The channels' (mean, 1/√(σ²+ε)) of a batch normalisation from `moments` (each channel's
/// batch mean and variance, in training) or from the running statistics, which training moves
/// toward the batch's (the variance unbiased) and counts.
pub fn batch_norm_stats(
    moments: Option<&[(f64, f64)]>,
    running: &mut [Vec<f32>; 3],
    m: usize,
    (momentum, eps): (f32, f32),
) -> Vec<(f64, f64)> {
    let (mo, eps) = (f64::from(momentum), f64::from(eps));
    let [rm, rv, count] = running;
    let Some(moments) = moments else {
        return rm
            .iter()
            .zip(rv.iter())
            .map(|(&mean, &var)| (f64::from(mean), 1.0 / (f64::from(var) + eps).sqrt()))
            .collect();
    };
    count[0] += 1.0;
    let correction = if m > 1 { m as f64 / (m - 1) as f64 } else { 1.0 };
    moments
        .iter()
        .enumerate()
        .map(|(ch, &(mean, var))| {
            rm[ch] = ((1.0 - mo) * f64::from(rm[ch]) + mo * mean) as f32;
            rv[ch] = ((1.0 - mo) * f64::from(rv[ch]) + mo * var * correction) as f32;
            (mean, 1.0 / (var + eps).sqrt())
        })
        .collect()
}

/// One normalised value: `γ·(x - μ)·inv + β`.
#[inline(always)]
pub fn normalised(x: f32, (mean, inv): (f64, f64), (g, b): (f64, f64)) -> f32 {
    (g * (f64::from(x) - mean) * inv + b) as f32
}

/// [`Op::BatchNorm`](crate::graph::Op::BatchNorm) over `n` samples, in f64: `running` is the
/// mean, variance and count.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    y: &mut [f32],
    stats: &mut [f32],
    running: &mut [Vec<f32>; 3],
    n: usize,
    (c, hw): (usize, usize),
    (train, momentum, eps): (bool, f32, f32),
) {
    let moments: Option<Vec<(f64, f64)>> = train.then(|| (0..c).map(|ch| batch_moments(x, n, (c, hw), ch)).collect());
    let channels = batch_norm_stats(moments.as_deref(), running, n * hw, (momentum, eps));
    for (ch, &(mean, inv)) in channels.iter().enumerate() {
        (stats[ch], stats[c + ch]) = (mean as f32, inv as f32);
    }
    for (plane, (y, x)) in y[..n * c * hw].chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
        let ch = plane % c;
        let affine = (f64::from(gamma[ch]), f64::from(beta[ch]));
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = normalised(x, channels[ch], affine));
    }
}

/// A batch normalisation's parameter gradients for channel `ch`, in f64: (gβ, gγ) = (Σgy,
/// Σgy·x̂), from the forward's (mean, 1/√(σ²+ε)), in one pass.
#[inline(always)]
pub fn batch_norm_sums(
    x: &[f32],
    gy: &[f32],
    n: usize,
    (c, hw): (usize, usize),
    ch: usize,
    (mean, inv): (f64, f64),
) -> (f64, f64) {
    let [gb, gg] = channel_sums(gy, x, n, (c, hw), ch, |g, v| [g, g * ((v - mean) * inv)]);
    (gb, gg)
}

/// One input gradient: `γ·inv·(gy - (gβ + x̂·gγ)/m)`.
#[inline(always)]
pub fn normalised_grad(x: f32, gy: f32, (mean, inv): (f64, f64), gamma: f64, (gb, gg): (f64, f64), m: f64) -> f32 {
    let xhat = (f64::from(x) - mean) * inv;
    (gamma * inv * (f64::from(gy) - (gb + xhat * gg) / m)) as f32
}

/// [`Op::BatchNormBackward`](crate::graph::Op::BatchNormBackward) over `n` samples, in f64,
/// from the forward's `stats`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    gy: &[f32],
    gx: Option<&mut [f32]>,
    (ggamma, gbeta): (&mut [f32], &mut [f32]),
    n: usize,
    (c, hw): (usize, usize),
) {
    let channels: Vec<(f64, f64)> = (0..c).map(|ch| (f64::from(stats[ch]), f64::from(stats[c + ch]))).collect();
    let sums: Vec<(f64, f64)> = (0..c).map(|ch| batch_norm_sums(x, gy, n, (c, hw), ch, channels[ch])).collect();
    for (ch, &(gb, gg)) in sums.iter().enumerate() {
        (ggamma[ch], gbeta[ch]) = (gg as f32, gb as f32);
    }
    let Some(gx) = gx else { return };
    let m = (n * hw) as f64;
    let planes = gx[..n * c * hw].chunks_mut(hw).zip(x.chunks(hw).zip(gy.chunks(hw)));
    for (plane, (gx, (x, gy))) in planes.enumerate() {
        let ch = plane % c;
        for (o, (&x, &g)) in gx.iter_mut().zip(x.iter().zip(gy)) {
            *o = normalised_grad(x, g, channels[ch], f64::from(gamma[ch]), sums[ch], m);
        }
    }
}
