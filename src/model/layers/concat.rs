//! Two values of one height and width joined along the channels: `[c1, h, w]`, `[c2, h, w]` ->
//! `[c1 + c2, h, w]` (PyTorch's `torch.cat([a, b], dim=1)`); flat values join end to end.

use super::Kind;
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Concat;

impl Kind for Concat {
    fn name(&self) -> (&'static str, &'static str) {
        ("Concatenate", "concatenate")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.output_shape_of(&[input])
    }
    fn output_shape_of(&self, inputs: &[Shape]) -> Result<Shape> {
        match *inputs {
            [a, b] if (a.h, a.w) == (b.h, b.w) => Ok(Shape::new(a.c + b.c, a.h, a.w)),
            [a, b] => Err(Error::Model(format!(
                "the inputs must be of one height and width to join along the channels, got {a} and {b}"
            ))),
            _ => Err(Error::Model(format!("concat takes two inputs, got {}", inputs.len()))),
        }
    }
    fn forward(&self, io: &LayerIo, _: bool, _: u32) -> Option<Op> {
        let (b, sb) = io.second.expect("a concatenation has two inputs");
        Some(Op::Concat { a: io.x, b, y: io.y, per_a: io.s.len(), per_b: sb.len() })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        let (_, sb) = io.second.expect("a concatenation has two inputs");
        let (ga, gb) = (io.gx, io.gx2);
        (ga.is_some() || gb.is_some()).then_some(Op::ConcatBackward {
            gy: io.gy?,
            ga,
            gb,
            per_a: io.s.len(),
            per_b: sb.len(),
        })
    }
}
