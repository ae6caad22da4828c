//! Two values of one shape added (PyTorch's `a + b`): a residual connection.

use super::Kind;
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Add;

impl Kind for Add {
    fn name(&self) -> (&'static str, &'static str) {
        ("Add", "add")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.output_shape_of(&[input])
    }
    fn output_shape_of(&self, inputs: &[Shape]) -> Result<Shape> {
        match *inputs {
            [a, b] if a == b => Ok(a),
            [a, b] => Err(Error::Model(format!("the inputs must be of one shape to add, got {a} and {b}"))),
            _ => Err(Error::Model(format!("add takes two inputs, got {}", inputs.len()))),
        }
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (b, _) = io.second.expect("an addition has two inputs");
        Some(Op::Sum { a: io.x, b, y: io.y, per: io.s.len() })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (ga, gb) = (io.gx, io.gx2);
        (ga.is_some() || gb.is_some()).then_some(Op::SumBackward { gy: io.gy?, ga, gb, per: io.s.len() })
    }
}
