//! Each layer kind's plan ops, forward and backward side by side.

use super::op::{BufId, ConvGeom, Op};
use crate::model::{Layer, Shape};

/// A layer's buffers in a pass: input `x [n, s]`, output `y`, its own extra buffer (a
/// pooling's argmax, a dropout's mask), its parameters (weights, bias) and their gradients,
/// and the gradients of its output and input (`gx` is `None` where nothing before it needs one).
#[derive(Clone, Copy, Debug)]
pub struct LayerIo {
    pub x: BufId,
    pub y: BufId,
    pub s: Shape,
    pub aux: Option<BufId>,
    /// (w, b, gw, gb).
    pub params: Option<(BufId, BufId, BufId, BufId)>,
    pub gy: Option<BufId>,
    pub gx: Option<BufId>,
}

impl LayerIo {
    fn params(&self) -> (BufId, BufId, BufId, BufId) {
        self.params.expect("a layer with weights has parameters")
    }
    fn aux(&self) -> BufId {
        self.aux.expect("a pooling has its argmax, a dropout its mask")
    }
    fn geom(&self, c_out: usize, k: usize) -> ConvGeom {
        ConvGeom { c_in: self.s.c, c_out, h: self.s.h, w: self.s.w, k }
    }
}

/// The layer's forward op (none for Flatten, which aliases its input). Dropout keeps every
/// value outside training (`train` false); `seed` seeds its mask.
pub fn forward(layer: &Layer, io: &LayerIo, train: bool, seed: u32) -> Option<Op> {
    let LayerIo { x, y, s, .. } = *io;
    Some(match *layer {
        Layer::Dense { units, .. } => {
            let (w, b, _, _) = io.params();
            Op::Dense { x, w, b, y, n_in: s.len(), n_out: units }
        }
        Layer::Conv2d { filters, kernel, .. } => {
            let (w, b, _, _) = io.params();
            Op::Conv2d { x, w, b, y, g: io.geom(filters, kernel) }
        }
        Layer::Conv2dTranspose { filters, .. } => {
            let (w, b, _, _) = io.params();
            Op::ConvTranspose2d { x, w, b, y, g: io.geom(filters, 2) }
        }
        Layer::MaxPool2d => Op::MaxPool2d { x, y, argmax: io.aux(), shape: s },
        Layer::AvgPool2d => Op::AvgPool2d { x, y, shape: s },
        Layer::Activation(act) => Op::Activation { act, x, y, per: s.len() },
        Layer::Flatten => return None,
        Layer::Dropout(rate) => {
            Op::Dropout { x, y, mask: io.aux(), per: s.len(), rate: if train { rate } else { 0.0 }, seed }
        }
    })
}

/// The layer's backward op: the gradients of its parameters and, where wanted, of its input.
/// None where there is nothing to compute (no output gradient, or a layer without parameters
/// whose input needs none, or Flatten, whose gradient buffer is its input's).
pub fn backward(layer: &Layer, io: &LayerIo) -> Option<Op> {
    let LayerIo { x, y, s, gx, .. } = *io;
    let gy = io.gy?;
    Some(match *layer {
        Layer::Dense { units, .. } => {
            let (w, _, gw, gb) = io.params();
            Op::DenseBackward { x, w, gy, gx, gw, gb, n_in: s.len(), n_out: units }
        }
        Layer::Conv2d { filters, kernel, .. } => {
            let (w, _, gw, gb) = io.params();
            Op::Conv2dBackward { x, w, gy, gx, gw, gb, g: io.geom(filters, kernel) }
        }
        Layer::Conv2dTranspose { filters, .. } => {
            let (w, _, gw, gb) = io.params();
            Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, g: io.geom(filters, 2) }
        }
        Layer::MaxPool2d => Op::MaxPool2dBackward { gy, argmax: io.aux(), gx: gx?, shape: s },
        Layer::AvgPool2d => Op::AvgPool2dBackward { gy, gx: gx?, shape: s },
        Layer::Activation(act) => Op::ActivationBackward { act, y, gy, gx: gx?, per: s.len() },
        Layer::Dropout(_) => Op::DropoutBackward { gy, mask: io.aux(), gx: gx?, per: s.len() },
        Layer::Flatten => return None,
    })
}
