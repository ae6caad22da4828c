//! Batch normalisation over the channels, `[c, h, w] -> [c, h, w]` (PyTorch's
//! `nn.BatchNorm2d(c, eps, momentum)`): in training each channel is normalised by its mean and
//! variance over the batch and the running statistics follow them; in the test pass,
//! `evaluate` and `predict`, by the running statistics. Weight (γ, ones) and bias (β, zeros)
//! `[c]`; running mean (zeros), variance (ones) `[c]` and the count of updates, kept under
//! PyTorch's keys `running_mean`, `running_var`, `num_batches_tracked`.

use super::{AuxOf, Kind, Weights};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::{Init, Shape};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct BatchNorm2d {
    /// How far the running statistics move toward a batch's: PyTorch's 0.1.
    pub momentum: f32,
    /// Added to the variance: PyTorch's 1e-5.
    pub eps: f32,
}

impl Default for BatchNorm2d {
    fn default() -> Self {
        BatchNorm2d { momentum: 0.1, eps: 1e-5 }
    }
}

impl Kind for BatchNorm2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("BatchNormalization", "batch_normalization")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        if !(self.momentum > 0.0 && self.momentum <= 1.0) {
            return Err(Error::Model(format!("momentum must be in (0, 1], got {}", self.momentum)));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::Model(format!("eps must be a number above 0, got {}", self.eps)));
        }
        Ok(input)
    }
    fn weights(&self, input: Shape) -> Option<Weights> {
        Some(Weights { shape: vec![input.c], init: Init::Ones, l2: 0.0, bias: input.c })
    }
    fn running(&self, input: Shape) -> Option<usize> {
        Some(input.c)
    }
    fn forward(&self, io: &LayerIo, train: bool, _: u32) -> Option<Op> {
        let (gamma, beta, _, _) = io.params();
        let (c, hw) = (io.s.c, io.s.h * io.s.w);
        let (momentum, eps) = (self.momentum, self.eps);
        let running = io.running.expect("a batch normalisation has running statistics");
        Some(Op::BatchNorm { x: io.x, gamma, beta, y: io.y, stats: io.aux(), running, c, hw, train, momentum, eps })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (gamma, _, ggamma, gbeta) = io.params();
        let (c, hw) = (io.s.c, io.s.h * io.s.w);
        Some(Op::BatchNormBackward { x: io.x, gamma, stats: io.aux(), gy: io.gy?, gx: io.gx, ggamma, gbeta, c, hw })
    }
    fn aux(&self) -> Option<AuxOf> {
        Some(AuxOf::ChannelPairs)
    }
}
