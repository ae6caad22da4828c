//! `[c, h, w] -> [filters, 2h, 2w]`: kernel 2, stride 2; weight `[c, filters, 2, 2]` (PyTorch's
//! `nn.ConvTranspose2d(c, filters, 2, stride=2)`).

use super::{Kind, Weights};
use crate::error::Result;
use crate::graph::{LayerIo, Op};
use crate::model::{Init, Shape};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Conv2dTranspose {
    pub filters: usize,
    pub init: Init,
    /// L2 factor on the weight.
    pub l2: f32,
}

impl Kind for Conv2dTranspose {
    fn name(&self) -> (&'static str, &'static str) {
        ("Conv2DTranspose", "conv2d_transpose")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        Ok(Shape::new(self.filters, 2 * input.h, 2 * input.w))
    }
    fn weights(&self, input: Shape) -> Option<Weights> {
        Some(Weights { shape: vec![input.c, self.filters, 2, 2], init: self.init, l2: self.l2, bias: self.filters })
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (w, b, _, _) = io.params();
        Some(Op::ConvTranspose2d { x: io.x, w, b, y: io.y, g: io.geom(self.filters, 2) })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (w, _, gw, gb) = io.params();
        let g = io.geom(self.filters, 2);
        Some(Op::ConvTranspose2dBackward { x: io.x, w, gy: io.gy?, gx: io.gx, gw, gb, g })
    }
}
