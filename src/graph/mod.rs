//! Turns a model into a [`Plan`]: every buffer with its size, and the ops of a training step and
//! of an evaluation step. A backend allocates the buffers once and runs the ops.

mod build;
mod fuse;
mod layers;
mod op;

pub use build::{build, DataSpec, PlanOptions, Target, MAX_PIXEL_CLASSES};
pub use fuse::{fuse, no_loss_layer, no_step_in_gradient, Fusable, Fused, Fusion};
pub use layers::LayerIo;
pub use op::{slot, BufDesc, BufId, ConvGeom, Dtype, Op, OpKind, ParamSet, Step};

use crate::model::ParamSpec;

/// A trainable tensor's buffers: value, gradient, optimiser state.
#[derive(Clone, Debug)]
pub struct PlanParam {
    pub spec: ParamSpec,
    pub value: BufId,
    pub grad: BufId,
    pub state: Vec<BufId>,
}

/// One split's data as it sits on the backend: u8 samples, u8 labels or masks, and the u32 order
/// in which its samples are visited (written once per epoch).
#[derive(Clone, Copy, Debug)]
pub struct DataBufs {
    pub x: BufId,
    pub y: BufId,
    pub index: BufId,
    /// Samples stored; with mirroring, the index list is twice as long.
    pub n: usize,
    pub index_len: usize,
}

/// Ops of one training step, in phases, so that tests can run the middle of a step on their own data.
#[derive(Clone, Debug, Default)]
pub struct TrainOps {
    pub gather: Vec<Op>,
    pub forward: Vec<Op>,
    pub loss: Vec<Op>,
    pub backward: Vec<Op>,
    pub update: Vec<Op>,
}

impl TrainOps {
    pub fn all(&self) -> impl Iterator<Item = &Op> {
        self.gather.iter().chain(&self.forward).chain(&self.loss).chain(&self.backward).chain(&self.update)
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub buffers: Vec<BufDesc>,
    /// Largest batch a step may have.
    pub batch: usize,
    /// `[batch, input]` and `[batch, target]` f32, filled by the gather ops.
    pub input: BufId,
    pub target: BufId,
    /// `[batch, output]`: logits, before the final softmax or sigmoid.
    pub logits: BufId,
    /// `[batch, output]`: the final softmax or sigmoid.
    pub probs: BufId,
    /// Gradient with respect to the input, when [`PlanOptions::input_grad`] asked for it.
    pub input_grad: Option<BufId>,
    pub params: Vec<PlanParam>,
    /// The running statistics of the batch normalisations ([`crate::model::Model::running`]),
    /// which the test pass reads and each training step moves: kept, not trained.
    pub running: Vec<(ParamSpec, BufId)>,
    pub train_data: DataBufs,
    pub test_data: DataBufs,
    /// [`slot::LEN`] f32 each.
    pub train_metrics: BufId,
    pub test_metrics: BufId,
    /// `[classes, classes]` counts of the test pass (classification only).
    pub confusion: Option<BufId>,
    pub train: TrainOps,
    /// The ops of a test step of up to `eval_batch` samples, a multiple of `batch` (its metrics
    /// count each `batch` samples as one batch, as a pass in training-size steps would), with
    /// buffers of its own where it is larger.
    pub eval: Vec<Op>,
    pub eval_batch: usize,
    /// `[eval_batch, output]`: a test step's outputs.
    pub eval_probs: BufId,
}
