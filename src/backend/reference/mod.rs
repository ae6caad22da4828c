//! The reference backend: every op as the plain formula of [`layers`] and [`elementwise`], one
//! op at a time, sums in f64, no fusion, no SIMD, no threads. Slow, and the oracle that the fast
//! CPU backend and the GPU are checked against (`--backend reference` trains with it).

pub mod elementwise;
pub mod layers;

use super::host::HostBuffers;
use super::Backend;
use crate::error::Result;
use crate::graph::{BufDesc, BufId, Op, Step};
use elementwise as e;
use layers as l;

pub struct ReferenceBackend {
    bufs: HostBuffers,
}

impl ReferenceBackend {
    pub fn new(descs: &[BufDesc]) -> Self {
        ReferenceBackend { bufs: HostBuffers::new(descs) }
    }

    fn f(&self, id: BufId) -> &[f32] {
        self.bufs.f(id)
    }

    fn take(&mut self, id: BufId) -> Vec<f32> {
        self.bufs.take(id)
    }

    fn put(&mut self, id: BufId, v: Vec<f32>) {
        self.bufs.put(id, v)
    }

    /// Runs `f` with the output `out` moved out.
    fn with(&mut self, out: BufId, f: impl FnOnce(&Self, &mut [f32])) {
        let mut v = self.take(out);
        f(self, &mut v);
        self.put(out, v);
    }

    /// Runs `f` with the outputs `a`, `b` (if given) and `c` moved out.
    fn with3(
        &mut self,
        (a, b, c): (Option<BufId>, BufId, BufId),
        f: impl FnOnce(&Self, Option<&mut [f32]>, &mut [f32], &mut [f32]),
    ) {
        let (mut av, mut bv, mut cv) = (a.map(|a| self.take(a)), self.take(b), self.take(c));
        f(self, av.as_deref_mut(), &mut bv, &mut cv);
        self.put(c, cv);
        self.put(b, bv);
        if let (Some(a), Some(av)) = (a, av) {
            self.put(a, av);
        }
    }

    fn run_op(&mut self, op: &Op, step: Step) {
        let n = step.n;
        match *op {
            Op::Gather { data, index, out, shape, scale, binarize, mirrored } => self.with(out, |be, o| {
                e::gather(be.bufs.u8(data), be.bufs.u32(index), o, &shape, (scale, binarize, mirrored), n, step.offset)
            }),
            Op::GatherOneHot { labels, index, out, classes } => {
                self.with(out, |be, o| e::one_hot(be.bufs.u8(labels), be.bufs.u32(index), o, classes, n, step.offset))
            }
            Op::Dense { x, w, b, y, n_in, n_out } => {
                self.with(y, |be, y| l::dense(be.f(x), be.f(w), be.f(b), y, n, n_in, n_out))
            }
            Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out } => self.with3((gx, gw, gb), |be, gx, gw, gb| {
                l::dense_backward(be.f(x), be.f(w), be.f(gy), gx, gw, gb, n, n_in, n_out)
            }),
            Op::Conv2d { x, w, b, y, ref g } => self.with(y, |be, y| l::conv2d(be.f(x), be.f(w), be.f(b), y, n, g)),
            Op::Conv2dBackward { x, w, gy, gx, gw, gb, ref g } => self
                .with3((gx, gw, gb), |be, gx, gw, gb| l::conv2d_backward(be.f(x), be.f(w), be.f(gy), gx, gw, gb, n, g)),
            Op::ConvTranspose2d { x, w, b, y, ref g } => {
                self.with(y, |be, y| l::conv_transpose2d(be.f(x), be.f(w), be.f(b), y, n, g))
            }
            Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, ref g } => self
                .with3((gx, gw, gb), |be, gx, gw, gb| {
                    l::conv_transpose2d_backward(be.f(x), be.f(w), be.f(gy), gx, gw, gb, n, g)
                }),
            Op::MaxPool2d { x, y, argmax, ref shape } => {
                let (mut yv, mut am) = (self.take(y), self.bufs.take_u32(argmax));
                l::max_pool(self.f(x), &mut yv, &mut am, n, shape);
                self.put(y, yv);
                self.bufs.put_u32(argmax, am);
            }
            Op::MaxPool2dBackward { gy, argmax, gx, ref shape } => {
                self.with(gx, |be, gx| l::max_pool_backward(be.f(gy), be.bufs.u32(argmax), gx, n, shape))
            }
            Op::AvgPool2d { x, y, ref shape } => self.with(y, |be, y| l::avg_pool(be.f(x), y, n, shape, 0.25)),
            Op::AvgPool2dBackward { gy, gx, ref shape } => {
                self.with(gx, |be, gx| l::avg_pool_backward(be.f(gy), gx, n, shape, 0.25))
            }
            Op::Concat { a, b, y, per_a, per_b } => {
                let whole = per_a + per_b;
                self.with(y, |be, y| e::copy_part(be.f(a), y, n, per_a, (0, per_a), (0, whole)));
                self.with(y, |be, y| e::copy_part(be.f(b), y, n, per_b, (0, per_b), (per_a, whole)));
            }
            Op::ConcatBackward { gy, ga, gb, per_a, per_b } => {
                let whole = per_a + per_b;
                for (g, at, per) in [(ga, 0, per_a), (gb, per_a, per_b)] {
                    if let Some(g) = g {
                        self.with(g, |be, g| e::copy_part(be.f(gy), g, n, per, (at, whole), (0, per)));
                    }
                }
            }
            Op::BatchNorm { x, gamma, beta, y, stats, running, c, hw, train, momentum, eps } => {
                let (mut yv, mut sv) = (self.take(y), self.take(stats));
                let mut r = running.map(|id| self.take(id));
                let config = (train, momentum, eps);
                l::batch_norm(self.f(x), (self.f(gamma), self.f(beta)), &mut yv, &mut sv, &mut r, n, (c, hw), config);
                running.iter().zip(r).for_each(|(&id, v)| self.put(id, v));
                self.put(y, yv);
                self.put(stats, sv);
            }
            Op::BatchNormBackward { x, gamma, stats, gy, gx, ggamma, gbeta, c, hw } => {
                let (mut gxv, mut gg, mut gb) = (gx.map(|id| self.take(id)), self.take(ggamma), self.take(gbeta));
                let (xs, g, s, d) = (self.f(x), self.f(gamma), self.f(stats), self.f(gy));
                l::batch_norm_backward(xs, g, s, d, gxv.as_deref_mut(), (&mut gg, &mut gb), n, (c, hw));
                if let (Some(id), Some(v)) = (gx, gxv) {
                    self.put(id, v);
                }
                self.put(ggamma, gg);
                self.put(gbeta, gb);
            }
            Op::Sum { a, b, y, per } => {
                self.with(y, |be, y| e::sum(&be.f(a)[..n * per], &be.f(b)[..n * per], &mut y[..n * per]))
            }
            Op::Upsample2d { x, y, ref shape } => self.with(y, |be, y| l::avg_pool_backward(be.f(x), y, n, shape, 1.0)),
            Op::Upsample2dBackward { gy, gx, ref shape } => {
                self.with(gx, |be, gx| l::avg_pool(be.f(gy), gx, n, shape, 1.0))
            }
            Op::SumBackward { gy, ga, gb, per } => {
                for g in [ga, gb].into_iter().flatten() {
                    self.with(g, |be, g| e::copy_part(be.f(gy), g, n, per, (0, per), (0, per)));
                }
            }
            Op::Activation { act, x, y, per } => {
                self.with(y, |be, y| e::activation(act, &be.f(x)[..n * per], &mut y[..n * per]))
            }
            Op::ActivationBackward { act, y, gy, gx, per } => self.with(gx, |be, gx| {
                e::activation_backward(act, &be.f(y)[..n * per], &be.f(gy)[..n * per], &mut gx[..n * per])
            }),
            Op::Dropout { x, y, mask, per, rate, seed } => {
                let mut m = self.take(mask);
                self.with(y, |be, y| {
                    e::dropout(&be.f(x)[..n * per], &mut y[..n * per], &mut m[..n * per], rate, seed, step.t)
                });
                self.put(mask, m);
            }
            Op::DropoutBackward { gy, mask, gx, per } => self.with(gx, |be, gx| {
                e::dropout_backward(&be.f(gy)[..n * per], &be.f(mask)[..n * per], &mut gx[..n * per])
            }),
            Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, batch } => {
                self.with3((grad, probs, metrics), |be, mut g, p, m| {
                    for at in (0..n).step_by(batch.max(1)) {
                        let (rows, b) = (at * k..(at + batch).min(n) * k, batch.min(n - at));
                        let zt = (&be.f(logits)[rows.clone()], &be.f(target)[rows.clone()]);
                        e::softmax_cross_entropy(
                            zt,
                            &mut p[rows.clone()],
                            g.as_deref_mut().map(|g| &mut g[rows]),
                            m,
                            b,
                            k,
                        );
                    }
                })
            }
            Op::SigmoidBce { logits, target, probs, grad, metrics, per, batch } => {
                self.with3((grad, probs, metrics), |be, mut g, p, m| {
                    for at in (0..n).step_by(batch.max(1)) {
                        let (rows, b) = (at * per..(at + batch).min(n) * per, batch.min(n - at));
                        let zt = (&be.f(logits)[rows.clone()], &be.f(target)[rows.clone()]);
                        e::sigmoid_bce(zt, &mut p[rows.clone()], g.as_deref_mut().map(|g| &mut g[rows]), m, b, per);
                    }
                })
            }
            Op::PixelSoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: k, per, batch } => self
                .with3((grad, probs, metrics), |be, mut g, p, m| {
                    for at in (0..n).step_by(batch.max(1)) {
                        let b = batch.min(n - at);
                        let (rows, pixels) = (at * k * per..(at + b) * k * per, at * per..(at + b) * per);
                        let zt = (&be.f(logits)[rows.clone()], &be.f(target)[pixels]);
                        let g = g.as_deref_mut().map(|g| &mut g[rows.clone()]);
                        e::pixel_softmax_cross_entropy(zt, &mut p[rows], g, m, (b, k, per));
                    }
                }),
            Op::L2 { w, grad, metrics, lambda, len } => {
                let mut g = grad.map(|g| self.take(g));
                self.with(metrics, |be, m| e::l2(&be.f(w)[..len], g.as_deref_mut(), m, lambda, n));
                if let (Some(id), Some(g)) = (grad, g) {
                    self.put(id, g);
                }
            }
            Op::Confusion { probs, target, counts, classes } => {
                self.with(counts, |be, c| e::confusion(be.f(probs), be.f(target), c, n, classes))
            }
            Op::Sgd { w, g, lr, len } => self.with(w, |be, w| e::sgd(&mut w[..len], &be.f(g)[..len], lr)),
            Op::Momentum { w, g, v, lr, momentum, len } => {
                let mut vv = self.take(v);
                self.with(w, |be, w| e::momentum(&mut w[..len], &be.f(g)[..len], &mut vv[..len], lr, momentum));
                self.put(v, vv);
            }
            Op::Adam { w, g, m, v, lr, beta1, beta2, eps, len } => {
                let (mut mv, mut vv) = (self.take(m), self.take(v));
                self.with(w, |be, w| {
                    e::adam(
                        &mut w[..len],
                        &be.f(g)[..len],
                        &mut mv[..len],
                        &mut vv[..len],
                        lr,
                        (beta1, beta2, eps),
                        step.t,
                    )
                });
                self.put(m, mv);
                self.put(v, vv);
            }
        }
    }
}

impl Backend for ReferenceBackend {
    fn describe(&self) -> String {
        "reference (plain f64 sums, one thread)".into()
    }
    fn upload_f32(&mut self, buf: BufId, data: &[f32]) -> Result<()> {
        self.bufs.upload_f32(buf, data)
    }
    fn upload_u8(&mut self, buf: BufId, data: &[u8]) -> Result<()> {
        self.bufs.upload_u8(buf, data)
    }
    fn upload_u32(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.bufs.upload_u32(buf, data)
    }
    fn download_f32(&mut self, buf: BufId) -> Result<Vec<f32>> {
        Ok(self.f(buf).to_vec())
    }
    fn run(&mut self, ops: &[Op], step: Step) -> Result<()> {
        ops.iter().for_each(|op| self.run_op(op, step));
        Ok(())
    }
}
