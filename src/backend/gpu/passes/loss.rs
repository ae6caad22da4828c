//! The last layer run by the loss launch after it: the MLP's dense layer by its softmax
//! cross-entropy (forward, and backward with the SGD step), the FCN's 1x1 convolution by its
//! sigmoid cross-entropy (forward and data gradient).

use super::{binds_any, bound, bound_buf, merge_neighbours, Sets};
use crate::backend::gpu::encode::{
    Bind, Launch, A, ACT_IN, ACT_OUT, B, BIAS, C, LOSS_ACT_GX, LOSS_AUX, LOSS_LAYER, LOSS_LAYER_GX, LOSS_LAYER_X,
};
use crate::backend::gpu::shaders::{Family, Kernel};
use crate::graph::BufId;

/// Most samples a step of `dense_softmax_ce` may have: one thread of its workgroup each.
const DENSE_LOSS_ROWS: usize = 256;
/// Most multiply-adds one of its threads may do one after the other for the logits; longer,
/// and the one workgroup would take longer than the product's launch it saves.
const DENSE_LOSS_MACS: usize = 4096;

/// A softmax cross-entropy whose steps have at most 256 samples also computes its logits, in
/// place of the dense layer's product before it, when that is little work (the MLP's 100
/// inputs, not the CNN's 1,568) and the layer's bias lies after its weights in their parameter
/// set (`dense_softmax_ce`). `len` gives a buffer's floats.
pub fn dense_into_loss(launches: Vec<Launch>, (set, place): Sets, len: &dyn Fn(BufId) -> usize) -> Vec<Launch> {
    merge_neighbours(launches, |dense, loss| {
        let k = &dense.kernel;
        let product = k.family == Family::Dense && k.constant("MODE") == Some(0) && k.constant("FUSE").is_none();
        if !product || loss.kernel.entry != "softmax_ce" || bound(loss, 2)? != bound(dense, C)? {
            return None;
        }
        let (w, b, logits) = (bound_buf(dense, B)?, bound_buf(dense, BIAS)?, bound_buf(dense, C)?);
        let ((_, w_at, _), (_, b_at, _)) = (place(w)?, place(b)?);
        let (n_in, classes) = (dense.params[0], loss.params[0]);
        let rows = len(logits) / classes as usize;
        let macs = (rows * classes as usize).div_ceil(256) * n_in as usize;
        if set(w) != set(b) || b_at <= w_at || rows > DENSE_LOSS_ROWS || macs > DENSE_LOSS_MACS {
            return None;
        }
        let mut fused = loss.clone();
        fused.kernel = Kernel::new(Family::Loss, "dense_softmax_ce");
        fused.params[3..5].copy_from_slice(&[n_in, ((b_at - w_at) / 4) as u32]);
        fused.binds.extend([(LOSS_AUX, Bind::Span(w, b)), (LOSS_LAYER_X, bound(dense, A)?)]);
        Some(fused)
    })
}

/// A sigmoid cross-entropy computes its logits itself, in place of the 1x1 convolution to one
/// channel before it (`conv_sigmoid_bce`), where that convolution's bias lies after its
/// weights in their set; and then also the convolution's data gradient, from the loss's
/// gradient, where a later launch computes it and the launches in between only read its
/// inputs (as weight-gradient products) and leave its weights and outputs alone.
pub fn conv_into_loss(mut launches: Vec<Launch>, sets: Sets) -> Vec<Launch> {
    let Some((i, fused, conv)) = conv_loss(&launches, sets) else {
        return launches;
    };
    launches[i + 1] = fused;
    launches.remove(i);
    with_conv_data_grad(&mut launches, i, &conv, sets);
    launches
}

/// Where a 1x1 convolution to one channel is followed by its sigmoid cross-entropy: the
/// convolution's index, the loss launch that replaces both, and the convolution.
fn conv_loss(launches: &[Launch], (set, place): Sets) -> Option<(usize, Launch, Launch)> {
    let i = (0..launches.len().saturating_sub(1)).find(|&i| {
        let (conv, loss) = (&launches[i], &launches[i + 1]);
        let k = &conv.kernel;
        let plain = k.constant("FUSE").is_none() && k.constant("POOLED").is_none();
        let to_one = k.family == Family::Conv2d && k.entry == "matmul" && k.constant("MODE") == Some(0);
        to_one
            && plain
            && conv.params[1] == 1
            && conv.params[4] == 1
            && loss.kernel.entry == "sigmoid_bce"
            && bound(loss, 2) == bound(conv, C)
    })?;
    let conv = &launches[i];
    let (w, b, x) = (bound_buf(conv, A)?, bound_buf(conv, BIAS)?, bound(conv, B)?);
    let ((_, w_at, _), (_, b_at, _)) = (place(w)?, place(b)?);
    if set(w).is_none() || set(w) != set(b) || b_at <= w_at {
        return None;
    }
    let mut fused = launches[i + 1].clone();
    fused.kernel = Kernel::new(Family::Loss, "conv_sigmoid_bce");
    fused.params[3..5].copy_from_slice(&[conv.params[0], ((b_at - w_at) / 4) as u32]);
    fused.binds.extend([(LOSS_LAYER_X, x), (LOSS_LAYER, Bind::Span(w, b))]);
    Some((i, fused, conv.clone()))
}

/// Moves the data gradient of `conv` into the `conv_sigmoid_bce` launch `i`, where
/// [`conv_into_loss`] allows.
fn with_conv_data_grad(launches: &mut Vec<Launch>, i: usize, conv: &Launch, sets: Sets) -> Option<()> {
    let (w, b, x, grad) = (bound_buf(conv, A)?, bound_buf(conv, BIAS)?, bound(conv, B)?, bound(&launches[i], 5)?);
    let data_grad = |l: &Launch| {
        let (k, fuse) = (&l.kernel, l.kernel.constant("FUSE"));
        k.family == Family::Conv2d
            && k.entry == "matmul"
            && k.constant("MODE") == Some(1)
            && k.constant("UNPOOL").is_none()
            && l.params == conv.params
            && (bound(l, A), bound(l, B)) == (Some(Bind::Buf(w)), Some(grad))
            && (fuse.is_none() || (fuse == Some(2) && bound(l, ACT_IN) == Some(x)))
    };
    let j = (i + 1..launches.len()).find(|&j| data_grad(&launches[j]))?;
    let outputs: Vec<BufId> = [C, ACT_OUT].iter().filter_map(|&s| bound_buf(&launches[j], s)).collect();
    let apart = launches[i + 1..j].iter().all(|l| {
        let weight_grad = l.kernel.family.is_gemm() && l.kernel.constant("MODE") == Some(2);
        let reads_only =
            l.binds.iter().all(|&(slot, bind)| ![x, grad].contains(&bind) || (weight_grad && [A, B].contains(&slot)));
        reads_only && !binds_any(l, &outputs, sets) && !binds_any(l, &[w, b], sets)
    });
    if !apart {
        return None;
    }
    let data = &launches[j];
    let act = match data.kernel.constant("ACT") {
        Some(act) => Some((act, bound(data, ACT_OUT)?)),
        None => None,
    };
    let gx = bound(data, C)?;
    launches.remove(j);
    let loss = &mut launches[i];
    loss.kernel = loss.kernel.clone().with("BACKWARD", 1);
    if let Some((act, out)) = act {
        loss.kernel = loss.kernel.clone().with("FUSE", 1).with("ACT", act);
        loss.binds.push((LOSS_ACT_GX, out));
    }
    loss.binds.push((LOSS_LAYER_GX, gx));
    Some(())
}

/// A loss launch that computes its logits (`dense_softmax_ce`) and the two launches after it
/// that run that dense layer's backward, in either order, become one launch
/// (`dense_softmax_ce_backward`): the data gradient (with the backward of the activation
/// before the layer, if folded in) and the one-slice weight gradient (with the SGD step, if
/// folded in), where the gradients lie in their set as the weights and bias do in theirs and
/// each sum is short. `len` gives a buffer's floats.
pub fn loss_runs_dense_backward(
    launches: Vec<Launch>,
    (set, place): Sets,
    len: &dyn Fn(BufId) -> usize,
) -> Vec<Launch> {
    let mut out: Vec<Launch> = Vec::with_capacity(launches.len());
    for l in launches {
        out.push(l);
        let n = out.len();
        if n >= 3 {
            if let Some(fused) = with_dense_backward(&out[n - 3], [&out[n - 2], &out[n - 1]], (set, place), len) {
                out.truncate(n - 3);
                out.push(fused);
            }
        }
    }
    out
}

fn with_dense_backward(
    loss: &Launch,
    next: [&Launch; 2],
    (set, place): Sets,
    len: &dyn Fn(BufId) -> usize,
) -> Option<Launch> {
    if loss.kernel.entry != "dense_softmax_ce" {
        return None;
    }
    let dense = |l: &Launch, mode: u32| l.kernel.family == Family::Dense && l.kernel.constant("MODE") == Some(mode);
    let (data, weight) = match next {
        [a, b] if dense(a, 1) && dense(b, 2) => (a, b),
        [a, b] if dense(a, 2) && dense(b, 1) => (b, a),
        _ => return None,
    };
    let Bind::Span(w, b) = bound(loss, LOSS_AUX)? else {
        return None;
    };
    let (g, x) = (bound(loss, 5)?, bound(loss, LOSS_LAYER_X)?);
    let (classes, n_in, bias_at) = (loss.params[0], loss.params[3], loss.params[4]);
    // The data gradient: g·w, then perhaps the activation's backward from x.
    let kd = &data.kernel;
    let fuse = kd.constant("FUSE").is_some();
    let data_ok = kd.constant("SPLITS") == Some(0)
        && data.params[..2] == [n_in, classes]
        && (bound(data, A), bound(data, B)) == (Some(g), Some(Bind::Buf(w)))
        && (!fuse || (kd.constant("FUSE") == Some(2) && bound(data, ACT_IN) == Some(x)));
    // The weight gradient: gᵀ·x with the bias column, straight into the gradients.
    let kw = &weight.kernel;
    let update = kw.constant("UPDATE").is_some();
    let (gw, gb) = (bound_buf(weight, C)?, bound_buf(weight, BIAS)?);
    let ((_, gw_at, _), (_, gb_at, _)) = (place(gw)?, place(gb)?);
    let weight_ok = kw.constant("SPLITS") == Some(1)
        && kw.constant("BIAS_COL") == Some(1)
        && weight.params[..2] == [n_in, classes]
        && (bound(weight, A), bound(weight, B)) == (Some(g), Some(x))
        && set(gw).is_some()
        && set(gw) == set(gb)
        && gb_at > gw_at
        && (gb_at - gw_at) / 4 == bias_at as u64
        && (!update || (bound(weight, ACT_OUT), bound(weight, ACT_IN)) == (Some(Bind::Buf(w)), Some(Bind::Buf(b))));
    // Each thread's sums one after the other, as in `dense_into_loss`.
    let Bind::Buf(g_buf) = g else {
        return None;
    };
    let rows = len(g_buf) / classes as usize;
    let (n_in, classes) = (n_in as usize, classes as usize);
    let macs = (rows * n_in).div_ceil(256) * classes + (classes * (n_in + 1)).div_ceil(256) * rows;
    if !(data_ok && weight_ok) || macs > DENSE_LOSS_MACS {
        return None;
    }
    let mut fused = loss.clone();
    let mut kernel = Kernel::new(Family::Loss, "dense_softmax_ce_backward");
    if fuse {
        kernel = kernel.with("FUSE", 1).with("ACT", kd.constant("ACT")?);
    }
    if update {
        kernel = kernel.with("UPDATE", 1).with("LR", kw.constant("LR")?);
    }
    fused.kernel = kernel;
    fused.binds.push((LOSS_LAYER_GX, bound(data, C)?));
    if fuse {
        fused.binds.push((LOSS_ACT_GX, bound(data, ACT_OUT)?));
    }
    fused.binds.push((LOSS_LAYER, Bind::Span(gw, gb)));
    Some(fused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::encode::{batch_sum, buf, encode, product, Size};
    use crate::backend::gpu::passes::tests::{place, relu, set};
    use crate::graph::Op;

    #[test]
    fn a_loss_of_a_small_batch_computes_its_logits_itself() {
        let dense = |w: usize, b: usize, n_in: u32| {
            let binds = [buf(A, BufId(50)), buf(B, BufId(w)), buf(BIAS, BufId(b)), buf(C, BufId(51))];
            product(Family::Dense, 0, &[n_in, 10], &binds, (Size::per_n(1), Size::fixed(10), Size::fixed(1)), 100)
        };
        let (logits, target, probs, grad, metrics) = (BufId(51), BufId(52), BufId(53), Some(BufId(54)), BufId(55));
        let op = Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes: 10, batch: 100 };
        let loss = encode(&op, &[])[0].clone();
        let fuse_with = |w: usize, b: usize, rows: usize, n_in: u32| {
            let len = move |id: BufId| if id == logits { 10 * rows } else { 0 };
            dense_into_loss(vec![dense(w, b, n_in), loss.clone()], (&set, &place), &len)
        };
        let fuse = |w: usize, b: usize, rows: usize| fuse_with(w, b, rows, 8);
        let fused = fuse(0, 1, 256);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.entry, "dense_softmax_ce");
        // 8 inputs; the bias 512 bytes after the weights.
        assert_eq!(fused[0].params[3..5], [8, 128]);
        assert!(fused[0].binds.contains(&(LOSS_AUX, Bind::Span(BufId(0), BufId(1)))));
        assert!(fused[0].binds.contains(&(LOSS_LAYER_X, Bind::Buf(BufId(50)))));
        // Left alone: steps of more than 256 samples, the bias before the weights, parameters
        // in no set, long sums (the CNN's 100 samples of 10 outputs of 1,568 terms: 4 · 1,568
        // one after the other).
        assert_eq!(fuse(0, 1, 257).len(), 2);
        assert_eq!(fuse_with(0, 1, 100, 1568).len(), 2);
        assert_eq!(fuse_with(0, 1, 100, 1024).len(), 1);
        assert_eq!(fuse(1, 0, 100).len(), 2);
        assert_eq!(fuse(90, 91, 100).len(), 2);

        // Then the layer's backward, from the loss's gradient 54: its data gradient (into 56)
        // and its weight gradient (into 10 and 11, laid out as the weights 0 and 1).
        let dims = (Size::per_n(1), Size::fixed(8), Size::fixed(1));
        let data =
            product(Family::Dense, 1, &[8, 10], &[buf(A, BufId(54)), buf(B, BufId(0)), buf(C, BufId(56))], dims, 100);
        let weight = |x: usize| {
            let io = (BufId(54), Some(BufId(x)), Some(BufId(11)));
            batch_sum(Family::Dense, &[8, 10], io, BufId(10), (10, 8, 100)).remove(0)
        };
        let len = |id: BufId| if id.0 == 54 { 1000 } else { 0 };
        let backward = |launches: Vec<Launch>| loss_runs_dense_backward(launches, (&set, &place), &len);
        let loss = fused[0].clone();
        for pair in [[data.clone(), weight(50)], [weight(50), data.clone()]] {
            let both = backward([vec![loss.clone()], pair.to_vec()].concat());
            assert_eq!(both.len(), 1);
            assert_eq!(both[0].kernel.entry, "dense_softmax_ce_backward");
            assert!(both[0].binds.contains(&(LOSS_LAYER_GX, Bind::Buf(BufId(56)))));
            assert!(both[0].binds.contains(&(LOSS_LAYER, Bind::Span(BufId(10), BufId(11)))));
        }
        // Not when the weight gradient reads another input than the logits' product did.
        assert_eq!(backward(vec![loss, data, weight(57)]).len(), 3);
    }

    #[test]
    fn a_sigmoid_loss_runs_the_one_channel_convolution_before_it() {
        // conv 1x1 of 8 channels (weights 0, bias 1) from 40 to the logits 41; the loss's
        // gradient 44; the convolution's backward into 47, 48 (weights) and 46 (data).
        let g = crate::graph::ConvGeom { c_in: 8, c_out: 1, h: 16, w: 16, k: 1 };
        let descs = vec![
            crate::graph::BufDesc {
                name: String::new(),
                len: 4 * 8 * 256,
                dtype: crate::graph::Dtype::F32,
                set: None
            };
            64
        ];
        let id = BufId;
        let step = |between: Option<Launch>| {
            let loss = Op::SigmoidBce {
                logits: id(41),
                target: id(42),
                probs: id(43),
                grad: Some(id(44)),
                metrics: id(45),
                per: 256,
                batch: 4,
            };
            let backward =
                Op::Conv2dBackward { x: id(40), w: id(0), gy: id(44), gx: Some(id(46)), gw: id(47), gb: id(48), g };
            let mut ls = encode(&Op::Conv2d { x: id(40), w: id(0), b: id(1), y: id(41), g }, &descs);
            ls.extend(encode(&loss, &descs));
            ls.extend(between);
            ls.extend(encode(&backward, &descs));
            ls
        };
        let before = step(None);
        let after = conv_into_loss(before.clone(), (&set, &place));
        assert_eq!(after.len(), before.len() - 2);
        assert_eq!(after[0].kernel.entry, "conv_sigmoid_bce");
        assert_eq!(after[0].kernel.constant("BACKWARD"), Some(1));
        assert_eq!(after[0].params[3..5], [8, 128]);
        assert!(after[0].binds.contains(&(LOSS_LAYER, Bind::Span(BufId(0), BufId(1)))));
        assert!(after[0].binds.contains(&(LOSS_LAYER_GX, Bind::Buf(BufId(46)))));
        // A launch in between that reads the loss's gradient otherwise than as a weight
        // gradient keeps the data gradient a launch of its own.
        let kept = conv_into_loss(step(Some(relu(44, 49))), (&set, &place));
        assert_eq!(kept.len(), before.len());
        assert_eq!(kept[0].kernel.constant("BACKWARD"), None);
    }
}
