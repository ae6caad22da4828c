//! The report's networks and their default training settings.

use crate::graph::Target;
use crate::model::{Act, Conv2d, Conv2dTranspose, Dense, Dropout, Init, Layer, Model, Shape};
use crate::optim::Optimizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// 784-100-10 MLP on MNIST.
    MnistMlp,
    /// The report's three-convolution CNN on MNIST.
    MnistCnn,
    /// The report's fully convolutional network on the Warwick gland images.
    Warwick,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::MnistMlp => "mnist-mlp",
            Task::MnistCnn => "mnist-cnn",
            Task::Warwick => "warwick",
        }
    }
    /// The metric reported besides the loss.
    pub fn metric(self) -> &'static str {
        match self {
            Task::Warwick => "dice",
            _ => "acc",
        }
    }
}

/// Choices that change the network.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub activation: Act,
    /// Dropout rate: before the MLP's output layer, before the CNN's dense layer, after every
    /// hidden convolution's activation in the FCN. 0 for none.
    pub dropout: f32,
    /// L2 factor on every kernel.
    pub l2: f32,
    /// CNN only: apply the activation after the pooling layer instead of before it.
    pub act_after_pool: bool,
}

/// The report's settings for a task.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub variant: Variant,
    pub optimizer: Optimizer,
    pub epochs: usize,
    pub batch: usize,
}

pub fn defaults(task: Task) -> Defaults {
    let variant = |activation| Variant { activation, dropout: 0.0, l2: 0.0, act_after_pool: false };
    match task {
        Task::MnistMlp => Defaults {
            variant: variant(Act::Sigmoid),
            optimizer: Optimizer::Sgd { lr: 0.25, momentum: 0.0 },
            epochs: 25,
            batch: 100,
        },
        Task::MnistCnn => Defaults {
            variant: variant(Act::Relu),
            optimizer: Optimizer::Sgd { lr: 0.25, momentum: 0.0 },
            epochs: 6,
            batch: 100,
        },
        Task::Warwick => {
            Defaults { variant: variant(Act::Relu), optimizer: Optimizer::adam(1e-3), epochs: 250, batch: 5 }
        }
    }
}

/// The task's network for samples of `input` shape.
pub fn model(task: Task, v: Variant, input: Shape) -> Model {
    let glorot = Init::GlorotUniform;
    let act = Layer::Activation(v.activation);
    let mut layers = Vec::new();
    match task {
        Task::MnistMlp => {
            layers.push(Layer::Dense(Dense { units: 100, init: glorot, l2: v.l2 }));
            layers.push(act);
            if v.dropout > 0.0 {
                layers.push(Layer::Dropout(Dropout { rate: v.dropout }));
            }
            layers.push(Layer::Dense(Dense { units: 10, init: glorot, l2: v.l2 }));
            layers.push(Layer::Activation(Act::Softmax));
        }
        Task::MnistCnn => {
            let init = Init::RandomNormal { stddev: 0.05 };
            for (i, filters) in [8, 16, 32].into_iter().enumerate() {
                layers.push(Layer::Conv2d(Conv2d { filters, kernel: 3, init, l2: v.l2 }));
                let pool = i < 2;
                if pool && v.act_after_pool {
                    layers.extend([Layer::MaxPool2d, act.clone()]);
                } else {
                    layers.push(act.clone());
                    if pool {
                        layers.push(Layer::MaxPool2d);
                    }
                }
            }
            layers.push(Layer::Flatten);
            if v.dropout > 0.0 {
                layers.push(Layer::Dropout(Dropout { rate: v.dropout }));
            }
            layers.push(Layer::Dense(Dense { units: 10, init, l2: v.l2 }));
            layers.push(Layer::Activation(Act::Softmax));
        }
        Task::Warwick => {
            let drop = |layers: &mut Vec<Layer>| {
                if v.dropout > 0.0 {
                    layers.push(Layer::Dropout(Dropout { rate: v.dropout }));
                }
            };
            for (filters, pool) in [(8, true), (16, true), (32, false)] {
                layers.extend([Layer::Conv2d(Conv2d { filters, kernel: 3, init: glorot, l2: v.l2 }), act.clone()]);
                drop(&mut layers);
                if pool {
                    layers.push(Layer::MaxPool2d);
                }
            }
            for filters in [16, 8] {
                layers
                    .extend([Layer::Conv2dTranspose(Conv2dTranspose { filters, init: glorot, l2: v.l2 }), act.clone()]);
                drop(&mut layers);
            }
            layers.extend([
                Layer::Conv2d(Conv2d { filters: 1, kernel: 1, init: glorot, l2: v.l2 }),
                Layer::Activation(Act::Sigmoid),
            ]);
        }
    }
    Model { input, layers }
}

/// The task's network for samples of `input` shape and the data's `target`: a classifier gets
/// one output unit per class, a segmenter of classes one output channel per class and a
/// softmax over them.
pub fn model_for(task: Task, v: Variant, input: Shape, target: Target) -> Model {
    let mut m = model(task, v, input);
    match target {
        Target::Classes(k) => {
            if let Some(Layer::Dense(Dense { units, .. })) =
                m.layers.iter_mut().rev().find(|l| matches!(l, Layer::Dense(_)))
            {
                *units = k;
            }
        }
        Target::Segments(k) => {
            if let Some(Layer::Conv2d(Conv2d { filters, .. })) =
                m.layers.iter_mut().rev().find(|l| matches!(l, Layer::Conv2d(_)))
            {
                *filters = k;
            }
            if let Some(last) = m.layers.last_mut() {
                *last = Layer::Activation(Act::Softmax);
            }
        }
        Target::Mask => {}
    }
    m
}

/// The shape of one sample of the task's data at the report's sizes.
pub fn input_shape(task: Task) -> Shape {
    match task {
        Task::MnistMlp => Shape::flat(784),
        Task::MnistCnn => Shape::new(1, 28, 28),
        Task::Warwick => Shape::new(3, 128, 128),
    }
}
