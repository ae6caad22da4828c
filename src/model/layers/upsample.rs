//! Nearest 2x upsampling, `[c, h, w] -> [c, 2h, 2w]`: each value copied to a 2x2 block
//! (PyTorch's `nn.Upsample(scale_factor=2, mode="nearest")`).

use super::Kind;
use crate::error::Result;
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Upsample2d;

impl Upsample2d {
    fn output(input: Shape) -> Shape {
        Shape::new(input.c, 2 * input.h, 2 * input.w)
    }
}

impl Kind for Upsample2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("UpSampling2D", "up_sampling2d")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        Ok(Self::output(input))
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        Some(Op::Upsample2d { x: io.x, y: io.y, shape: Self::output(io.s) })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        Some(Op::Upsample2dBackward { gy: io.gy?, gx: io.gx?, shape: Self::output(io.s) })
    }
}
