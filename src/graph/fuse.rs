//! Fusion, decided once on an op list for both fast backends. Each producer (a dense layer, a
//! convolution or transposed convolution, going forward or computing its input's gradient, a
//! batch normalisation going forward, or a max pooling's backward) takes as its epilogue the
//! elementwise activation that reads what it writes, and a convolution the max pooling after that; a max pooling that only convolutions
//! read may instead never be stored, the convolutions reading through it, and its backward then
//! runs inside the input-gradient product of the convolution after it. The decisions come from
//! which op reads and writes which buffer ([`Op::reads`], [`Op::writes`]) and from what the
//! backend says it can run ([`Fusable`]); the backend then runs each [`Fused`] as one unit. A
//! loss may also compute its logits, in place of the layer before it, and that layer's backward;
//! and the optimiser's updates may be taken by the ops that write the gradients.
//! The reference backend runs every op on its own.

use super::{BufDesc, BufId, ConvGeom, Op};
use crate::model::Act;

/// The epilogues a backend can run inside their producer.
#[derive(Clone, Copy, Debug)]
pub struct Fusable {
    /// An activation after a dense layer's product (forward), and its backward after the dense
    /// layer's input-gradient product.
    pub dense_activation: bool,
    /// An activation's backward inside an input-gradient product even when a later op reads
    /// the product's own output (`false`: only when none does; the activation then runs in place
    /// of that output).
    pub kept_gradient: bool,
    /// Whether a max pooling of the convolution's output runs inside a convolution of this
    /// geometry.
    pub conv_pool: fn(&ConvGeom) -> bool,
    /// Convolutions read their input through a max pooling of even sides, which is then not
    /// stored; its backward finds each window's maximum again from the pooling's input, and
    /// runs inside the input-gradient product of the convolution after it.
    pub read_through_pool: bool,
    /// Whether a loss can compute its logits, in place of the layer `producer` (a dense layer
    /// before a softmax cross-entropy, a 1x1 convolution to one channel before a sigmoid
    /// cross-entropy), in steps of up to `rows` samples, with the plan's buffers `descs`.
    pub logits_in_loss: LossLayer,
    /// Whether such a loss can also run the layer's backward `op`.
    pub backward_in_loss: LossLayer,
    /// Whether the optimiser's `update` can be taken by `writer`, the op that writes its
    /// gradient, as it writes it, with the plan's buffers `descs`.
    pub step_in_gradient: fn(update: &Op, writer: &Op, descs: &[BufDesc]) -> bool,
}

/// Whether a loss can run a layer's op, in steps of up to `rows` samples, with the plan's
/// buffers `descs`.
pub type LossLayer = fn(op: &Op, rows: usize, descs: &[BufDesc]) -> bool;

/// A backend that runs no layer inside a loss.
pub fn no_loss_layer(_: &Op, _: usize, _: &[BufDesc]) -> bool {
    false
}

/// A backend that takes every optimiser step on its own.
pub fn no_step_in_gradient(_: &Op, _: &Op, _: &[BufDesc]) -> bool {
    false
}

/// Most multiply-adds that one thread of a loss computing its dense layer (forward, or forward
/// and backward) does one after the other: such a loss is one workgroup, so beyond this it takes
/// longer than the product launches it saves. The MLP's output layer (100 inputs, 10 classes,
/// batch 100) is 400 going forward and 1,700 both ways; the CNN's (1,568 inputs) 6,272 going
/// forward.
pub const LOSS_LAYER_MACS: usize = 4096;

/// One unit of work: the op at `op`, then the max pooling backward at `unpool`, the activation
/// at `act` (forward or backward) and the max pooling at `pool`, each an epilogue of what comes
/// before it (indices into the op list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fused {
    pub op: usize,
    /// The loss that computes its logits from `op` (a layer's forward), and that layer's
    /// backward, run by the loss too.
    pub loss: Option<usize>,
    pub backward: Option<usize>,
    pub unpool: Option<usize>,
    pub act: Option<usize>,
    pub pool: Option<usize>,
    /// Whether an op after the unit reads the output that `act` reads, which must then be
    /// stored.
    pub keep: bool,
}

impl Fused {
    /// The index after the unit's last op.
    pub fn end(&self) -> usize {
        1 + self.pool.or(self.act).or(self.unpool).or(self.backward).or(self.loss).unwrap_or(self.op)
    }
}

/// How a backend runs an op list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fusion {
    pub units: Vec<Fused>,
    /// The max poolings read through (indices of their forward ops), which no unit runs.
    pub read_through: Vec<usize>,
    /// Whether the list's optimiser updates are taken by the ops that write their gradients
    /// (all of them or none), rather than run as ops of their own.
    pub steps_in_gradients: bool,
}

impl Fusion {
    /// The max pooling read through whose output (or argmax) is `id`: its forward op.
    pub fn pooling_of<'a>(&self, ops: &'a [Op], id: BufId) -> Option<&'a Op> {
        self.read_through
            .iter()
            .map(|&i| &ops[i])
            .find(|op| matches!(**op, Op::MaxPool2d { y, argmax, .. } if y == id || argmax == id))
    }
}

/// Whether `op` can take an activation (forward when `forward`) as its epilogue on a backend
/// that can run `can` (a convolution only with 'same' geometry: the others run plainly).
fn produces_for_activation(op: &Op, forward: bool, can: &Fusable) -> bool {
    match op {
        Op::Conv2d { g, .. } => forward && g.is_same(),
        Op::ConvTranspose2d { .. } | Op::BatchNorm { .. } => forward,
        Op::Dense { .. } => forward && can.dense_activation,
        Op::Conv2dBackward { gx: Some(_), g, .. } => !forward && g.is_same(),
        Op::ConvTranspose2dBackward { gx: Some(_), .. } | Op::MaxPool2dBackward { .. } => !forward,
        Op::DenseBackward { gx: Some(_), .. } => !forward && can.dense_activation,
        _ => false,
    }
}

/// Whether `op` can store its own output as well as its activation's.
fn stores_both(op: &Op, can: &Fusable) -> bool {
    match op {
        Op::Conv2dBackward { .. } | Op::ConvTranspose2dBackward { .. } | Op::DenseBackward { .. } => can.kept_gradient,
        _ => true,
    }
}

/// The buffer that `next`, an elementwise activation (forward or backward), reads from the op
/// before it, and its output, if `next` is one.
fn activation_io(next: &Op) -> Option<(BufId, BufId, bool)> {
    match *next {
        Op::Activation { act, x, y, .. } if act != Act::Softmax => Some((x, y, true)),
        Op::ActivationBackward { act, gy, gx, .. } if act != Act::Softmax => Some((gy, gx, false)),
        _ => None,
    }
}

/// The op list as units for a backend that can run `can`; `descs` size the buffers (a step has
/// at most as many samples as its logits buffer holds).
pub fn fuse(ops: &[Op], descs: &[BufDesc], can: &Fusable) -> Fusion {
    let steps_in_gradients = steps_in_gradients(ops, descs, can);
    let mut fusion = Fusion { units: Vec::with_capacity(ops.len()), read_through: Vec::new(), steps_in_gradients };
    let mut i = 0;
    while i < ops.len() {
        let unit = unit_at(ops, i, descs, can, &fusion);
        if can.read_through_pool && reads_through(ops, i, can) {
            fusion.read_through.push(i);
        } else {
            fusion.units.push(unit);
        }
        i = unit.end();
    }
    fusion
}

/// The parameter, gradient and optimiser states an update op moves or reads.
fn update_buffers(op: &Op) -> Option<Vec<BufId>> {
    match *op {
        Op::Sgd { w, g, .. } => Some(vec![w, g]),
        Op::Momentum { w, g, v, .. } => Some(vec![w, g, v]),
        Op::Adam { w, g, m, v, .. } => Some(vec![w, g, m, v]),
        _ => None,
    }
}

/// An update op's settings, its buffers and length left out: what updates alike share.
fn settings(op: &Op) -> Op {
    let mut op = op.clone();
    let none = BufId(0);
    match &mut op {
        Op::Sgd { w, g, len, .. } => (*w, *g, *len) = (none, none, 0),
        Op::Momentum { w, g, v, len, .. } => (*w, *g, *v, *len) = (none, none, none, 0),
        Op::Adam { w, g, m, v, len, .. } => (*w, *g, *m, *v, *len) = (none, none, none, none, 0),
        _ => {}
    }
    op
}

/// Whether every update of the list is alike and can be taken by the one op that writes its
/// gradient, with nothing after that op but updates reading or writing the gradient, the
/// parameter or its optimiser state (an L2 penalty adds to the gradient, so it keeps the step
/// apart).
fn steps_in_gradients(ops: &[Op], descs: &[BufDesc], can: &Fusable) -> bool {
    let updates: Vec<usize> = (0..ops.len()).filter(|&i| update_buffers(&ops[i]).is_some()).collect();
    let Some(&first) = updates.first() else {
        return false;
    };
    let alike = |i: &usize| {
        let (a, b) = (&ops[first], &ops[*i]);
        settings(a) == settings(b)
    };
    updates.iter().all(alike)
        && updates.iter().all(|&u| {
            let touched = update_buffers(&ops[u]).expect("an update");
            let g = touched[1];
            let writers: Vec<usize> = (0..u).filter(|&i| ops[i].writes(g)).collect();
            let [writer] = writers[..] else {
                return false;
            };
            let untouched = ops[writer + 1..]
                .iter()
                .filter(|o| update_buffers(o).is_none())
                .all(|o| touched.iter().all(|&b| !o.reads(b) && !o.writes(b)));
            untouched && (can.step_in_gradient)(&ops[u], &ops[writer], descs)
        })
}

/// The loss at `i + 1` that computes its logits in place of the layer at `i`, and the loss's
/// layer's backward at `i + 2` that it also runs, where `can` allows.
fn loss_of(ops: &[Op], i: usize, descs: &[BufDesc], can: &Fusable) -> (Option<usize>, Option<usize>) {
    let rows = |logits: BufId, per: usize| descs[logits.0].len / per;
    // Each thread's multiply-adds, forward and both ways, and the steps' most samples.
    let (forward, both, rows, grad) = match (&ops[i], ops.get(i + 1)) {
        (&Op::Dense { y, n_in, n_out, .. }, Some(&Op::SoftmaxCrossEntropy { logits, classes, grad, .. }))
            if logits == y && classes == n_out =>
        {
            let rows = rows(logits, classes);
            let forward = (rows * classes).div_ceil(256) * n_in;
            let both = (rows * n_in).div_ceil(256) * classes + (classes * (n_in + 1)).div_ceil(256) * rows;
            (forward, both, rows, grad)
        }
        (&Op::Conv2d { y, ref g, .. }, Some(&Op::SigmoidBce { logits, per, grad, .. }))
            if logits == y && g.k == 1 && g.is_same() && g.c_out == 1 =>
        {
            (0, 0, rows(logits, per), grad)
        }
        _ => return (None, None),
    };
    if forward > LOSS_LAYER_MACS || !(can.logits_in_loss)(&ops[i], rows, descs) {
        return (None, None);
    }
    let backward = match (&ops[i], ops.get(i + 2)) {
        (&Op::Dense { x, w, .. }, Some(back @ &Op::DenseBackward { x: bx, w: bw, gy, gx: Some(_), .. }))
        | (&Op::Conv2d { x, w, .. }, Some(back @ &Op::Conv2dBackward { x: bx, w: bw, gy, gx: Some(_), .. }))
            if (x, w) == (bx, bw)
                && Some(gy) == grad
                && both <= LOSS_LAYER_MACS
                && (can.backward_in_loss)(back, rows, descs) =>
        {
            Some(i + 2)
        }
        _ => None,
    };
    (Some(i + 1), backward)
}

/// The unit that starts with op `i`, given the poolings read through so far.
fn unit_at(ops: &[Op], i: usize, descs: &[BufDesc], can: &Fusable, so_far: &Fusion) -> Fused {
    let op = &ops[i];
    let (loss, backward) = loss_of(ops, i, descs, can);
    let mut unit = Fused { op: i, loss, backward, unpool: None, act: None, pool: None, keep: false };
    // The producer of what an activation may read: the op, the layer's backward that the loss
    // runs, or the pooling backward that the op runs.
    let mut producer = backward.map_or(op, |b| &ops[b]);
    if let (Op::Conv2dBackward { gx: Some(gx), .. }, Some(back @ Op::MaxPool2dBackward { gy, argmax, gx: raw, .. })) =
        (op, ops.get(i + 1))
    {
        let through = so_far.pooling_of(ops, *argmax);
        let act_after = ops.get(i + 2).and_then(activation_io);
        // The activation's backward must read the pooling's gradient and the pooling's input,
        // and nothing after it the pooling's own gradient.
        let fits = match (through, act_after, ops.get(i + 2)) {
            (Some(&Op::MaxPool2d { x, .. }), Some((input, _, false)), Some(&Op::ActivationBackward { y, .. })) => {
                input == *raw && y == x && !ops[i + 3..].iter().any(|o| o.reads(*raw))
            }
            _ => false,
        };
        if gy == gx && fits {
            unit.unpool = Some(i + 1);
            producer = back;
        }
    }
    // What the unit's last op writes, that a pooling may read.
    let mut last = match *op {
        Op::Conv2d { y, .. } if loss.is_none() => Some(y),
        _ => None,
    };
    let next = unit.end();
    if let Some((input, out, forward)) = ops.get(next).and_then(activation_io) {
        let read_later = ops[next + 1..].iter().any(|o| o.reads(input));
        let fits = producer.writes(input) && !producer.writes(out) && produces_for_activation(producer, forward, can);
        if fits && (!read_later || stores_both(producer, can)) {
            unit.act = Some(next);
            last = last.map(|_| out);
        }
    }
    if let (Op::Conv2d { g, .. }, Some(y)) = (op, last) {
        let at = unit.end();
        if matches!(ops.get(at), Some(&Op::MaxPool2d { x, .. }) if x == y) && g.is_same() && (can.conv_pool)(g) {
            unit.pool = Some(at);
        }
    }
    if let Some(a) = unit.act {
        let (input, _, _) = activation_io(&ops[a]).expect("an activation");
        unit.keep = ops[unit.end()..].iter().any(|o| o.reads(input));
    }
    unit
}

/// Whether op `i` is a max pooling of even sides that convolutions may read through: only
/// convolutions read its output, as their input (forward or for the weight gradient); only its
/// backward reads its argmax; and after it nothing reads or writes its input but the backward
/// of the activation that wrote it, run inside the pooling's backward.
fn reads_through(ops: &[Op], i: usize, can: &Fusable) -> bool {
    let Op::MaxPool2d { x, y, argmax, shape } = ops[i] else {
        return false;
    };
    let half = |g: &ConvGeom| g.is_same() && g.c_in == shape.c && g.h == shape.h / 2 && g.w == shape.w / 2;
    let even = shape.h % 2 == 0 && shape.w % 2 == 0;
    if !even || ops[..i].iter().any(|o| o.reads(y) || o.reads(argmax)) {
        return false;
    }
    let mut read = false;
    for (j, o) in ops.iter().enumerate().skip(i + 1) {
        if o.reads(y) || o.writes(y) {
            match *o {
                Op::Conv2d { x: input, ref g, .. } | Op::Conv2dBackward { x: input, ref g, .. }
                    if input == y && half(g) && !o.writes(y) =>
                {
                    read = true
                }
                _ => return false,
            }
        }
        if o.reads(argmax) && !matches!(*o, Op::MaxPool2dBackward { argmax: a, .. } if a == argmax) {
            return false;
        }
        if o.reads(x) || o.writes(x) {
            // The activation's backward after the pooling's backward, fused into it.
            let fused = matches!(ops[j - 1], Op::MaxPool2dBackward { argmax: a, .. } if a == argmax)
                && unit_at(ops, j - 1, &[], can, &Fusion::default()).act == Some(j)
                && matches!(*o, Op::ActivationBackward { y: fx, .. } if fx == x)
                && !o.writes(x);
            if !fused {
                return false;
            }
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::BufId;
    use crate::model::Shape;

    const G: ConvGeom = ConvGeom::same(2, 3, 8, 8, 3);
    const ALL: Fusable = Fusable {
        dense_activation: true,
        kept_gradient: true,
        conv_pool: |_| true,
        read_through_pool: false,
        logits_in_loss: |_, _, _| true,
        backward_in_loss: |_, _, _| true,
        step_in_gradient: |_, _, _| true,
    };
    const LEAST: Fusable = Fusable {
        dense_activation: false,
        kept_gradient: false,
        conv_pool: |_| false,
        read_through_pool: false,
        logits_in_loss: no_loss_layer,
        backward_in_loss: no_loss_layer,
        step_in_gradient: no_step_in_gradient,
    };

    /// 100 buffers of 1,000 floats.
    fn descs() -> Vec<BufDesc> {
        vec![BufDesc { name: String::new(), len: 1000, dtype: crate::graph::Dtype::F32, set: None }; 100]
    }

    fn id(i: usize) -> BufId {
        BufId(i)
    }
    fn conv(x: usize, y: usize) -> Op {
        Op::Conv2d { x: id(x), w: id(90), b: id(91), y: id(y), g: G }
    }
    fn act(act: Act, x: usize, y: usize) -> Op {
        Op::Activation { act, x: id(x), y: id(y), per: 192 }
    }
    fn pool(x: usize, y: usize) -> Op {
        Op::MaxPool2d { x: id(x), y: id(y), argmax: id(99), shape: Shape::new(3, 8, 8) }
    }
    fn conv_back(gy: usize, gx: usize) -> Op {
        Op::Conv2dBackward { x: id(0), w: id(90), gy: id(gy), gx: Some(id(gx)), gw: id(92), gb: id(93), g: G }
    }
    fn act_back(gy: usize, gx: usize) -> Op {
        Op::ActivationBackward { act: Act::Tanh, y: id(50), gy: id(gy), gx: id(gx), per: 128 }
    }
    fn units(ops: &[Op], can: &Fusable) -> Vec<(usize, Option<usize>, Option<usize>, bool)> {
        fuse(ops, &descs(), can).units.iter().map(|u| (u.op, u.act, u.pool, u.keep)).collect()
    }

    #[test]
    fn a_convolution_takes_its_activation_and_pooling() {
        let ops = [conv(0, 1), act(Act::Relu, 1, 2), pool(2, 3), conv(3, 4)];
        assert_eq!(units(&ops, &ALL), [(0, Some(1), Some(2), false), (3, None, None, false)]);
        assert_eq!(units(&ops, &LEAST), [(0, Some(1), None, false), (2, None, None, false), (3, None, None, false)]);
        // A pooling of the product itself, with no activation between.
        assert_eq!(units(&[conv(0, 1), pool(1, 3)], &ALL), [(0, None, Some(1), false)]);
        // A pooling of something else stays an op of its own.
        assert_eq!(units(&[conv(0, 1), act(Act::Relu, 1, 2), pool(1, 3)], &ALL).len(), 2);
    }

    #[test]
    fn a_batch_normalisation_takes_its_activation() {
        let bn = |y: usize| Op::BatchNorm {
            x: id(0),
            gamma: id(90),
            beta: id(91),
            y: id(y),
            stats: id(92),
            running: [id(93), id(94), id(95)],
            c: 3,
            hw: 64,
            train: true,
            momentum: 0.1,
            eps: 1e-5,
        };
        assert_eq!(
            units(&[bn(1), act(Act::Relu, 1, 2), pool(2, 3)], &LEAST),
            [(0, Some(1), None, false), (2, None, None, false)]
        );
        // Its output read by a later op too: stored as well.
        assert_eq!(units(&[bn(1), act(Act::Tanh, 1, 2), act(Act::Relu, 1, 4)], &LEAST)[0], (0, Some(1), None, true));
        // Not an activation of another buffer, nor a backward one.
        assert_eq!(units(&[bn(1), act(Act::Relu, 7, 2)], &ALL).len(), 2);
        assert_eq!(units(&[bn(1), act_back(1, 2)], &ALL).len(), 2);
    }

    #[test]
    fn only_an_elementwise_activation_of_the_producers_output_is_fused() {
        // Another buffer, in place, softmax.
        for next in [act(Act::Relu, 7, 2), act(Act::Relu, 1, 1), act(Act::Softmax, 1, 2)] {
            assert_eq!(units(&[conv(0, 1), next.clone()], &ALL).len(), 2, "{next:?}");
        }
        // A dense layer's only where the backend says so.
        let dense = Op::Dense { x: id(0), w: id(90), b: id(91), y: id(1), n_in: 4, n_out: 192 };
        let ops = [dense, act(Act::Sigmoid, 1, 2)];
        assert_eq!(units(&ops, &ALL), [(0, Some(1), None, false)]);
        assert_eq!(units(&ops, &LEAST).len(), 2);
    }

    #[test]
    fn the_output_between_producer_and_activation_is_kept_when_read_later() {
        let read = Op::Activation { act: Act::Relu, x: id(1), y: id(9), per: 192 };
        let ops = [conv(0, 1), act(Act::Tanh, 1, 2), read];
        assert_eq!(units(&ops, &LEAST)[0], (0, Some(1), None, true));
        // A gradient read later is fused only by a backend that stores both.
        let ops = [conv_back(5, 6), act_back(6, 7), act_back(6, 8)];
        assert_eq!(units(&ops, &ALL)[0], (0, Some(1), None, true));
        assert_eq!(units(&ops, &LEAST)[0], (0, None, None, false));
        assert_eq!(units(&ops[..2], &LEAST), [(0, Some(1), None, false)]);
        // A max pooling's backward stores both on any backend.
        let back = Op::MaxPool2dBackward { gy: id(5), argmax: id(99), gx: id(6), shape: Shape::new(3, 8, 8) };
        assert_eq!(units(&[back, act_back(6, 7), act_back(6, 8)], &LEAST)[0], (0, Some(1), None, true));
        // Backward activations do not follow forward products, nor forward ones backward products.
        assert_eq!(units(&[conv(0, 1), act_back(1, 2)], &ALL).len(), 2);
        assert_eq!(units(&[conv_back(5, 6), act(Act::Relu, 6, 7)], &ALL).len(), 2);
    }

    #[test]
    fn a_pooling_read_through_is_not_run_and_its_backward_runs_in_the_product_after_it() {
        let through = Fusable { read_through_pool: true, conv_pool: |_| false, ..ALL };
        let g = ConvGeom::same(3, 2, 4, 4, 3);
        let back = Op::Conv2dBackward { x: id(3), w: id(80), gy: id(10), gx: Some(id(11)), gw: id(82), gb: id(83), g };
        let unpool = Op::MaxPool2dBackward { gy: id(11), argmax: id(99), gx: id(12), shape: Shape::new(3, 8, 8) };
        let relu_back = Op::ActivationBackward { act: Act::Relu, y: id(2), gy: id(12), gx: id(13), per: 192 };
        let after = Op::Conv2d { x: id(3), w: id(80), b: id(81), y: id(4), g };
        let ops = [conv(0, 1), act(Act::Relu, 1, 2), pool(2, 3), after, back, unpool, relu_back];
        let fusion = fuse(&ops, &descs(), &through);
        assert_eq!(fusion.read_through, [2]);
        let last = Fused { op: 4, loss: None, backward: None, unpool: Some(5), act: Some(6), pool: None, keep: false };
        assert_eq!(fusion.units.last(), Some(&last));
        assert_eq!(fusion.units.len(), 3);
        // A backend that reads through no pooling, or a dense layer reading the pooled values.
        assert!(fuse(&ops, &descs(), &ALL).read_through.is_empty());
        let dense = Op::Dense { x: id(3), w: id(90), b: id(91), y: id(5), n_in: 48, n_out: 4 };
        let mut stored = ops.to_vec();
        stored.push(dense);
        assert!(fuse(&stored, &descs(), &through).read_through.is_empty());
    }

    #[test]
    fn a_loss_computes_its_layer_and_runs_its_backward_where_the_sums_are_short() {
        // 1,000 logits of 10 classes: 100 samples a step.
        let dense = |n_in: usize| Op::Dense { x: id(1), w: id(90), b: id(91), y: id(2), n_in, n_out: 10 };
        let loss = Op::SoftmaxCrossEntropy {
            logits: id(2),
            target: id(3),
            probs: id(4),
            grad: Some(id(5)),
            metrics: id(6),
            classes: 10,
            batch: 100,
        };
        let back = |n_in: usize| Op::DenseBackward {
            x: id(1),
            w: id(90),
            gy: id(5),
            gx: Some(id(7)),
            gw: id(92),
            gb: id(93),
            n_in,
            n_out: 10,
        };
        let tanh = Op::ActivationBackward { act: Act::Tanh, y: id(1), gy: id(7), gx: id(8), per: 100 };
        let ops = |n_in: usize| [dense(n_in), loss.clone(), back(n_in), tanh.clone()];
        let full =
            Fused { op: 0, loss: Some(1), backward: Some(2), unpool: None, act: Some(3), pool: None, keep: false };
        assert_eq!(fuse(&ops(100), &descs(), &ALL).units, [full]);
        // 100 samples of 1,024 inputs: 4,096 multiply-adds a thread forward, more both ways.
        let forward_only = Fused { backward: None, act: None, ..full };
        assert_eq!(fuse(&ops(1024), &descs(), &ALL).units[0], forward_only);
        // 1,025: each op on its own (the dense layer's backward takes the activation's).
        let apart = fuse(&ops(1025), &descs(), &ALL).units;
        assert_eq!(
            apart.iter().map(|u| (u.op, u.loss, u.act)).collect::<Vec<_>>(),
            [(0, None, None), (1, None, None), (2, None, Some(3))]
        );
        assert_eq!(fuse(&ops(100), &descs(), &LEAST).units.len(), 4);
    }

    #[test]
    fn updates_are_taken_by_their_gradients_writers_when_nothing_else_touches_them() {
        let back = |gw: usize| Op::DenseBackward {
            x: id(1),
            w: id(90),
            gy: id(5),
            gx: None,
            gw: id(gw),
            gb: id(93),
            n_in: 100,
            n_out: 10,
        };
        let sgd = |w: usize, g: usize, lr: f32| Op::Sgd { w: id(w), g: id(g), lr, len: 1000 };
        let steps = |ops: &[Op], can: &Fusable| fuse(ops, &descs(), can).steps_in_gradients;
        let ops = [back(92), sgd(90, 92, 0.1), sgd(91, 93, 0.1)];
        assert!(steps(&ops, &ALL));
        assert!(!steps(&ops, &LEAST));
        // Unlike rates; a gradient nothing writes; an L2 penalty adding to the gradient first.
        assert!(!steps(&[back(92), sgd(90, 92, 0.1), sgd(91, 93, 0.2)], &ALL));
        assert!(!steps(&[back(92), sgd(90, 94, 0.1)], &ALL));
        let l2 = Op::L2 { w: id(90), grad: Some(id(92)), metrics: id(60), lambda: 1e-3, len: 1000 };
        assert!(!steps(&[back(92), l2, sgd(90, 92, 0.1), sgd(91, 93, 0.1)], &ALL));
        // No updates at all.
        assert!(!steps(&[back(92)], &ALL));
    }
}
