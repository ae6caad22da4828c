//! Models: layers in order, each reading the layer before it or named earlier values (a graph),
//! with shape inference, parameters and running statistics, model files, the built-in models,
//! the Keras-style summary and the PyTorch twin.

pub mod builtin;
pub mod file;
mod init;
mod layers;
mod summary;
pub mod torch;

pub use init::{init_params, Init};
pub use layers::{
    Add, AuxOf, AvgPool2d, BatchNorm2d, Concat, Conv2d, Conv2dTranspose, Dense, Dropout, Flatten, Kind, Layer,
    MaxPool2d, Upsample2d, Weights,
};
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
    /// PyTorch's `F.leaky_relu` at its default slope: `x` above 0, else `0.01·x`.
    #[serde(rename = "leaky_relu")]
    LeakyRelu,
    Softmax,
}

/// The slope of [`Act::LeakyRelu`] below 0.
pub const LEAKY_SLOPE: f32 = 0.01;

impl Act {
    pub fn name(self) -> &'static str {
        match self {
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::LeakyRelu => "leaky_relu",
            Act::Softmax => "softmax",
        }
    }
}

/// A model: an input shape and its layers in order (see [`Node::inputs`] for graphs).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Model {
    pub input: Shape,
    pub layers: Vec<Node>,
}

/// A layer of a model, its name, which its parameters' keys take (`{name}.weight`; an unnamed
/// layer's keys take its index, as in `torch.nn.Sequential`), and what it reads.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Node {
    pub name: Option<String>,
    pub layer: Layer,
    /// The values it takes, as node numbers: 0 is the model's input, `j + 1` layer `j`'s
    /// output. Empty: the output of the layer before it (or the input, for the first).
    pub inputs: Vec<usize>,
}

impl From<Layer> for Node {
    fn from(layer: Layer) -> Self {
        Node { name: None, layer, inputs: Vec::new() }
    }
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
    /// A model of unnamed layers.
    pub fn sequential(input: Shape, layers: Vec<Layer>) -> Self {
        Model { input, layers: layers.into_iter().map(Node::from).collect() }
    }

    /// The name of layer `i`'s parameters: its own, else its index.
    pub fn key(&self, i: usize) -> String {
        self.layers[i].name.clone().unwrap_or_else(|| i.to_string())
    }

    /// The nodes layer `i` reads (see [`Node::inputs`]).
    pub fn sources(&self, i: usize) -> Vec<usize> {
        match self.layers[i].inputs.is_empty() {
            true => vec![i],
            false => self.layers[i].inputs.clone(),
        }
    }

    /// The shape of every node: the model's input, then each layer's output.
    pub fn shapes(&self) -> Result<Vec<Shape>> {
        let mut shapes = vec![self.input];
        for (i, Node { layer, .. }) in self.layers.iter().enumerate() {
            let inputs: Vec<Shape> = self.sources(i).iter().map(|&s| shapes[s]).collect();
            let s = layer
                .kind()
                .output_shape_of(&inputs)
                .map_err(|e| Error::Model(format!("layer {i} ({}): {e}", layer.type_name())))?;
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// Every parameter in layer order, weight before bias.
    pub fn params(&self) -> Result<Vec<ParamSpec>> {
        let shapes = self.shapes()?;
        let mut out = Vec::new();
        for (i, Node { layer, .. }) in self.layers.iter().enumerate() {
            if let Some(Weights { shape, init, l2, bias }) = layer.kind().weights(shapes[self.sources(i)[0]]) {
                let key = self.key(i);
                out.push(ParamSpec { key: format!("{key}.weight"), shape, layer: i, init, l2 });
                out.push(ParamSpec {
                    key: format!("{key}.bias"),
                    shape: vec![bias],
                    layer: i,
                    init: Init::Zeros,
                    l2: 0.0,
                });
            }
        }
        Ok(out)
    }

    /// The running statistics of every batch normalisation, in layer order: each one's mean,
    /// variance and count of updates (`num_batches_tracked`, a scalar).
    pub fn running(&self) -> Result<Vec<ParamSpec>> {
        let shapes = self.shapes()?;
        let mut out = Vec::new();
        for (i, Node { layer, .. }) in self.layers.iter().enumerate() {
            if let Some(c) = layer.kind().running(shapes[self.sources(i)[0]]) {
                let key = self.key(i);
                let spec = |name: &str, shape: Vec<usize>, init| ParamSpec {
                    key: format!("{key}.{name}"),
                    shape,
                    layer: i,
                    init,
                    l2: 0.0,
                };
                out.push(spec("running_mean", vec![c], Init::Zeros));
                out.push(spec("running_var", vec![c], Init::Ones));
                out.push(spec("num_batches_tracked", vec![], Init::Zeros));
            }
        }
        Ok(out)
    }

    /// What a checkpoint holds: the parameters, then the running statistics.
    pub fn saved(&self) -> Result<Vec<ParamSpec>> {
        Ok([self.params()?, self.running()?].concat())
    }

    pub fn param_count(&self) -> Result<usize> {
        Ok(self.params()?.iter().map(ParamSpec::len).sum())
    }
}
