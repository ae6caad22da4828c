//! The layer kinds, one file each: its settings, the shape it puts out, its parameters (PyTorch
//! layout, initialiser, L2 factor) and its forward and backward plan ops. The checkpoint keys
//! of every kind are PyTorch's: `{layer name}.weight` and `.bias` (an unnamed layer's index).

mod activation;
mod add;
mod batch_norm;
mod concat;
mod conv2d;
mod conv_transpose;
mod dense;
mod dropout;
mod flatten;
mod pool;
mod upsample;

pub use add::Add;
pub use batch_norm::BatchNorm2d;
pub use concat::Concat;
pub use conv2d::Conv2d;
pub use conv_transpose::Conv2dTranspose;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use pool::{AvgPool2d, MaxPool2d};
pub use upsample::Upsample2d;

use super::{Act, Init, Shape};
use crate::error::{Error, Result};
use crate::graph::{LayerIo, Op};

/// A layer's weight (its shape in PyTorch's layout, initialiser and L2 factor) and bias length.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub shape: Vec<usize>,
    pub init: Init,
    pub l2: f32,
    pub bias: usize,
}

/// What every layer kind says about itself.
pub trait Kind {
    /// Keras' class name, and the snake-case name its summary rows take.
    fn name(&self) -> (&'static str, &'static str);
    /// The output shape for `input`, or why this kind cannot take it.
    fn output_shape(&self, input: Shape) -> Result<Shape>;
    /// The output shape for the values it reads: one, but for the kinds that join branches.
    fn output_shape_of(&self, inputs: &[Shape]) -> Result<Shape> {
        match inputs {
            [input] => self.output_shape(*input),
            _ => Err(Error::Model(format!("{} takes one input, got {}", self.name().1, inputs.len()))),
        }
    }
    /// Its weights and bias for `input`, if it has any.
    fn weights(&self, _input: Shape) -> Option<Weights> {
        None
    }
    /// Its forward op (none where its output is its input's buffer). Outside training
    /// (`train` false) a dropout keeps every value; `seed` seeds its mask.
    fn forward(&self, io: &LayerIo, train: bool, seed: u32) -> Option<Op>;
    /// Its backward op: its parameters' gradients and, where wanted, its input's (none where
    /// there is nothing to compute).
    fn backward(&self, io: &LayerIo) -> Option<Op>;
    /// Whether it keeps a buffer of its own between forward and backward (a pooling's argmax,
    /// a dropout's mask, a batch normalisation's statistics).
    fn aux(&self) -> Option<AuxOf> {
        None
    }
    /// The channels of the running statistics it keeps (batch normalisation), if any.
    fn running(&self, _input: Shape) -> Option<usize> {
        None
    }
}

/// Which shape a layer's own buffer takes, and its element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuxOf {
    /// u32 indices, one per output value.
    OutputIndices,
    /// f32 values, one per input value.
    InputValues,
    /// f32 values, two per channel of the input, for the whole batch.
    ChannelPairs,
}

/// One layer of a sequential model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Layer {
    Dense(Dense),
    Conv2d(Conv2d),
    Conv2dTranspose(Conv2dTranspose),
    MaxPool2d,
    AvgPool2d,
    Activation(Act),
    Flatten,
    Dropout(Dropout),
    Concat,
    BatchNorm2d(BatchNorm2d),
    Add,
    Upsample2d,
}

impl Layer {
    pub fn kind(&self) -> &dyn Kind {
        match self {
            Layer::Dense(k) => k,
            Layer::Conv2d(k) => k,
            Layer::Conv2dTranspose(k) => k,
            Layer::MaxPool2d => &MaxPool2d,
            Layer::AvgPool2d => &AvgPool2d,
            Layer::Activation(k) => k,
            Layer::Flatten => &Flatten,
            Layer::Dropout(k) => k,
            Layer::Concat => &Concat,
            Layer::BatchNorm2d(k) => k,
            Layer::Add => &Add,
            Layer::Upsample2d => &Upsample2d,
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.kind().name().0
    }
}
