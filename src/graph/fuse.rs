//! Fusion, decided once on an op list for both fast backends: each producer (a dense layer, a
//! convolution or transposed convolution, going forward or computing its input's gradient, or a
//! max pooling's backward) takes as its epilogue the elementwise activation that reads what it
//! writes, and a convolution the max pooling after that. The decision comes from which op
//! reads and writes which buffer ([`Op::reads`], [`Op::writes`]) and from what the backend says
//! it can run ([`Fusable`]); the backend then runs each [`Fused`] as one unit. The reference
//! backend runs every op on its own.

use super::{ConvGeom, Op};
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
}

/// One unit of work: the op at `op`, with the activation at `act` (forward or backward) and the
/// max pooling at `pool` as its epilogue (indices into the op list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fused {
    pub op: usize,
    pub act: Option<usize>,
    pub pool: Option<usize>,
    /// Whether an op after the unit reads the output between `op` and `act`, which must then be
    /// stored.
    pub keep: bool,
}

impl Fused {
    /// The index after the unit's last op.
    pub fn end(&self) -> usize {
        1 + self.pool.or(self.act).unwrap_or(self.op)
    }
}

/// Whether `op` can take an activation (forward when `forward`) as its epilogue on a backend
/// that can run `can`.
fn produces_for_activation(op: &Op, forward: bool, can: &Fusable) -> bool {
    match op {
        Op::Conv2d { .. } | Op::ConvTranspose2d { .. } => forward,
        Op::Dense { .. } => forward && can.dense_activation,
        Op::Conv2dBackward { gx: Some(_), .. }
        | Op::ConvTranspose2dBackward { gx: Some(_), .. }
        | Op::MaxPool2dBackward { .. } => !forward,
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
fn activation_io(next: &Op) -> Option<(super::BufId, super::BufId, bool)> {
    match *next {
        Op::Activation { act, x, y, .. } if act != Act::Softmax => Some((x, y, true)),
        Op::ActivationBackward { act, gy, gx, .. } if act != Act::Softmax => Some((gy, gx, false)),
        _ => None,
    }
}

/// The op list as units for a backend that can run `can`.
pub fn fuse(ops: &[Op], can: &Fusable) -> Vec<Fused> {
    let mut units = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let op = &ops[i];
        let mut unit = Fused { op: i, act: None, pool: None, keep: false };
        // What the unit's last op writes, that a pooling may read.
        let mut last = match *op {
            Op::Conv2d { y, .. } => Some(y),
            _ => None,
        };
        if let Some((input, out, forward)) = ops.get(i + 1).and_then(activation_io) {
            let read_later = ops[i + 2..].iter().any(|o| o.reads(input));
            let fits = op.writes(input) && !op.writes(out) && produces_for_activation(op, forward, can);
            if fits && (!read_later || stores_both(op, can)) {
                unit.act = Some(i + 1);
                last = last.map(|_| out);
            }
        }
        if let (Op::Conv2d { g, .. }, Some(y)) = (op, last) {
            let at = unit.end();
            if matches!(ops.get(at), Some(&Op::MaxPool2d { x, .. }) if x == y) && (can.conv_pool)(g) {
                unit.pool = Some(at);
            }
        }
        if let Some(a) = unit.act {
            let (input, _, _) = activation_io(&ops[a]).expect("an activation");
            unit.keep = ops[unit.end()..].iter().any(|o| o.reads(input));
        }
        i = unit.end();
        units.push(unit);
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::BufId;
    use crate::model::Shape;

    const G: ConvGeom = ConvGeom { c_in: 2, c_out: 3, h: 8, w: 8, k: 3 };
    const ALL: Fusable = Fusable { dense_activation: true, kept_gradient: true, conv_pool: |_| true };
    const LEAST: Fusable = Fusable { dense_activation: false, kept_gradient: false, conv_pool: |_| false };

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
        fuse(ops, can).iter().map(|u| (u.op, u.act, u.pool, u.keep)).collect()
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
}
