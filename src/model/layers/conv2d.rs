//! `[c, h, w] -> [filters, h', w']`: a square `k x k` kernel over the input with `pad` zeros on
//! each side, at stride 1 or 2 (`h' = (h + 2·pad - k) / stride + 1`); weight `[filters, c, k, k]`
//! (PyTorch's `nn.Conv2d(c, filters, k, stride=stride, padding=pad)`).

use super::{Kind, Weights};
use crate::error::{Error, Result};
use crate::graph::{ConvGeom, LayerIo, Op};
use crate::model::{Init, Shape};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Conv2d {
    pub filters: usize,
    pub kernel: usize,
    /// Zeros on each side.
    pub pad: usize,
    pub stride: usize,
    pub init: Init,
    /// L2 factor on the weight.
    pub l2: f32,
}

impl Conv2d {
    fn geom(&self, s: Shape) -> ConvGeom {
        ConvGeom { pad: self.pad, stride: self.stride, ..ConvGeom::same(s.c, self.filters, s.h, s.w, self.kernel) }
    }
}

impl Kind for Conv2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("Conv2D", "conv2d")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        let (k, pad) = (self.kernel, self.pad);
        if input.h + 2 * pad < k || input.w + 2 * pad < k {
            let padded = format!("{}x{}", input.h + 2 * pad, input.w + 2 * pad);
            return Err(Error::Model(format!("kernel_size {k} does not fit the {padded} padded input {input}")));
        }
        let (h, w) = self.geom(input).out();
        Ok(Shape::new(self.filters, h, w))
    }
    fn weights(&self, input: Shape) -> Option<Weights> {
        let shape = vec![self.filters, input.c, self.kernel, self.kernel];
        Some(Weights { shape, init: self.init, l2: self.l2, bias: self.filters })
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (w, b, _, _) = io.params();
        Some(Op::Conv2d { x: io.x, w, b, y: io.y, g: self.geom(io.s) })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (w, _, gw, gb) = io.params();
        let g = self.geom(io.s);
        Some(Op::Conv2dBackward { x: io.x, w, gy: io.gy?, gx: io.gx, gw, gb, g })
    }
}
