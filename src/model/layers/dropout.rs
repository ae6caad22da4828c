//! Drops `rate` of the values while training and scales the rest by `1/(1-rate)`; the mask
//! comes from a counter hash of (seed, step, element), so every backend draws the same one.

use super::{AuxOf, Kind};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};
use crate::model::Shape;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Dropout {
    pub rate: f32,
}

impl Kind for Dropout {
    fn name(&self) -> (&'static str, &'static str) {
        ("Dropout", "dropout")
    }
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::Model(format!("dropout rate must be in [0, 1), got {}", self.rate)));
        }
        Ok(input)
    }
    fn forward(&self, io: &LayerIo, train: bool, seed: u32) -> Option<Op> {
        let rate = if train { self.rate } else { 0.0 };
        Some(Op::Dropout { x: io.x, y: io.y, mask: io.aux(), per: io.s.len(), rate, seed })
    }
    fn backward(&self, io: &LayerIo) -> Option<Op> {
        Some(Op::DropoutBackward { gy: io.gy?, mask: io.aux(), gx: io.gx?, per: io.s.len() })
    }
    fn aux(&self) -> Option<AuxOf> {
        Some(AuxOf::InputValues)
    }
}
