//! The tasks: each a built-in model, its data and its training defaults (the report's, and the
//! U-Net's on the report's Warwick data), and the report's variants of its networks.

use crate::graph::Target;
use crate::model::builtin::Builtin;
use crate::model::{Act, Conv2d, Conv2dTranspose, Dense, Dropout, Layer, Model, Node, Shape};
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
    /// A U-Net (the built-in model warwick-unet) on the Warwick gland images, with flips.
    WarwickUnet,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::MnistMlp => "mnist-mlp",
            Task::MnistCnn => "mnist-cnn",
            Task::Warwick => "warwick",
            Task::WarwickUnet => "warwick-unet",
        }
    }
    /// Whether it segments the Warwick images (else it classifies MNIST digits).
    pub fn segments(self) -> bool {
        matches!(self, Task::Warwick | Task::WarwickUnet)
    }
    /// The metric reported besides the loss.
    pub fn metric(self) -> &'static str {
        if self.segments() {
            "dice"
        } else {
            "acc"
        }
    }
    /// What an image's side must be a multiple of: 2 to the number of poolings.
    pub fn side_multiple(self) -> u32 {
        match self {
            Task::WarwickUnet => 8,
            _ => 4,
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
    /// Train on every image and its left-right mirror image.
    pub hflip: bool,
}

pub fn defaults(task: Task) -> Defaults {
    let variant = |activation| Variant { activation, dropout: 0.0, l2: 0.0, act_after_pool: false };
    match task {
        Task::MnistMlp => Defaults {
            variant: variant(Act::Sigmoid),
            optimizer: Optimizer::Sgd { lr: 0.25, momentum: 0.0 },
            epochs: 25,
            batch: 100,
            hflip: false,
        },
        Task::MnistCnn => Defaults {
            variant: variant(Act::Relu),
            optimizer: Optimizer::Sgd { lr: 0.25, momentum: 0.0 },
            epochs: 6,
            batch: 100,
            hflip: false,
        },
        Task::Warwick | Task::WarwickUnet => Defaults {
            variant: variant(Act::Relu),
            optimizer: Optimizer::adam(1e-3),
            epochs: 250,
            batch: 5,
            hflip: task == Task::WarwickUnet,
        },
    }
}

/// The task's built-in model.
pub fn builtin(task: Task) -> &'static Builtin {
    let name = match task {
        Task::MnistMlp => "mnist-mlp",
        Task::MnistCnn => "mnist-cnn",
        Task::Warwick => "warwick-fcn",
        Task::WarwickUnet => "warwick-unet",
    };
    Builtin::get(name).expect("every task has a built-in model")
}

/// The task's built-in network in the variant `v`, for samples of `input` shape.
pub fn model(task: Task, v: Variant, input: Shape) -> Model {
    vary(task, builtin(task).model(), v, input)
}

/// `m` with the variant's changes: every hidden activation `v.activation`, every weight's L2
/// factor `v.l2`, dropout where the report puts it (before a classifier's last dense layer,
/// after every hidden activation of the FCN), and the CNN's activations after its poolings.
pub fn vary(task: Task, mut m: Model, v: Variant, input: Shape) -> Model {
    m.input = input;
    let last = m.layers.len() - 1;
    for node in &mut m.layers[..last] {
        match &mut node.layer {
            Layer::Activation(a) => *a = v.activation,
            Layer::Dense(Dense { l2, .. })
            | Layer::Conv2d(Conv2d { l2, .. })
            | Layer::Conv2dTranspose(Conv2dTranspose { l2, .. }) => *l2 = v.l2,
            _ => {}
        }
    }
    if let Some(Node { layer: Layer::Dense(Dense { l2, .. }) | Layer::Conv2d(Conv2d { l2, .. }), .. }) =
        m.layers.last_mut()
    {
        *l2 = v.l2;
    }
    // (A graph's activations feed other layers too: it keeps them where they are.)
    if v.act_after_pool && m.layers.iter().all(|n| n.inputs.is_empty()) {
        for i in 1..m.layers.len() {
            if matches!(m.layers[i - 1].layer, Layer::Activation(_)) && m.layers[i].layer == Layer::MaxPool2d {
                m.layers.swap(i - 1, i);
            }
        }
    }
    if v.dropout > 0.0 {
        let drop = || Node::from(Layer::Dropout(Dropout { rate: v.dropout }));
        let hidden = |n: &Node| matches!(n.layer, Layer::Activation(_));
        match task {
            Task::Warwick | Task::WarwickUnet => {
                let at: Vec<usize> = (0..last).filter(|&i| hidden(&m.layers[i])).collect();
                for i in at.into_iter().rev() {
                    insert(&mut m, i + 1, drop());
                }
            }
            Task::MnistMlp | Task::MnistCnn => {
                if let Some(i) = m.layers.iter().rposition(|n| matches!(n.layer, Layer::Dense(_))) {
                    insert(&mut m, i, drop());
                }
            }
        }
    }
    m
}

/// Puts `node` at layer `at`, between layer `at - 1` and the layers that read its output,
/// which then read the new layer's.
fn insert(m: &mut Model, at: usize, node: Node) {
    for later in &mut m.layers[at..] {
        later.inputs.iter_mut().filter(|j| **j >= at).for_each(|j| *j += 1);
    }
    m.layers.insert(at, node);
}

/// The task's network for samples of `input` shape and the data's `target`: a classifier gets
/// one output unit per class, a segmenter of classes one output channel per class and a
/// softmax over them.
pub fn model_for(task: Task, v: Variant, input: Shape, target: Target) -> Model {
    let mut m = model(task, v, input);
    match target {
        Target::Classes(k) => {
            if let Some(Layer::Dense(Dense { units, .. })) =
                m.layers.iter_mut().map(|n| &mut n.layer).rev().find(|l| matches!(l, Layer::Dense(_)))
            {
                *units = k;
            }
        }
        Target::Segments(k) => {
            if let Some(Layer::Conv2d(Conv2d { filters, .. })) =
                m.layers.iter_mut().map(|n| &mut n.layer).rev().find(|l| matches!(l, Layer::Conv2d(_)))
            {
                *filters = k;
            }
            if let Some(last) = m.layers.last_mut() {
                last.layer = Layer::Activation(Act::Softmax);
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
        Task::Warwick | Task::WarwickUnet => Shape::new(3, 128, 128),
    }
}
