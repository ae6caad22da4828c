//! `[n_in] -> [units]`: `y = x·wᵀ + b`, weight `[units, n_in]` (PyTorch's `nn.Linear`).

use super::{Kind, Weights};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::{Init, Shape};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Dense {
    pub units: usize,
    pub init: Init,
    /// L2 factor on the weight (Keras `l2(λ)`: `λ·Σw²` added to the loss).
    pub l2: f32,
}

impl Kind for Dense {
    fn name(&self) -> (&'static str, &'static str) {
        ("Dense", "dense")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        if !input.is_flat() {
            return Err(Error::Model(format!("Dense takes a flat input, got {input}: put a Flatten before it")));
        }
        Ok(Shape::flat(self.units))
    }
    fn weights(&self, input: Shape) -> Option<Weights> {
        Some(Weights { shape: vec![self.units, input.len()], init: self.init, l2: self.l2, bias: self.units })
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (w, b, _, _) = io.params();
        Some(Op::Dense { x: io.x, w, b, y: io.y, n_in: io.s.len(), n_out: self.units })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (w, _, gw, gb) = io.params();
        let LayerIo { x, gx, s, .. } = *io;
        Some(Op::DenseBackward { x, w, gy: io.gy?, gx, gw, gb, n_in: s.len(), n_out: self.units })
    }
}
