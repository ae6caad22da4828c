//! Sequential model specs: layers, shape inference, parameter counts and the Keras-style summary.

mod init;
mod summary;

pub use init::{init_params, Init};
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

/// One layer of a sequential model. Kernels may carry an L2 penalty `l2 * Σw²` (Keras `l2(λ)`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Layer {
    /// `[n_in] -> [units]`; weight `[units, n_in]`.
    Dense {
        units: usize,
        init: Init,
        l2: f32,
    },
    /// Odd square kernel, stride 1, 'same' zero padding; weight `[filters, c_in, k, k]`.
    Conv2d {
        filters: usize,
        kernel: usize,
        init: Init,
        l2: f32,
    },
    /// Kernel 2, stride 2: `[c, h, w] -> [filters, 2h, 2w]`; weight `[c_in, filters, 2, 2]`.
    Conv2dTranspose {
        filters: usize,
        init: Init,
        l2: f32,
    },
    /// 2x2, stride 2, 'valid': `[c, h, w] -> [c, h/2, w/2]` (an odd last row/column is dropped).
    MaxPool2d,
    /// 2x2 mean, stride 2, 'valid': `[c, h, w] -> [c, h/2, w/2]` (PyTorch's `AvgPool2d(2)`).
    AvgPool2d,
    Activation(Act),
    Flatten,
    /// Drops `rate` of the units while training and scales the rest by `1/(1-rate)`.
    Dropout(f32),
}

impl Layer {
    pub fn type_name(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "Dense",
            Layer::Conv2d { .. } => "Conv2D",
            Layer::Conv2dTranspose { .. } => "Conv2DTranspose",
            Layer::MaxPool2d => "MaxPooling2D",
            Layer::AvgPool2d => "AveragePooling2D",
            Layer::Activation(_) => "Activation",
            Layer::Flatten => "Flatten",
            Layer::Dropout(_) => "Dropout",
        }
    }

    /// The weight's shape (PyTorch layout) and the bias length, for layers with parameters.
    pub fn param_shapes(&self, input: Shape) -> Option<(Vec<usize>, usize)> {
        match *self {
            Layer::Dense { units, .. } => Some((vec![units, input.len()], units)),
            Layer::Conv2d { filters, kernel, .. } => Some((vec![filters, input.c, kernel, kernel], filters)),
            Layer::Conv2dTranspose { filters, .. } => Some((vec![input.c, filters, 2, 2], filters)),
            _ => None,
        }
    }

    /// The output shape for `input`, or why this layer cannot take it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape> {
        Ok(match *self {
            Layer::Dense { units, .. } => {
                if !input.is_flat() {
                    return Err(Error::Model(format!(
                        "Dense takes a flat input, got {input}: put a Flatten before it"
                    )));
                }
                Shape::flat(units)
            }
            Layer::Conv2d { filters, kernel, .. } => {
                if kernel % 2 == 0 || kernel == 0 {
                    return Err(Error::Model(format!("Conv2D kernel must be odd for 'same' padding, got {kernel}")));
                }
                Shape::new(filters, input.h, input.w)
            }
            Layer::Conv2dTranspose { filters, .. } => Shape::new(filters, 2 * input.h, 2 * input.w),
            Layer::MaxPool2d | Layer::AvgPool2d => {
                if input.h < 2 || input.w < 2 {
                    return Err(Error::Model(format!("{} needs at least 2x2, got {input}", self.type_name())));
                }
                Shape::new(input.c, input.h / 2, input.w / 2)
            }
            Layer::Flatten => Shape::flat(input.len()),
            Layer::Activation(_) => input,
            Layer::Dropout(rate) => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::Model(format!("dropout rate must be in [0, 1), got {rate}")));
                }
                input
            }
        })
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
            if let Some((w, b)) = layer.param_shapes(shapes[i]) {
                let (init, l2) = match *layer {
                    Layer::Dense { init, l2, .. }
                    | Layer::Conv2d { init, l2, .. }
                    | Layer::Conv2dTranspose { init, l2, .. } => (init, l2),
                    _ => unreachable!("only layers with parameters have param shapes"),
                };
                out.push(ParamSpec { key: format!("{i}.weight"), shape: w, layer: i, init, l2 });
                out.push(ParamSpec { key: format!("{i}.bias"), shape: vec![b], layer: i, init: Init::Zeros, l2: 0.0 });
            }
        }
        Ok(out)
    }

    pub fn param_count(&self) -> Result<usize> {
        Ok(self.params()?.iter().map(ParamSpec::len).sum())
    }
}
