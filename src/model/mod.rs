//! Sequential model specs: layers, shape inference, parameter counts and the Keras-style summary.

mod init;
mod layers;
mod summary;

pub use init::{init_params, Init};
pub use layers::{AuxOf, AvgPool2d, Conv2d, Conv2dTranspose, Dense, Dropout, Flatten, Kind, Layer, MaxPool2d, Weights};
pub use summary::summary;

use crate::error::{Error, Result};

/// Shape of one sample, channels first: `[c, h, w]`. A flat vector of `n` is `[n, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

#[allow(clippy::len_without_is_empty)]
impl Shape {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        Shape { c, h, w }
    }
    pub fn flat(n: usize) -> Self {
        Shape { c: n, h: 1, w: 1 }
    }
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_flat() {
            write!(f, "(None, {})", self.c)
        } else {
            write!(f, "(None, {}, {}, {})", self.c, self.h, self.w)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

impl Act {
    pub fn name(self) -> &'static str {
        match self {
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Softmax => "softmax",
        }
    }
}

/// A sequential model: an input shape and its layers in order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Model {
    pub input: Shape,
    pub layers: Vec<Layer>,
}

/// One trainable tensor: its checkpoint key (`"{layer index}.weight"` / `.bias`) and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub key: String,
    pub shape: Vec<usize>,
    pub layer: usize,
    pub init: Init,
    /// L2 factor on this tensor (kernels only; biases carry none).
    pub l2: f32,
}

#[allow(clippy::len_without_is_empty)]
impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Model {
    /// The input shape of every layer followed by the model's output shape.
    pub fn shapes(&self) -> Result<Vec<Shape>> {
        let mut shapes = vec![self.input];
        for (i, layer) in self.layers.iter().enumerate() {
            let s = layer
                .kind()
                .output_shape(shapes[i])
                .map_err(|e| Error::Model(format!("layer {i} ({}): {e}", layer.type_name())))?;
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// Every parameter in layer order, weight before bias.
    pub fn params(&self) -> Result<Vec<ParamSpec>> {
        let shapes = self.shapes()?;
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(Weights { shape, init, l2, bias }) = layer.kind().weights(shapes[i]) {
                out.push(ParamSpec { key: format!("{i}.weight"), shape, layer: i, init, l2 });
                out.push(ParamSpec {
                    key: format!("{i}.bias"),
                    shape: vec![bias],
                    layer: i,
                    init: Init::Zeros,
                    l2: 0.0,
                });
            }
        }
        Ok(out)
    }

    pub fn param_count(&self) -> Result<usize> {
        Ok(self.params()?.iter().map(ParamSpec::len).sum())
    }
}
