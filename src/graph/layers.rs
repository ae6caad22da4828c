//! What a layer's plan ops read and write (each kind's ops are in `model/layers/`).

use super::op::{BufId, ConvGeom};
use crate::model::Shape;

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
    /// A batch normalisation's running mean, variance and count.
    pub running: Option<[BufId; 3]>,
    /// A layer that joins two values: the second, its shape, and its gradient where wanted.
    pub second: Option<(BufId, Shape)>,
    pub gx2: Option<BufId>,
}

impl LayerIo {
    pub fn params(&self) -> (BufId, BufId, BufId, BufId) {
        self.params.expect("a layer with weights has parameters")
    }
    pub fn aux(&self) -> BufId {
        self.aux.expect("a pooling has its argmax, a dropout its mask")
    }
    pub fn geom(&self, c_out: usize, k: usize) -> ConvGeom {
        ConvGeom::same(self.s.c, c_out, self.s.h, self.s.w, k)
    }
}
