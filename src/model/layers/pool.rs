//! 2x2 poolings, stride 2, 'valid': `[c, h, w] -> [c, h/2, w/2]`, an odd last row or column
//! dropped. Max keeps each window's first maximum (and its index, for backward); average is
//! `((a + b) + (c + d))·0.25` (PyTorch's `nn.MaxPool2d(2)`, `nn.AvgPool2d(2)`).

use super::{AuxOf, Kind};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPool2d;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AvgPool2d;

fn halved(name: &str, input: Shape) -> Result<Shape> {
    if input.h < 2 || input.w < 2 {
        return Err(Error::Model(format!("{name} needs at least 2x2, got {input}")));
    }
    Ok(Shape::new(input.c, input.h / 2, input.w / 2))
}

impl Kind for MaxPool2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("MaxPooling2D", "max_pooling2d")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        halved(self.name().0, input)
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        Some(Op::MaxPool2d { x: io.x, y: io.y, argmax: io.aux(), shape: io.s })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        Some(Op::MaxPool2dBackward { gy: io.gy?, argmax: io.aux(), gx: io.gx?, shape: io.s })
    }
    fn aux(&self) -> Option<AuxOf> {
        Some(AuxOf::OutputIndices)
    }
}

impl Kind for AvgPool2d {
    fn name(&self) -> (&'static str, &'static str) {
        ("AveragePooling2D", "average_pooling2d")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        halved(self.name().0, input)
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        Some(Op::AvgPool2d { x: io.x, y: io.y, shape: io.s })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        Some(Op::AvgPool2dBackward { gy: io.gy?, gx: io.gx?, shape: io.s })
    }
}
