//! Batch normalisation over the cores: the reference's f64 pieces (each channel's moments and
//! gradient sums, each value's formula), channels and planes spread over the threads, so the
//! results are the reference's bits. f64 because where a channel's spread is small beside its
//! mean, f32 loses digits in `x - μ`.

use super::activation;
use super::level::{at_level, level, Vectorised};
use crate::backend::reference::layers as r;
use crate::model::Act;
use rayon::prelude::*;

/// Planes of `hw` values handed to a thread at a time: about 16k values.
fn planes_per_task(hw: usize) -> usize {
    (16_384 / hw.max(1)).max(1)
}

/// [`Op::BatchNorm`](crate::graph::Op::BatchNorm); see [`r::batch_norm`]. With `act`, each
/// plane of `y` is activated in place as soon as it is written (an activation fused after the
/// normalisation, whose output `y` then holds).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    (y, act): (&mut [f32], Option<Act>),
    stats: &mut [f32],
    running: &mut [Vec<f32>; 3],
    n: usize,
    (c, hw): (usize, usize),
    (train, momentum, eps): (bool, f32, f32),
) {
    let moments: Option<Vec<(f64, f64)>> =
        train.then(|| (0..c).into_par_iter().map(|ch| at_level(level(), Moments(x, n, (c, hw), ch))).collect());
    let channels = r::batch_norm_stats(moments.as_deref(), running, n * hw, (momentum, eps));
    for (ch, &(mean, inv)) in channels.iter().enumerate() {
        (stats[ch], stats[c + ch]) = (mean as f32, inv as f32);
    }
    let planes = y[..n * c * hw].par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate();
    planes.with_min_len(planes_per_task(hw)).for_each(|(plane, (y, x))| {
        let ch = plane % c;
        let affine = (f64::from(gamma[ch]), f64::from(beta[ch]));
        at_level(level(), Normalise(x, y, channels[ch], affine));
        if let Some(act) = act {
            activation::apply(act, y);
        }
    });
}

/// [`Op::BatchNormBackward`](crate::graph::Op::BatchNormBackward); see
/// [`r::batch_norm_backward`].
#[allow(clippy::too_many_arguments)]
pub fn backward(
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
    let sums: Vec<(f64, f64)> =
        (0..c).into_par_iter().map(|ch| at_level(level(), Sums(x, gy, n, (c, hw), ch, channels[ch]))).collect();
    for (ch, &(gb, gg)) in sums.iter().enumerate() {
        (ggamma[ch], gbeta[ch]) = (gg as f32, gb as f32);
    }
    let Some(gx) = gx else { return };
    let m = (n * hw) as f64;
    let planes = gx[..n * c * hw].par_chunks_mut(hw).zip(x.par_chunks(hw).zip(gy.par_chunks(hw))).enumerate();
    planes.with_min_len(planes_per_task(hw)).for_each(|(plane, (gx, (x, gy)))| {
        let ch = plane % c;
        at_level(level(), NormalisedGrad(x, gy, gx, channels[ch], f64::from(gamma[ch]), sums[ch], m));
    });
}

/// [`r::batch_moments`] of one channel, run at the process's level ([`at_level`]).
struct Moments<'a>(&'a [f32], usize, (usize, usize), usize);

impl Vectorised for Moments<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run(self) -> (f64, f64) {
        r::batch_moments(self.0, self.1, self.2, self.3)
    }
}

/// [`r::normalised`] over a plane `x` into `y`, at the process's level.
struct Normalise<'a>(&'a [f32], &'a mut [f32], (f64, f64), (f64, f64));

impl Vectorised for Normalise<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Normalise(x, y, stats, affine) = self;
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = r::normalised(x, stats, affine));
    }
}

/// [`r::batch_norm_sums`] of one channel, at the process's level.
struct Sums<'a>(&'a [f32], &'a [f32], usize, (usize, usize), usize, (f64, f64));

impl Vectorised for Sums<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run(self) -> (f64, f64) {
        let Sums(x, gy, n, shape, ch, stats) = self;
        r::batch_norm_sums(x, gy, n, shape, ch, stats)
    }
}

/// [`r::normalised_grad`] over a plane, at the process's level.
struct NormalisedGrad<'a>(&'a [f32], &'a [f32], &'a mut [f32], (f64, f64), f64, (f64, f64), f64);

impl Vectorised for NormalisedGrad<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let NormalisedGrad(x, gy, gx, stats, gamma, sums, m) = self;
        for (o, (&x, &g)) in gx.iter_mut().zip(x.iter().zip(gy)) {
            *o = r::normalised_grad(x, g, stats, gamma, sums, m);
        }
    }
}
