//! `[c, h, w] -> [filters, h, w]`: an odd square kernel, stride 1, 'same' zero padding; weight
//! `[filters, c, k, k]` (PyTorch's `nn.Conv2d(c, filters, k, padding=k // 2)`).

use super::{Kind, Weights};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::{Init, Shape};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Conv2d {
    pub filters: usize,
    pub kernel: usize,
    pub init: Init,
    /// L2 factor on the weight.
    pub l2: f32,
}

impl Kind for Conv2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("Conv2D", "conv2d")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        if self.kernel.is_multiple_of(2) {
            return Err(Error::Model(format!("Conv2D kernel must be odd for 'same' padding, got {}", self.kernel)));
        }
        Ok(Shape::new(self.filters, input.h, input.w))
    }
    fn weights(&self, input: Shape) -> Option<Weights> {
        let shape = vec![self.filters, input.c, self.kernel, self.kernel];
        Some(Weights { shape, init: self.init, l2: self.l2, bias: self.filters })
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (w, b, _, _) = io.params();
        Some(Op::Conv2d { x: io.x, w, b, y: io.y, g: io.geom(self.filters, self.kernel) })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (w, _, gw, gb) = io.params();
        let g = io.geom(self.filters, self.kernel);
        Some(Op::Conv2dBackward { x: io.x, w, gy: io.gy?, gx: io.gx, gw, gb, g })
    }
}
