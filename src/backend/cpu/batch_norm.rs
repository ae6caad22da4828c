//! Batch normalisation over `[n, c, hw]` (see `Op::BatchNorm`) in f64, as the reference: the
//! values of a channel whose spread is small beside its mean lose digits in f32 (`x - μ`),
//! and the op is a small part of a step.

/// The `hw` values of channel `ch` in each of `n` samples.
fn planes(x: &[f32], n: usize, (c, hw): (usize, usize), ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |s| &x[(s * c + ch) * hw..][..hw])
}

/// Forward: `running` (mean, variance, count) is moved toward the batch's in training and
/// stands in for it otherwise; `stats` gets each channel's mean and 1/√(σ²+ε).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    y: &mut [f32],
    stats: &mut [f32],
    running: &mut [Vec<f32>; 3],
    n: usize,
    (c, hw): (usize, usize),
    (train, momentum, eps): (bool, f32, f32),
) {
    let (m, mo, eps) = ((n * hw) as f64, f64::from(momentum), f64::from(eps));
    for ch in 0..c {
        let (mean, inv) = if train {
            let sum: f64 = planes(x, n, (c, hw), ch).flatten().map(|&v| f64::from(v)).sum();
            let mean = sum / m;
            let squares: f64 = planes(x, n, (c, hw), ch).flatten().map(|&v| (f64::from(v) - mean).powi(2)).sum();
            let var = squares / m;
            let unbiased = if m > 1.0 { var * m / (m - 1.0) } else { var };
            let [rm, rv, _] = running;
            rm[ch] = ((1.0 - mo) * f64::from(rm[ch]) + mo * mean) as f32;
            rv[ch] = ((1.0 - mo) * f64::from(rv[ch]) + mo * unbiased) as f32;
            (mean, 1.0 / (var + eps).sqrt())
        } else {
            (f64::from(running[0][ch]), 1.0 / (f64::from(running[1][ch]) + eps).sqrt())
        };
        stats[ch] = mean as f32;
        stats[c + ch] = inv as f32;
        let (g, b) = (f64::from(gamma[ch]), f64::from(beta[ch]));
        for s in 0..n {
            let at = (s * c + ch) * hw;
            let normalised = |x: f32| (g * (f64::from(x) - mean) * inv + b) as f32;
            y[at..at + hw].iter_mut().zip(&x[at..at + hw]).for_each(|(y, &x)| *y = normalised(x));
        }
    }
    if train {
        running[2][0] += 1.0;
    }
}

/// Backward from the forward's `stats`: `gβ`, `gγ` per channel and, where wanted, `gx`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    gy: &[f32],
    mut gx: Option<&mut [f32]>,
    (ggamma, gbeta): (&mut [f32], &mut [f32]),
    n: usize,
    (c, hw): (usize, usize),
) {
    let m = (n * hw) as f64;
    for ch in 0..c {
        let (mean, inv) = (f64::from(stats[ch]), f64::from(stats[c + ch]));
        let grads = || planes(gy, n, (c, hw), ch).flatten();
        let gb: f64 = grads().map(|&g| f64::from(g)).sum();
        let xs = planes(x, n, (c, hw), ch).flatten();
        let gg: f64 = grads().zip(xs).map(|(&g, &v)| f64::from(g) * ((f64::from(v) - mean) * inv)).sum();
        (ggamma[ch], gbeta[ch]) = (gg as f32, gb as f32);
        if let Some(gx) = gx.as_deref_mut() {
            let scale = f64::from(gamma[ch]) * inv;
            for s in 0..n {
                let at = (s * c + ch) * hw;
                let (xs, gs) = (&x[at..at + hw], &gy[at..at + hw]);
                let input = |x: f32, g: f32| {
                    let xhat = (f64::from(x) - mean) * inv;
                    (scale * (f64::from(g) - (gb + xhat * gg) / m)) as f32
                };
                gx[at..at + hw].iter_mut().zip(xs.iter().zip(gs)).for_each(|(o, (&x, &g))| *o = input(x, g));
            }
        }
    }
}
