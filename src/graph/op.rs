//! The ops a plan is made of. Each op names the buffers it reads and writes; sizes per sample are
//! fixed when the plan is built, the number of samples `n` comes with each [`Step`].

use crate::model::{Act, Shape};

/// A buffer of the plan, by position in [`super::Plan::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct BufId(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Dtype {
    F32,
    U8,
    U32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BufDesc {
    pub name: String,
    pub len: usize,
    pub dtype: Dtype,
    /// The parameter set the buffer belongs to, if any.
    pub set: Option<ParamSet>,
}

/// Parameter values, their gradients, and each optimiser state. A plan adds the buffers of
/// every set in the same parameter order with the same lengths, so a backend may lay each set
/// out contiguously, all alike, and update every parameter in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ParamSet {
    Value,
    Grad,
    State(u8),
}

/// What changes from one step to the next: batch size, where the batch starts in the index list,
/// and the 1-based count of optimiser updates (Adam's `t`, and the dropout mask's counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub n: usize,
    pub offset: usize,
    pub t: u32,
}

/// Geometry of a convolution: input `[c_in, h, w]`, kernel `k`, `pad` zeros on each side and
/// stride `stride` (a transposed convolution's are fixed: 2x2, stride 2, and these unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConvGeom {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub pad: usize,
    pub stride: usize,
}

impl ConvGeom {
    /// Stride 1 and `k/2` zeros on each side: the output keeps the size of an odd kernel's input.
    pub const fn same(c_in: usize, c_out: usize, h: usize, w: usize, k: usize) -> Self {
        ConvGeom { c_in, c_out, h, w, k, pad: k / 2, stride: 1 }
    }
    /// Whether this is [`ConvGeom::same`]'s geometry of an odd kernel.
    pub fn is_same(&self) -> bool {
        self.k % 2 == 1 && self.pad == self.k / 2 && self.stride == 1
    }
    /// The output's rows and columns (PyTorch's: a last partial stride is dropped).
    pub fn out(&self) -> (usize, usize) {
        let side = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        (side(self.h), side(self.w))
    }
    /// The input pixel (`iy·w + ix`) under tap (`ky`, `kx`) of output pixel (`oy`, `ox`), if it
    /// is inside the image (outside, the zero padding).
    pub fn under(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let (iy, ix) = ((oy * self.stride + ky).checked_sub(self.pad)?, (ox * self.stride + kx).checked_sub(self.pad)?);
        (iy < self.h && ix < self.w).then_some(iy * self.w + ix)
    }
}

/// Slots of a metrics buffer, summed over an epoch and read once at its end.
pub mod slot {
    /// Σ over batches of (mean batch loss + L2 penalty) × n.
    pub const LOSS: usize = 0;
    /// Correct predictions (classification) or Σ of per-batch Dice (segmentation).
    pub const METRIC: usize = 1;
    pub const SAMPLES: usize = 2;
    pub const BATCHES: usize = 3;
    /// Σ y·p, Σ y, Σ p over every pixel seen: the whole-set Dice.
    pub const YP: usize = 4;
    pub const Y: usize = 5;
    pub const P: usize = 6;
    pub const LEN: usize = 7;
    /// Segmenting into classes: from `LEN` on, per class `c`, the pixels where both truth and the
    /// prediction (the most probable class) are `c`, where the truth is, where the prediction is.
    pub const CLASS_COUNTS: usize = LEN;

    /// Slots of a metrics buffer for `classes` classes of pixels (0: one binary mask, or labels).
    pub fn len(classes: usize) -> usize {
        LEN + 3 * classes
    }

    /// Adds a batch of `n` samples: `loss_sum` is its mean loss × n, `metric` its correct count
    /// or Dice.
    pub fn add_batch(metrics: &mut [f32], loss_sum: f64, metric: f64, n: usize) {
        metrics[LOSS] += loss_sum as f32;
        metrics[METRIC] += metric as f32;
        metrics[SAMPLES] += n as f32;
        metrics[BATCHES] += 1.0;
    }

    /// Adds a segmentation batch of `n` samples of `per` values: its summed loss, its Dice
    /// `2Σtp/(Σt + Σp)` (1 when both sums are 0) and those sums (`yp` = Σtp, `y` = Σt, `p` = Σp).
    pub fn add_segmentation_batch(metrics: &mut [f32], loss: f64, (yp, y, p): (f64, f64, f64), n: usize, per: usize) {
        let dice = if y + p > 0.0 { 2.0 * yp / (y + p) } else { 1.0 };
        add_batch(metrics, loss / per as f64, dice, n);
        metrics[YP] += yp as f32;
        metrics[Y] += y as f32;
        metrics[P] += p as f32;
    }

    /// The mean over classes of `2·both/(truth + predicted)` from per-class counts, leaving out
    /// classes neither holds (1 when every class is left out).
    pub fn mean_dice(counts: impl Iterator<Item = [f64; 3]>) -> f64 {
        let (sum, present) = counts
            .filter(|[_, t, p]| t + p > 0.0)
            .fold((0.0, 0usize), |(sum, k), [both, t, p]| (sum + 2.0 * both / (t + p), k + 1));
        if present == 0 {
            1.0
        } else {
            sum / present as f64
        }
    }

    /// Adds a batch of `n` samples segmented into classes: its summed loss over `per` pixels each,
    /// its mean per-class Dice ([`mean_dice`]) and each class's counts.
    pub fn add_class_batch(metrics: &mut [f32], loss: f64, counts: &[[u64; 3]], n: usize, per: usize) {
        let dice = mean_dice(counts.iter().map(|c| c.map(|v| v as f64)));
        add_batch(metrics, loss / per as f64, dice, n);
        for (slot, &v) in metrics[CLASS_COUNTS..].iter_mut().zip(counts.iter().flatten()) {
            *slot += v as f32;
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Op {
    /// `out[s] = f(data[j])` for `s < n`, `j = index[offset + s]`, u8 -> f32 with
    /// `f(v) = v·scale`, or `v > 0` when `binarize`. Indices `j ≥ mirrored` (when non-zero) take
    /// sample `j - mirrored` flipped left to right. `data: [N, shape]`, `out: [n, shape]`.
    Gather {
        data: BufId,
        index: BufId,
        out: BufId,
        shape: Shape,
        scale: f32,
        binarize: bool,
        mirrored: usize,
    },
    /// One-hot rows: `out[s, labels[index[offset + s]]] = 1`; `out: [n, classes]`.
    GatherOneHot {
        labels: BufId,
        index: BufId,
        out: BufId,
        classes: usize,
    },
    /// `y[n, o] = x[n, i]·w[o, i]ᵀ + b[o]`.
    Dense {
        x: BufId,
        w: BufId,
        b: BufId,
        y: BufId,
        n_in: usize,
        n_out: usize,
    },
    DenseBackward {
        x: BufId,
        w: BufId,
        gy: BufId,
        gx: Option<BufId>,
        gw: BufId,
        gb: BufId,
        n_in: usize,
        n_out: usize,
    },
    /// `y[n, c_out, h, w]` from `x[n, c_in, h, w]`, `w[c_out, c_in, k, k]`, stride 1, 'same'.
    Conv2d {
        x: BufId,
        w: BufId,
        b: BufId,
        y: BufId,
        g: ConvGeom,
    },
    Conv2dBackward {
        x: BufId,
        w: BufId,
        gy: BufId,
        gx: Option<BufId>,
        gw: BufId,
        gb: BufId,
        g: ConvGeom,
    },
    /// `y[n, c_out, 2h, 2w]` from `x[n, c_in, h, w]`, `w[c_in, c_out, 2, 2]`, stride 2.
    ConvTranspose2d {
        x: BufId,
        w: BufId,
        b: BufId,
        y: BufId,
        g: ConvGeom,
    },
    ConvTranspose2dBackward {
        x: BufId,
        w: BufId,
        gy: BufId,
        gx: Option<BufId>,
        gw: BufId,
        gb: BufId,
        g: ConvGeom,
    },
    /// `y[n, c, h/2, w/2]`; `argmax` holds the flat input index of each maximum for backward.
    MaxPool2d {
        x: BufId,
        y: BufId,
        argmax: BufId,
        shape: Shape,
    },
    MaxPool2dBackward {
        gy: BufId,
        argmax: BufId,
        gx: BufId,
        shape: Shape,
    },
    /// `y[n, c, h/2, w/2]`: the mean of each 2x2 window, `((a + b) + (c + d))·0.25`.
    AvgPool2d {
        x: BufId,
        y: BufId,
        shape: Shape,
    },
    /// `gx = gy/4` across each window (0 in a dropped odd last row or column).
    AvgPool2dBackward {
        gy: BufId,
        gx: BufId,
        shape: Shape,
    },
    /// `y[n] = [a[n], b[n]]`: each sample's `per_a` values of `a`, then its `per_b` of `b` (with
    /// channels first, a concatenation along the channels).
    Concat {
        a: BufId,
        b: BufId,
        y: BufId,
        per_a: usize,
        per_b: usize,
    },
    /// [`Op::Concat`]'s backward: `ga[n]` is `gy[n]`'s first `per_a` values, `gb[n]` the rest
    /// (each only where wanted).
    ConcatBackward {
        gy: BufId,
        ga: Option<BufId>,
        gb: Option<BufId>,
        per_a: usize,
        per_b: usize,
    },
    /// Nearest 2x upsampling to `y[n, c, h, w]` (`shape`, the output's: even sides) from
    /// `x[n, c, h/2, w/2]`: each value copied to its 2x2 block.
    Upsample2d {
        x: BufId,
        y: BufId,
        shape: Shape,
    },
    /// [`Op::Upsample2d`]'s backward: each block's gradients summed, `(a + b) + (c + d)`.
    Upsample2dBackward {
        gy: BufId,
        gx: BufId,
        shape: Shape,
    },
    /// [`Op::Sum`] as a layer's backward: `ga` and `gb` (each where wanted) take `gy`.
    SumBackward {
        gy: BufId,
        ga: Option<BufId>,
        gb: Option<BufId>,
        per: usize,
    },
    /// `y = a + b` over `[n, per]`: an `add` layer, and the gradient of a buffer that several
    /// layers read, from theirs.
    Sum {
        a: BufId,
        b: BufId,
        y: BufId,
        per: usize,
    },
    /// Batch normalisation of `x [n, c, hw]`. In training, each channel's mean `μ` and biased
    /// variance `σ²` over the batch's `n·hw` values, written to `stats` (`[μ; c]` then
    /// `[1/√(σ²+ε); c]`), and the running statistics moved toward them (`running`: mean `[c]`,
    /// variance `[c]` with the unbiased variance, and the count of updates `[1]`):
    /// `r ← (1 - momentum)·r + momentum·v`. Outside training, the running statistics stand in.
    /// `y = γ·(x - μ)/√(σ²+ε) + β`.
    BatchNorm {
        x: BufId,
        gamma: BufId,
        beta: BufId,
        y: BufId,
        stats: BufId,
        running: [BufId; 3],
        c: usize,
        hw: usize,
        train: bool,
        momentum: f32,
        eps: f32,
    },
    /// [`Op::BatchNorm`]'s backward in training, from its `stats`: with `x̂ = (x - μ)/√(σ²+ε)`
    /// and `m = n·hw`, `gβ = Σgy`, `gγ = Σgy·x̂` (per channel) and
    /// `gx = γ/√(σ²+ε)·(gy - (gβ + x̂·gγ)/m)`.
    BatchNormBackward {
        x: BufId,
        gamma: BufId,
        stats: BufId,
        gy: BufId,
        gx: Option<BufId>,
        ggamma: BufId,
        gbeta: BufId,
        c: usize,
        hw: usize,
    },
    /// Elementwise over `[n, per]`.
    Activation {
        act: Act,
        x: BufId,
        y: BufId,
        per: usize,
    },
    /// `gx` from the forward output `y` and `gy`.
    ActivationBackward {
        act: Act,
        y: BufId,
        gy: BufId,
        gx: BufId,
        per: usize,
    },
    /// `y = x·mask`, mask 0 or `1/(1-rate)` from the counter hash of (`seed`, step `t`, element).
    Dropout {
        x: BufId,
        y: BufId,
        mask: BufId,
        per: usize,
        rate: f32,
        seed: u32,
    },
    DropoutBackward {
        gy: BufId,
        mask: BufId,
        gx: BufId,
        per: usize,
    },
    /// Softmax + categorical cross-entropy on `logits[n, classes]`, mean over the batch: writes
    /// `probs`, the gradient `(p - t)/n` when asked, and adds loss and correct count to `metrics`.
    /// A step of more than `batch` samples counts as steps of `batch` (and a shorter last one).
    SoftmaxCrossEntropy {
        logits: BufId,
        target: BufId,
        probs: BufId,
        grad: Option<BufId>,
        metrics: BufId,
        classes: usize,
        batch: usize,
    },
    /// Sigmoid + BCE on `logits[n, per]`, mean over every element: writes `probs`, the gradient
    /// `(p - t)/(n·per)` when asked, and adds loss, Dice and its sums to `metrics`. A step of
    /// more than `batch` samples counts as steps of `batch`: each adds its own Dice.
    SigmoidBce {
        logits: BufId,
        target: BufId,
        probs: BufId,
        grad: Option<BufId>,
        metrics: BufId,
        per: usize,
        batch: usize,
    },
    /// Softmax over `classes` channels + cross-entropy at each pixel of `logits[n, classes, per]`
    /// against `target[n, per]` (class indices as f32), mean over every pixel: writes `probs`,
    /// the gradient `(p - onehot)/(n·per)` when asked, and adds loss, mean per-class Dice and
    /// per-class counts ([`slot::CLASS_COUNTS`]) to `metrics`, batch by batch as `SigmoidBce`.
    PixelSoftmaxCrossEntropy {
        logits: BufId,
        target: BufId,
        probs: BufId,
        grad: Option<BufId>,
        metrics: BufId,
        classes: usize,
        per: usize,
        batch: usize,
    },
    /// Adds `lambda·Σw²` (× n) to the loss slot and, when asked, `2·lambda·w` to `grad`.
    L2 {
        w: BufId,
        grad: Option<BufId>,
        metrics: BufId,
        lambda: f32,
        len: usize,
    },
    /// `counts[true·classes + predicted] += 1` over the batch.
    Confusion {
        probs: BufId,
        target: BufId,
        counts: BufId,
        classes: usize,
    },
    /// `w -= lr·g`.
    Sgd {
        w: BufId,
        g: BufId,
        lr: f32,
        len: usize,
    },
    /// Keras momentum: `v = m·v - lr·g; w += v`.
    Momentum {
        w: BufId,
        g: BufId,
        v: BufId,
        lr: f32,
        momentum: f32,
        len: usize,
    },
    /// Keras Adam: ε added to √v, bias correction folded into the step size.
    Adam {
        w: BufId,
        g: BufId,
        m: BufId,
        v: BufId,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        len: usize,
    },
}

/// What sort of work an op is, as the backends dispatch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A dense layer's, convolution's or transposed convolution's product, forward or backward.
    Product,
    /// A loss, a penalty or the confusion counts.
    Loss,
    /// An optimiser's update.
    Update,
    /// Gathers, poolings, activations and dropout.
    Elementwise,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Dense { .. }
            | Op::DenseBackward { .. }
            | Op::Conv2d { .. }
            | Op::Conv2dBackward { .. }
            | Op::ConvTranspose2d { .. }
            | Op::ConvTranspose2dBackward { .. } => OpKind::Product,
            Op::SoftmaxCrossEntropy { .. }
            | Op::SigmoidBce { .. }
            | Op::PixelSoftmaxCrossEntropy { .. }
            | Op::L2 { .. }
            | Op::Confusion { .. } => OpKind::Loss,
            Op::Sgd { .. } | Op::Momentum { .. } | Op::Adam { .. } => OpKind::Update,
            Op::Gather { .. }
            | Op::GatherOneHot { .. }
            | Op::MaxPool2d { .. }
            | Op::MaxPool2dBackward { .. }
            | Op::AvgPool2d { .. }
            | Op::AvgPool2dBackward { .. }
            | Op::Concat { .. }
            | Op::ConcatBackward { .. }
            | Op::BatchNorm { .. }
            | Op::BatchNormBackward { .. }
            | Op::Upsample2d { .. }
            | Op::Upsample2dBackward { .. }
            | Op::SumBackward { .. }
            | Op::Sum { .. }
            | Op::Activation { .. }
            | Op::ActivationBackward { .. }
            | Op::Dropout { .. }
            | Op::DropoutBackward { .. } => OpKind::Elementwise,
        }
    }

    /// Whether the op reads buffer `id`: as an input, or as an output it adds to.
    pub fn reads(&self, id: BufId) -> bool {
        match *self {
            Op::Gather { data, index, .. } => [data, index].contains(&id),
            Op::GatherOneHot { labels, index, .. } => [labels, index].contains(&id),
            Op::Dense { x, w, b, .. } | Op::Conv2d { x, w, b, .. } | Op::ConvTranspose2d { x, w, b, .. } => {
                [x, w, b].contains(&id)
            }
            Op::DenseBackward { x, w, gy, .. }
            | Op::Conv2dBackward { x, w, gy, .. }
            | Op::ConvTranspose2dBackward { x, w, gy, .. } => [x, w, gy].contains(&id),
            Op::MaxPool2d { x, .. } | Op::AvgPool2d { x, .. } | Op::Activation { x, .. } | Op::Dropout { x, .. } => {
                x == id
            }
            Op::AvgPool2dBackward { gy, .. }
            | Op::ConcatBackward { gy, .. }
            | Op::Upsample2dBackward { gy, .. }
            | Op::SumBackward { gy, .. } => gy == id,
            Op::Upsample2d { x, .. } => x == id,
            Op::Concat { a, b, .. } | Op::Sum { a, b, .. } => [a, b].contains(&id),
            Op::BatchNorm { x, gamma, beta, running, train, .. } => {
                [x, gamma, beta].contains(&id)
                    || (train && running.contains(&id))
                    || (!train && running[..2].contains(&id))
            }
            Op::BatchNormBackward { x, gamma, stats, gy, .. } => [x, gamma, stats, gy].contains(&id),
            Op::MaxPool2dBackward { gy, argmax, .. } => [gy, argmax].contains(&id),
            Op::ActivationBackward { y, gy, .. } => [y, gy].contains(&id),
            Op::DropoutBackward { gy, mask, .. } => [gy, mask].contains(&id),
            Op::SoftmaxCrossEntropy { logits, target, metrics, .. }
            | Op::SigmoidBce { logits, target, metrics, .. }
            | Op::PixelSoftmaxCrossEntropy { logits, target, metrics, .. } => [logits, target, metrics].contains(&id),
            Op::L2 { w, grad, metrics, .. } => [w, metrics].contains(&id) || grad == Some(id),
            Op::Confusion { probs, target, counts, .. } => [probs, target, counts].contains(&id),
            Op::Sgd { w, g, .. } => [w, g].contains(&id),
            Op::Momentum { w, g, v, .. } => [w, g, v].contains(&id),
            Op::Adam { w, g, m, v, .. } => [w, g, m, v].contains(&id),
        }
    }

    /// Whether the op writes buffer `id` (outputs it adds to included).
    pub fn writes(&self, id: BufId) -> bool {
        match *self {
            Op::Gather { out, .. } | Op::GatherOneHot { out, .. } => out == id,
            Op::Dense { y, .. } | Op::Conv2d { y, .. } | Op::ConvTranspose2d { y, .. } => y == id,
            Op::DenseBackward { gx, gw, gb, .. }
            | Op::Conv2dBackward { gx, gw, gb, .. }
            | Op::ConvTranspose2dBackward { gx, gw, gb, .. } => [gw, gb].contains(&id) || gx == Some(id),
            Op::MaxPool2d { y, argmax, .. } => [y, argmax].contains(&id),
            Op::AvgPool2d { y, .. } | Op::Activation { y, .. } | Op::Concat { y, .. } | Op::Sum { y, .. } => y == id,
            Op::ConcatBackward { ga, gb, .. } | Op::SumBackward { ga, gb, .. } => ga == Some(id) || gb == Some(id),
            Op::Upsample2d { y, .. } => y == id,
            Op::Upsample2dBackward { gx, .. } => gx == id,
            Op::BatchNorm { y, stats, running, train, .. } => {
                [y, stats].contains(&id) || (train && running.contains(&id))
            }
            Op::BatchNormBackward { gx, ggamma, gbeta, .. } => [ggamma, gbeta].contains(&id) || gx == Some(id),
            Op::Dropout { y, mask, .. } => [y, mask].contains(&id),
            Op::MaxPool2dBackward { gx, .. }
            | Op::AvgPool2dBackward { gx, .. }
            | Op::ActivationBackward { gx, .. }
            | Op::DropoutBackward { gx, .. } => gx == id,
            Op::SoftmaxCrossEntropy { probs, grad, metrics, .. }
            | Op::SigmoidBce { probs, grad, metrics, .. }
            | Op::PixelSoftmaxCrossEntropy { probs, grad, metrics, .. } => {
                [probs, metrics].contains(&id) || grad == Some(id)
            }
            Op::L2 { grad, metrics, .. } => metrics == id || grad == Some(id),
            Op::Confusion { counts, .. } => counts == id,
            Op::Sgd { w, .. } => w == id,
            Op::Momentum { w, v, .. } => [w, v].contains(&id),
            Op::Adam { w, m, v, .. } => [w, m, v].contains(&id),
        }
    }
}
