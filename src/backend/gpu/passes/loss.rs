//! A loss launch that runs the layer before it, where the plan's fusion says so: a dense layer
//! before a softmax cross-entropy (forward, and backward with the SGD step), a 1x1 convolution
//! to one channel before a sigmoid cross-entropy (forward and data gradient).

use super::{bound, bound_buf, Place, Sets};
use crate::backend::gpu::bindings::{Gemm, Loss, Mode};
use crate::backend::gpu::encode::{Bind, Launch};
use crate::backend::gpu::shaders::{Family, Kernel};
use crate::graph::{BufId, Fused};

/// Most samples a step of `dense_softmax_ce` may have: one thread of its workgroup each.
pub const DENSE_LOSS_ROWS: usize = 256;

/// The bias's offset after the weights, in floats, where both lie in one parameter set.
fn bias_after(w: BufId, b: BufId, place: Place) -> u32 {
    let ((_, w_at, _), (_, b_at, _)) = (place(w).expect("weights in a set"), place(b).expect("bias in a set"));
    assert!(b_at > w_at, "a layer's bias lies after its weights");
    ((b_at - w_at) / 4) as u32
}

/// The softmax cross-entropy `loss` that also computes its logits, as the dense layer's
/// forward `product` would (`dense_softmax_ce`).
pub fn dense_loss(product: &Launch, loss: &Launch, place: Place) -> Launch {
    let (w, b) = (bound_buf(product, Gemm::B).expect("weights"), bound_buf(product, Gemm::Bias).expect("bias"));
    let mut fused = loss.clone();
    fused.kernel = Kernel::new(Family::Loss, "dense_softmax_ce");
    let p = fused.params.loss_mut();
    (p.n_in, p.bias_at) = (product.params.dense().n_in, bias_after(w, b, place));
    fused
        .binds
        .extend([(Loss::Aux.into(), Bind::Span(w, b)), (Loss::LayerX.into(), bound(product, Gemm::A).expect("x"))]);
    fused
}

/// The sigmoid cross-entropy `loss` that also computes its logits, as the 1x1 convolution to
/// one channel `conv` would (`conv_sigmoid_bce`).
pub fn conv_loss(conv: &Launch, loss: &Launch, place: Place) -> Launch {
    let (w, b) = (bound_buf(conv, Gemm::A).expect("weights"), bound_buf(conv, Gemm::Bias).expect("bias"));
    let mut fused = loss.clone();
    fused.kernel = Kernel::new(Family::Loss, "conv_sigmoid_bce");
    let p = fused.params.loss_mut();
    (p.n_in, p.bias_at) = (conv.params.conv().c_in, bias_after(w, b, place));
    fused
        .binds
        .extend([(Loss::LayerX.into(), bound(conv, Gemm::B).expect("x")), (Loss::Layer.into(), Bind::Span(w, b))]);
    fused
}

/// `loss` (`conv_sigmoid_bce`) that also computes the convolution's input gradient `data` (with
/// the backward of the activation before the convolution, if `data` runs it).
pub fn with_conv_data_grad(loss: &mut Launch, data: &Launch) {
    let k = &data.kernel;
    assert!(k.family == Family::Conv2d && k.mode() == Some(Mode::DataGrad) && k.constant("UNPOOL").is_none());
    loss.kernel = loss.kernel.clone().with("BACKWARD", 1);
    if let Some(act) = k.constant("ACT") {
        loss.kernel = loss.kernel.clone().with("FUSE", 1).with("ACT", act);
        loss.binds.push((Loss::ActGx.into(), bound(data, Gemm::ActOut).expect("the activation's output")));
    }
    loss.binds.push((Loss::LayerGx.into(), bound(data, Gemm::C).expect("the input gradient")));
}

/// Each loss launch that computes a dense layer's logits (`dense_softmax_ce`) and whose unit
/// runs that layer's backward takes over the two launches of the backward, in whichever order
/// they now stand after it (`dense_softmax_ce_backward`): the data gradient (with the backward
/// of the activation before the layer, if it runs it) and the one-slice weight gradient (with
/// the SGD step, if it took it).
pub fn loss_runs_dense_backward(launches: Vec<Launch>, units: &[Fused], sets: Sets) -> Vec<Launch> {
    let mut out: Vec<Launch> = Vec::with_capacity(launches.len());
    for l in launches {
        out.push(l);
        let n = out.len();
        let backward = |l: &Launch| units.iter().find(|u| u.backward == Some(l.op) && u.loss.is_some());
        if n >= 3 && out[n - 3].kernel.entry == "dense_softmax_ce" {
            if let (Some(a), Some(b)) = (backward(&out[n - 2]), backward(&out[n - 1])) {
                assert!(a == b && a.loss == Some(out[n - 3].op), "a dense layer's backward after its loss");
                let fused = with_dense_backward(&out[n - 3], [&out[n - 2], &out[n - 1]], sets);
                out.truncate(n - 3);
                out.push(fused);
            }
        }
    }
    out
}

fn with_dense_backward(loss: &Launch, next: [&Launch; 2], (set, place): Sets) -> Launch {
    let dense = |l: &Launch, mode: Mode| l.kernel.family == Family::Dense && l.kernel.mode() == Some(mode);
    let (data, weight) = match next {
        [a, b] if dense(a, Mode::DataGrad) && dense(b, Mode::WeightGrad) => (a, b),
        [a, b] if dense(a, Mode::WeightGrad) && dense(b, Mode::DataGrad) => (b, a),
        _ => panic!("a dense layer's backward is a data and a weight gradient"),
    };
    let Some(Bind::Span(w, b)) = bound(loss, Loss::Aux) else {
        panic!("the loss binds the layer's parameters");
    };
    let bias_at = loss.params.loss().bias_at;
    let (kd, kw) = (&data.kernel, &weight.kernel);
    let update = kw.constant("UPDATE").is_some();
    let (gw, gb) = (bound_buf(weight, Gemm::C).expect("gw"), bound_buf(weight, Gemm::Bias).expect("gb"));
    let fits = kd.constant("SPLITS") == Some(0)
        && kw.constant("SPLITS") == Some(1)
        && kw.constant("BIAS_COL") == Some(1)
        && set(gw).is_some()
        && set(gw) == set(gb)
        && bias_after(gw, gb, place) == bias_at
        && (!update
            || (bound(weight, Gemm::ActOut), bound(weight, Gemm::ActIn)) == (Some(Bind::Buf(w)), Some(Bind::Buf(b))));
    assert!(fits, "the layer's gradients lie in their set as its parameters in theirs: {kd:?}, {kw:?}");
    let mut fused = loss.clone();
    let mut kernel = Kernel::new(Family::Loss, "dense_softmax_ce_backward");
    let act = kd.constant("ACT");
    if let Some(act) = act {
        kernel = kernel.with("FUSE", 1).with("ACT", act);
    }
    if update {
        kernel = kernel.with("UPDATE", 1);
        fused.params.set_lr(weight.params.dense().lr);
    }
    fused.kernel = kernel;
    fused.binds.push((Loss::LayerGx.into(), bound(data, Gemm::C).expect("gx")));
    if act.is_some() {
        fused.binds.push((Loss::ActGx.into(), bound(data, Gemm::ActOut).expect("the activation's gradient")));
    }
    fused.binds.push((Loss::Layer.into(), Bind::Span(gw, gb)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::passes::tests::lowered;
    use crate::graph::{BufDesc, Dtype, Op, ParamSet};
    use crate::model::Act;

    /// 64 buffers of `len` floats, but `lens`; 0 and 1 are a layer's weights and bias, 10 and 11
    /// their gradients.
    fn descs(len: usize, lens: &[(usize, usize)]) -> Vec<BufDesc> {
        let mut descs = vec![BufDesc { name: String::new(), len, dtype: Dtype::F32, set: None }; 64];
        for (i, set) in [(0, ParamSet::Value), (1, ParamSet::Value), (10, ParamSet::Grad), (11, ParamSet::Grad)] {
            descs[i].set = Some(set);
        }
        lens.iter().for_each(|&(i, len)| descs[i].len = len);
        descs
    }

    #[test]
    fn a_loss_of_a_small_batch_computes_its_dense_layer_and_runs_its_backward() {
        let id = BufId;
        let (n_out, grad) = (10, Some(id(54)));
        let dense = |n_in: usize| Op::Dense { x: id(50), w: id(0), b: id(1), y: id(51), n_in, n_out };
        let loss = Op::SoftmaxCrossEntropy {
            logits: id(51),
            target: id(52),
            probs: id(53),
            grad,
            metrics: id(55),
            classes: n_out,
            batch: 100,
        };
        let backward = |x: usize, n_in: usize| Op::DenseBackward {
            x: id(x),
            w: id(0),
            gy: id(54),
            gx: Some(id(56)),
            gw: id(10),
            gb: id(11),
            n_in,
            n_out,
        };
        let run = |rows: usize, n_in: usize, ops: &[Op]| {
            let lens = [(0, n_in * n_out), (1, n_out), (10, n_in * n_out), (11, n_out), (51, rows * n_out)];
            lowered(ops, &descs(rows * n_in.max(n_out), &lens))
        };
        let fused = run(256, 8, &[dense(8), loss.clone()]);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.entry, "dense_softmax_ce");
        // 8 inputs; the bias 512 bytes (80 floats, aligned) after the weights.
        let p = fused[0].params.loss();
        assert_eq!((p.n_in, p.bias_at), (8, 128));
        assert!(fused[0].binds.contains(&(Loss::Aux.into(), Bind::Span(BufId(0), BufId(1)))));
        assert!(fused[0].binds.contains(&(Loss::LayerX.into(), Bind::Buf(BufId(50)))));
        // Left alone: steps of more than 256 samples, long sums (the CNN's 100 samples of 10
        // outputs of 1,568 terms: 4 · 1,568 one after the other).
        assert_eq!(run(257, 8, &[dense(8), loss.clone()]).len(), 2);
        assert_eq!(run(100, 1568, &[dense(1568), loss.clone()]).len(), 2);
        assert_eq!(run(100, 1024, &[dense(1024), loss.clone()]).len(), 1);

        // Then the layer's backward, from the loss's gradient 54: its data gradient (into 56)
        // and its weight gradient (into 10 and 11, laid out as the weights 0 and 1).
        let both = run(100, 8, &[dense(8), loss.clone(), backward(50, 8)]);
        assert_eq!(both.len(), 1);
        assert_eq!(both[0].kernel.entry, "dense_softmax_ce_backward");
        assert!(both[0].binds.contains(&(Loss::LayerGx.into(), Bind::Buf(BufId(56)))));
        assert!(both[0].binds.contains(&(Loss::Layer.into(), Bind::Span(BufId(10), BufId(11)))));
        // With the backward of the activation before the layer.
        let act = Op::ActivationBackward { act: Act::Tanh, y: id(50), gy: id(56), gx: id(57), per: 8 };
        let with_act = run(100, 8, &[dense(8), loss.clone(), backward(50, 8), act]);
        assert_eq!(with_act.len(), 1);
        assert_eq!(with_act[0].kernel.constant("ACT"), Some(2));
        assert!(with_act[0].binds.contains(&(Loss::ActGx.into(), Bind::Buf(BufId(57)))));
        // Not when the weight gradient reads another input than the logits' product did, nor
        // for 256 samples a step (the weight gradient then sums in two slices).
        assert_eq!(run(100, 8, &[dense(8), loss.clone(), backward(58, 8)]).len(), 3);
        assert!(run(256, 8, &[dense(8), loss, backward(50, 8)]).len() > 1);
    }

    #[test]
    fn a_sigmoid_loss_runs_the_one_channel_convolution_before_it() {
        // conv 1x1 of 8 channels (weights 0, bias 1) from 40 to the logits 41; the loss's
        // gradient 44; the convolution's backward into 10, 11 (weights) and 46 (data).
        let g = crate::graph::ConvGeom::same(8, 1, 16, 16, 1);
        let id = BufId;
        let loss = Op::SigmoidBce {
            logits: id(41),
            target: id(42),
            probs: id(43),
            grad: Some(id(44)),
            metrics: id(45),
            per: 256,
            batch: 4,
        };
        let conv = Op::Conv2d { x: id(40), w: id(0), b: id(1), y: id(41), g };
        let backward =
            Op::Conv2dBackward { x: id(40), w: id(0), gy: id(44), gx: Some(id(46)), gw: id(10), gb: id(11), g };
        let descs = descs(4 * 8 * 256, &[(0, 8), (1, 1), (10, 8), (11, 1)]);
        let alone = [&conv, &loss, &backward].map(|op| lowered(std::slice::from_ref(op), &descs));
        let after = lowered(&[conv.clone(), loss.clone(), backward.clone()], &descs);
        assert_eq!(after.len(), alone.iter().map(Vec::len).sum::<usize>() - 2);
        assert_eq!(after[0].kernel.entry, "conv_sigmoid_bce");
        assert_eq!(after[0].kernel.constant("BACKWARD"), Some(1));
        // 8 channels; the bias 256 bytes (8 floats, aligned) after the weights.
        let p = after[0].params.loss();
        assert_eq!((p.n_in, p.bias_at), (8, 64));
        assert!(after[0].binds.contains(&(Loss::Layer.into(), Bind::Span(BufId(0), BufId(1)))));
        assert!(after[0].binds.contains(&(Loss::LayerGx.into(), Bind::Buf(BufId(46)))));
        // An op in between that reads the loss's gradient keeps the data gradient a launch of
        // its own.
        let between = Op::Activation { act: Act::Relu, x: id(44), y: id(49), per: 256 };
        let kept = lowered(&[conv, loss, between, backward], &descs);
        assert_eq!(kept[0].kernel.entry, "conv_sigmoid_bce");
        assert_eq!(kept[0].kernel.constant("BACKWARD"), None);
        assert_eq!(kept.len(), after.len() + 2);
    }
}
