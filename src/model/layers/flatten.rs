//! `[c, h, w] -> [c·h·w]`: the same buffer, seen flat; no op either way.

use super::Kind;
use crate::error::Result;
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatten;

impl Kind for Flatten {
    fn name(&self) -> (&'static str, &'static str) {
        ("Flatten", "flatten")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        Ok(Shape::flat(input.len()))
    }
    fn forward(&self, _: &LayerIo, _: bool, _: u32) -> Option<Op> {
        None
    }
    fn backward(&self, _: &LayerIo) -> Option<Op> {
        None
    }
}
