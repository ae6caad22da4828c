//! An elementwise activation (softmax only as the last layer, where the loss runs it).

use super::Kind;
use crate::error::Result;
use crate::graph::{LayerIo, Op};
use crate::model::{Act, Shape};

impl Kind for Act {
    fn name(&self) -> (&'static str, &'static str) {
        ("Activation", "activation")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        Ok(input)
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        Some(Op::Activation { act: *self, x: io.x, y: io.y, per: io.s.len() })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        Some(Op::ActivationBackward { act: *self, y: io.y, gy: io.gy?, gx: io.gx?, per: io.s.len() })
    }
}
