//! Rewrites of an op list's launches that make fewer of them with the same arithmetic: an
//! activation run by the launch before it, a pooling read by the convolutions after it instead
//! of stored, a small batch's logits computed by its loss, a batch and its targets gathered together, the optimiser updates merged over
//! their parameter set, every weight gradient's slices added in one launch, and the
//! optimiser's step taken by the launches that write the gradients.

use super::encode::{
    launch, Bind, Grid, Launch, Size, Slices, A, ACT_IN, ACT_OUT, B, BIAS, C, GATHER_PART, LOSS_ACT_GX, LOSS_AUX,
    LOSS_DENSE_GX, LOSS_DENSE_X, LOSS_LAYER, POOL_ACT_IN, POOL_ACT_OUT,
};
use super::shaders::{Family, Kernel};
use crate::graph::{BufId, ParamSet};

/// Where a parameter-set buffer lies in its set's storage: (position in the set, byte offset,
/// bytes).
pub type Place<'a> = &'a dyn Fn(BufId) -> Option<(usize, u64, u64)>;

/// Which parameter set a buffer belongs to, and where it lies in it.
pub type Sets<'a> = (&'a dyn Fn(BufId) -> Option<ParamSet>, Place<'a>);

/// Folds each activation that follows a product of its input (forward, or its gradient going
/// back) into that product, and each activation's backward that follows a pooling's backward
/// into the pooling; the producer then stores both its own result and the activation's.
pub fn fuse_activations(launches: Vec<Launch>) -> Vec<Launch> {
    merge_neighbours(launches, fuse_activation)
}

/// Replaces each launch and the one after it by `merge(prev, next)` where that gives one, again
/// and again along the list.
fn merge_neighbours(launches: Vec<Launch>, merge: impl Fn(&Launch, &Launch) -> Option<Launch>) -> Vec<Launch> {
    let mut out: Vec<Launch> = Vec::with_capacity(launches.len());
    for next in launches {
        match out.last().and_then(|prev| merge(prev, &next)) {
            Some(merged) => *out.last_mut().expect("merged with the last") = merged,
            None => out.push(next),
        }
    }
    out
}

fn bound(l: &Launch, slot: u32) -> Option<Bind> {
    l.binds.iter().find(|b| b.0 == slot).map(|b| b.1)
}

/// The buffer bound alone at `slot`, if any.
fn bound_buf(l: &Launch, slot: u32) -> Option<BufId> {
    match bound(l, slot)? {
        Bind::Buf(id) => Some(id),
        _ => None,
    }
}

fn fuse_activation(producer: &Launch, act: &Launch) -> Option<Launch> {
    let k = &producer.kernel;
    if k.constant("FUSE").is_some() || act.kernel.family != Family::Activation {
        return None;
    }
    if k.family == Family::MaxPool {
        return fuse_pool_activation(producer, act);
    }
    if !(k.family.is_gemm() && k.entry == "matmul" && k.constant("SPLITS") == Some(0)) {
        return None;
    }
    // The activation reads the product's result: as x going forward, as gy going back.
    let (fuse, input) = match (k.constant("MODE")?, act.kernel.entry) {
        (0, "forward") => (1, 2),
        (1, "backward") => (2, 3),
        _ => return None,
    };
    if bound(act, input)? != bound(producer, C)? {
        return None;
    }
    let mut fused = producer.clone();
    fused.kernel = fused.kernel.with("FUSE", fuse).with("ACT", act.kernel.constant("ACT")?);
    fused.binds.push((ACT_OUT, bound(act, 4)?));
    if fuse == 2 {
        fused.binds.push((ACT_IN, bound(act, 2)?));
    }
    Some(fused)
}

/// A pooling's backward and the backward of the activation that fed the pooling (its gy is
/// the pooling's gx).
fn fuse_pool_activation(pool: &Launch, act: &Launch) -> Option<Launch> {
    if pool.kernel.entry != "backward" || act.kernel.entry != "backward" || bound(act, 3)? != bound(pool, 4)? {
        return None;
    }
    let mut fused = pool.clone();
    fused.kernel = fused.kernel.with("FUSE", 1).with("ACT", act.kernel.constant("ACT")?);
    fused.binds.extend([(POOL_ACT_IN, bound(act, 2)?), (POOL_ACT_OUT, bound(act, 4)?)]);
    Some(fused)
}

/// Drops each pooling forward whose output is read by convolutions alone, as their input x
/// (forward or weight gradient), and whose argmax only the pooling's backward reads: the
/// convolutions then read x through the pooling (`POOLED` in `conv2d.wgsl`) and the backward
/// finds each window's maximum again from the pooling's input (`FROM_INPUT` in
/// `maxpool.wgsl`), which nothing after the pooling may write. Even sides only, where the
/// convolution's input is exactly half the pooling's.
pub fn pool_on_the_fly(mut launches: Vec<Launch>) -> Vec<Launch> {
    let mut i = 0;
    while i < launches.len() {
        match read_through(&launches, i) {
            Some(rewritten) => {
                launches = rewritten;
                launches.remove(i);
            }
            None => i += 1,
        }
    }
    launches
}

/// The launches with launch `i`'s pooling read where it is used, if [`pool_on_the_fly`] may
/// drop it.
fn read_through(launches: &[Launch], i: usize) -> Option<Vec<Launch>> {
    let pool = &launches[i];
    if pool.kernel.family != Family::MaxPool || pool.kernel.entry != "forward" {
        return None;
    }
    let (x, argmax, y) = (bound_buf(pool, 2)?, bound_buf(pool, 3)?, bound_buf(pool, 4)?);
    let (c, h, w) = (pool.params[0], pool.params[1], pool.params[2]);
    if h % 2 == 1 || w % 2 == 1 {
        return None;
    }
    let (mut out, mut read) = (launches.to_vec(), false);
    for (j, l) in out.iter_mut().enumerate().filter(|(j, _)| *j != i) {
        let slots = |id: BufId| l.binds.iter().filter(|b| b.1 == Bind::Buf(id)).map(|b| b.0).collect::<Vec<_>>();
        let (reads_y, reads_argmax, binds_x) = (slots(y), slots(argmax), slots(x));
        if j < i {
            if !(reads_y.is_empty() && reads_argmax.is_empty()) {
                return None;
            }
            continue;
        }
        let k = &l.kernel;
        let conv = k.family == Family::Conv2d && k.entry == "matmul" && matches!(k.constant("MODE"), Some(0 | 2));
        let backward = k.family == Family::MaxPool && k.entry == "backward";
        // After the pooling, x may only be read, by the backward of the activation that wrote it.
        let x_kept = binds_x.is_empty() || backward && binds_x == [POOL_ACT_IN];
        if !x_kept {
            return None;
        }
        if !reads_y.is_empty() {
            if !(conv && reads_y == [B] && l.params[..4] == [c, l.params[1], h / 2, w / 2]) {
                return None;
            }
            l.binds.retain(|b| b.0 != B);
            l.binds.push((B, Bind::Buf(x)));
            l.kernel = l.kernel.clone().with("POOLED", 1);
            read = true;
        }
        if !reads_argmax.is_empty() {
            if !(backward && reads_argmax == [3]) {
                return None;
            }
            l.binds.retain(|b| b.0 != 3);
            l.binds.push((3, Bind::Buf(x)));
            l.kernel = l.kernel.clone().with("FROM_INPUT", 1);
        }
    }
    read.then_some(out)
}

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
        fused.binds.extend([(LOSS_AUX, Bind::Span(w, b)), (LOSS_DENSE_X, bound(dense, A)?)]);
        Some(fused)
    })
}

/// A pooling's backward (finding the maxima again from its input, and with the backward of the
/// activation before it) run by the convolution's data-gradient product before it, as it
/// stores each pooled gradient (`UNPOOL` in `conv2d.wgsl`), where nothing later reads the
/// pooling's own output (the gradient before the activation's backward). Even sides only.
pub fn unpool_in_products(launches: Vec<Launch>) -> Vec<Launch> {
    let mut out: Vec<Launch> = Vec::with_capacity(launches.len());
    for (i, l) in launches.iter().enumerate() {
        let merged = out.last().and_then(|prev| unpool_in_product(prev, l, &launches[i + 1..]));
        match merged {
            Some(m) => *out.last_mut().expect("merged with the last") = m,
            None => out.push(l.clone()),
        }
    }
    out
}

fn unpool_in_product(product: &Launch, pool: &Launch, later: &[Launch]) -> Option<Launch> {
    let (kp, kq) = (&product.kernel, &pool.kernel);
    let data_grad = kp.family == Family::Conv2d && kp.entry == "matmul" && kp.constant("MODE") == Some(1);
    let from_input = kq.family == Family::MaxPool && kq.entry == "backward" && kq.constant("FROM_INPUT") == Some(1);
    if !data_grad || kp.constant("FUSE").is_some() || !from_input || kq.constant("FUSE") != Some(1) {
        return None;
    }
    let (c, h, w) = (pool.params[0], pool.params[1], pool.params[2]);
    let (x, raw) = (bound(pool, 3)?, bound_buf(pool, 4)?);
    let fits = h % 2 == 0 && w % 2 == 0 && product.params[0] == c && product.params[2..4] == [h / 2, w / 2];
    let unread = !later.iter().any(|l| l.binds.iter().any(|b| b.1 == Bind::Buf(raw)));
    if !fits || !unread || bound(pool, 2) != bound(product, C) || bound(pool, POOL_ACT_IN) != Some(x) {
        return None;
    }
    let mut fused = product.clone();
    fused.kernel = fused.kernel.with("UNPOOL", 1).with("ACT", kq.constant("ACT")?);
    fused.binds.extend([(ACT_OUT, bound(pool, POOL_ACT_OUT)?), (ACT_IN, x)]);
    Some(fused)
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
    fused.binds.extend([(LOSS_DENSE_X, x), (LOSS_LAYER, Bind::Span(w, b))]);
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
    loss.binds.push((LOSS_DENSE_GX, gx));
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
    let (g, x) = (bound(loss, 5)?, bound(loss, LOSS_DENSE_X)?);
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
    fused.binds.push((LOSS_DENSE_GX, bound(data, C)?));
    if fuse {
        fused.binds.push((LOSS_ACT_GX, bound(data, ACT_OUT)?));
    }
    fused.binds.push((LOSS_LAYER, Bind::Span(gw, gb)));
    Some(fused)
}

/// Merges each run of like optimiser updates (same kernel and settings) over parameters that
/// lie one after the other, at the same offsets in every set, into one launch over their span.
/// The gaps between parameters hold zeros in every set, and every update leaves zeros at zero.
pub fn merge_updates(launches: Vec<Launch>, place: Place) -> Vec<Launch> {
    merge_neighbours(launches, |a, b| merge_update(a, b, place))
}

/// (slot, first buffer, last buffer) of each binding of an update launch.
type Spans = Vec<(u32, BufId, BufId)>;

/// The spans of an update launch's bindings, and their common range: first and last positions
/// in the set, start and end bytes.
fn update_span(l: &Launch, place: Place) -> Option<(Spans, [u64; 4])> {
    if l.kernel.family != Family::Optim || l.kernel.entry == "l2" {
        return None;
    }
    let spans: Spans = l
        .binds
        .iter()
        .map(|&(slot, b)| match b {
            Bind::Buf(id) => Some((slot, id, id)),
            Bind::Span(first, last) => Some((slot, first, last)),
            Bind::Scratch => None,
        })
        .collect::<Option<_>>()?;
    let range = |&(_, first, last): &(u32, BufId, BufId)| -> Option<[u64; 4]> {
        let ((i, start, _), (j, at, bytes)) = (place(first)?, place(last)?);
        Some([i as u64, j as u64, start, at + bytes])
    };
    let r = range(spans.first()?)?;
    spans.iter().all(|s| range(s) == Some(r)).then_some((spans, r))
}

fn merge_update(a: &Launch, b: &Launch, place: Place) -> Option<Launch> {
    if a.kernel != b.kernel || a.params[1..] != b.params[1..] {
        return None;
    }
    let ((spans_a, [_, last_a, start, _]), (spans_b, [first_b, _, _, end])) =
        (update_span(a, place)?, update_span(b, place)?);
    // b's parameters must be the ones right after a's, in the same slots.
    if first_b != last_a + 1 || spans_a.iter().map(|s| s.0).ne(spans_b.iter().map(|s| s.0)) {
        return None;
    }
    let binds = spans_a.iter().zip(&spans_b).map(|(&(slot, first, _), &(_, _, last))| (slot, Bind::Span(first, last)));
    let len = ((end - start) / 4) as usize;
    let mut params = a.params.clone();
    params[0] = len as u32;
    Some(Launch { binds: binds.collect(), params, grid: Grid::Flat(Size::fixed(len)), ..a.clone() })
}

/// Gives every launch that needs scratch a region of its own (at a 256-byte boundary, as
/// storage bindings need); a launch that binds scratch without needing any reads what the
/// launch before it wrote (a loss's total, a sum of slices). Returns the launches and the
/// scratch floats they need in all.
pub fn place_scratch(mut launches: Vec<Launch>) -> (Vec<Launch>, usize) {
    let mut end = 0;
    for i in 0..launches.len() {
        if launches[i].scratch > 0 {
            launches[i].scratch_at = end;
            end += launches[i].scratch.next_multiple_of(64);
        } else if i > 0 && launches[i].binds.iter().any(|b| b.1 == Bind::Scratch) {
            let at = launches[i - 1].scratch_at;
            launches[i].scratch_at = at;
            for slices in &mut launches[i].sums {
                slices.at += at;
            }
        }
    }
    (launches, end)
}

/// Outputs of one sum-of-slices launch (bindings o0..o2 of `reduce.wgsl`).
const SUM_OUTPUTS: usize = 3;
/// Words of a sum-of-slices launch's parameters before its segments (`count` and `adam`).
const SUM_HEAD: usize = 8;
/// Segments of one sum-of-slices launch (`MAX_SEGMENTS` in `reduce.wgsl`).
const SUM_SEGMENTS: usize = 16;

/// Merges the step's sums of slices into as few launches as bindings allow, each placed before
/// the first launch that reads what it writes (the optimiser's, or an L2 penalty's), so that a
/// step adds all its weight gradients' slices in one launch. Gradients of one parameter set
/// share a binding; `set` says which set a buffer belongs to, `place` where it lies in it.
pub fn combine_sums(launches: Vec<Launch>, (set, place): Sets) -> Vec<Launch> {
    let mut out = Vec::with_capacity(launches.len());
    let mut pending: Vec<Slices> = Vec::new();
    for l in launches {
        if !l.sums.is_empty() {
            let mut more = pending.clone();
            more.extend(&l.sums);
            if sum_launch(&more, set, place).is_none() {
                out.extend(sum_launch(&pending, set, place));
                more = l.sums.clone();
            }
            pending = more;
            continue;
        }
        let written: Vec<BufId> = pending.iter().flat_map(Slices::outputs).collect();
        if binds_any(&l, &written, (set, place)) || l.kernel.family == Family::Optim {
            out.extend(sum_launch(&pending, set, place));
            pending.clear();
        }
        out.push(l);
    }
    out.extend(sum_launch(&pending, set, place));
    out
}

/// One launch adding the slices of `sums`, or `None` when there are none or they need more
/// bindings or segments than one launch has.
fn sum_launch(sums: &[Slices], set: &dyn Fn(BufId) -> Option<ParamSet>, place: Place) -> Option<Launch> {
    if sums.is_empty() || sums.len() > SUM_SEGMENTS {
        return None;
    }
    // Each output's binding: its parameter set's span, or the buffer itself.
    let outputs: Vec<BufId> = sums.iter().flat_map(Slices::outputs).collect();
    let mut binds: Vec<(Option<ParamSet>, BufId, BufId)> = Vec::new();
    for &id in &outputs {
        let start = |id: BufId| place(id).map_or(0, |p| p.1);
        match binds.iter_mut().find(|b| b.0.is_some() && b.0 == set(id)) {
            Some(b) if start(id) < start(b.1) => b.1 = id,
            Some(b) if start(id) > start(b.2) => b.2 = id,
            Some(_) => {}
            None => binds.push((set(id), id, id)),
        }
    }
    if binds.len() > SUM_OUTPUTS {
        return None;
    }
    // (binding, offset in floats) of an output.
    let locate = |id: BufId| -> [u32; 2] {
        let b = binds.iter().position(|b| b.1 == id || (b.0.is_some() && b.0 == set(id))).expect("bound above");
        let offset = match (place(id), place(binds[b].1)) {
            (Some(p), Some(first)) if binds[b].0.is_some() => (p.1 - first.1) / 4,
            _ => 0,
        };
        [b as u32, offset as u32]
    };
    let mut params = vec![0; SUM_HEAD];
    params[0] = sums.len() as u32;
    let mut first = 0;
    for s in sums {
        let [w_out, w_at] = locate(s.w);
        let [b_out, b_at] = s.bias.map_or([0, 0], locate);
        params.extend([first, s.len as u32, s.splits, s.at as u32]);
        params.extend([s.cols as u32, s.bias.is_some().into(), w_at, b_at]);
        params.extend([w_out, b_out, 0, 0]);
        first += s.len as u32;
    }
    params.resize(SUM_HEAD + 12 * SUM_SEGMENTS, 0);
    let mut bound = vec![(2, Bind::Scratch)];
    for (i, &(in_set, first, last)) in binds.iter().enumerate() {
        let bind = if in_set.is_some() { Bind::Span(first, last) } else { Bind::Buf(first) };
        bound.push((3 + i as u32, bind));
    }
    let mut l = launch(
        Kernel::new(Family::Reduce, "sum_slices"),
        params,
        &bound,
        Grid::PerElement(Size::fixed(first as usize)),
    );
    l.sums = sums.to_vec();
    Some(l)
}

/// The gradients a launch writes, if it is one that can take a plain SGD step as it stores
/// them: a weight-gradient product or a bias row sum of one slice, or a sum of slices.
fn gradients_written(l: &Launch) -> Option<Vec<BufId>> {
    let k = &l.kernel;
    let one_slice = k.constant("SPLITS") == Some(1) && (k.entry == "row_sums" || k.constant("MODE") == Some(2));
    if k.family.is_gemm() && one_slice {
        let outs = [Some(C), (k.constant("BIAS_COL") == Some(1)).then_some(BIAS)];
        return outs.into_iter().flatten().map(|slot| bound_buf(l, slot)).collect();
    }
    (k.entry == "sum_slices").then(|| l.sums.iter().flat_map(Slices::outputs).collect())
}

/// Folds the step's optimiser update into the launches that write its gradients, when they
/// write every one of them and no launch between reads what they write or the parameters they
/// would move: plain SGD into one-slice weight-gradient products (a data-gradient product that
/// reads the weights is moved before the weight gradient's where the two are independent) and
/// into sums of slices, Adam into sums of slices. `sets` says which parameter set a buffer
/// belongs to (see [`combine_sums`]), `counterpart` which buffer of another set lies where a
/// gradient lies in its own (its parameter, its optimiser state).
pub fn fold_update(launches: Vec<Launch>, sets: Sets, counterpart: Counterpart) -> Vec<Launch> {
    try_fold_update(launches.clone(), sets, counterpart).unwrap_or(launches)
}

/// The buffer of a set at a gradient's place in the gradient set.
pub type Counterpart<'a> = &'a dyn Fn(BufId, ParamSet) -> Option<BufId>;

/// Whether `l` binds any of `ids`, alone or within a span.
fn binds_any(l: &Launch, ids: &[BufId], (set, place): Sets) -> bool {
    let within = |id: BufId, a: BufId, b: BufId| match (place(id), place(a), place(b)) {
        (Some(p), Some(a_at), Some(b_at)) => set(id) == set(a) && (a_at.0..=b_at.0).contains(&p.0),
        _ => false,
    };
    l.binds.iter().any(|&(_, b)| match b {
        Bind::Buf(id) => ids.contains(&id),
        Bind::Span(a, b) => ids.iter().any(|&id| within(id, a, b)),
        Bind::Scratch => false,
    })
}

fn try_fold_update(mut ls: Vec<Launch>, sets: Sets, counterpart: Counterpart) -> Option<Vec<Launch>> {
    let place = sets.1;
    let is_update = |l: &Launch| l.kernel.family == Family::Optim && ["sgd", "adam"].contains(&l.kernel.entry);
    let u = ls.iter().position(is_update)?;
    if ls.iter().filter(|l| is_update(l)).count() > 1 {
        return None;
    }
    let adam = ls[u].kernel.entry == "adam";
    let (first, last) = match bound(&ls[u], 3)? {
        Bind::Span(a, b) => (a, b),
        Bind::Buf(g) => (g, g),
        Bind::Scratch => return None,
    };
    let (lo, hi) = (place(first)?.0, place(last)?.0);
    let moved: &[ParamSet] =
        if adam { &[ParamSet::Value, ParamSet::State(0), ParamSet::State(1)] } else { &[ParamSet::Value] };
    let touches = |l: &Launch, ids: &[BufId]| binds_any(l, ids, sets);
    let mut covered = Vec::new();
    let mut i = 0;
    while i < u {
        let Some(grads) = gradients_written(&ls[i]) else {
            i += 1;
            continue;
        };
        // Each of them must be one of the update's, in the gradient set.
        let members: Option<Vec<usize>> = grads.iter().map(|&g| place(g).map(|p| p.0)).collect();
        let members = members?;
        if members.iter().any(|m| !(lo..=hi).contains(m)) {
            return None;
        }
        let mut watched = grads.clone();
        for &g in &grads {
            for &set in moved {
                watched.push(counterpart(g, set)?);
            }
        }
        let sums = ls[i].kernel.entry == "sum_slices";
        if adam && !sums {
            return None;
        }
        if !sums {
            // A data-gradient product that reads the weights runs first, where independent.
            while i + 1 < u && touches(&ls[i + 1], &watched) {
                let next = &ls[i + 1];
                let product = next.kernel.family.is_gemm() && next.kernel.constant("MODE") == Some(1);
                let writes: Vec<BufId> = [C, ACT_OUT].iter().filter_map(|&s| bound_buf(next, s)).collect();
                if !product || touches(next, &grads) || touches(&ls[i], &writes) {
                    return None;
                }
                ls.swap(i, i + 1);
                i += 1;
            }
        }
        if ls[i + 1..u].iter().any(|l| touches(l, &watched)) {
            return None;
        }
        let update = ls[u].clone();
        take_step(&mut ls[i], &grads, counterpart, &update)?;
        covered.extend(members);
        i += 1;
    }
    covered.sort_unstable();
    covered.dedup();
    (covered.len() == hi - lo + 1).then(|| {
        ls.remove(u);
        ls
    })
}

/// Makes `l`, which writes `grads`, also take the step of the `update` launch (its parameters
/// as `optim.wgsl`'s: length, rate, β1, β2, ε).
fn take_step(l: &mut Launch, grads: &[BufId], counterpart: Counterpart, update: &Launch) -> Option<()> {
    let (lr, adam) = (update.params[1], update.kernel.entry == "adam");
    let value = |g: BufId| counterpart(g, ParamSet::Value);
    if l.kernel.entry == "sum_slices" {
        // The one binding of the gradient set (every gradient here is in it).
        let (slot, first, last) = l.binds.iter().find_map(|&(slot, b)| match b {
            Bind::Span(first, last) if grads.contains(&first) => Some((slot, first, last)),
            _ => None,
        })?;
        l.params[1..4].copy_from_slice(&[1 + u32::from(adam), slot - 3, lr]);
        let mut sets = vec![ParamSet::Value];
        if adam {
            l.params[4..7].copy_from_slice(&update.params[2..5]);
            sets.extend([ParamSet::State(0), ParamSet::State(1)]);
        }
        for (binding, set) in (6..).zip(sets) {
            l.binds.push((binding, Bind::Span(counterpart(first, set)?, counterpart(last, set)?)));
        }
    } else {
        l.kernel = l.kernel.clone().with("UPDATE", 1).with("LR", lr);
        l.binds.push((ACT_OUT, Bind::Buf(value(grads[0])?)));
        if let Some(&bias) = grads.get(1) {
            l.binds.push((ACT_IN, Bind::Buf(value(bias)?)));
        }
    }
    Some(())
}

/// Gathers of one batch (its inputs and its targets, by one index list), each with one part,
/// become one launch of two parts.
pub fn pair_gathers(launches: Vec<Launch>) -> Vec<Launch> {
    merge_neighbours(launches, |a, b| {
        let one_part = |l: &Launch| l.kernel.family == Family::Gather && l.params[GATHER_PART] == 0;
        if !one_part(a) || !one_part(b) || bound(a, 3) != bound(b, 3) {
            return None;
        }
        let mut both = a.clone();
        both.params[GATHER_PART..].copy_from_slice(&b.params[..GATHER_PART]);
        both.binds.extend([(5, bound(b, 2)?), (6, bound(b, 4)?)]);
        both.grid = Grid::Flat(Size::per_n((a.params[0] + b.params[0]) as usize));
        Some(both)
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode::{batch_sum, buf, encode, product, update, A, B};
    use super::*;
    use crate::graph::Op;
    use crate::model::Act;

    fn adam(w: usize, lr: f32, len: usize) -> Launch {
        let ids = [w, w + 10, w + 20, w + 30].map(BufId);
        let binds: Vec<_> = ids.iter().enumerate().map(|(i, &id)| buf(2 + i as u32, id)).collect();
        update("adam", [len as u32, lr.to_bits(), 0, 0, 0, 0], &binds, len)
    }

    /// Buffers 0..4 and their sets' copies (+10, +20, +30): 100, 7, 300, 5 floats, at offsets
    /// aligned to 256 bytes, alike in every set; buffers from 40 on are in no set.
    fn place(id: BufId) -> Option<(usize, u64, u64)> {
        let lens = [100u64, 7, 300, 5];
        let i = id.0 % 10;
        if id.0 >= 40 || i >= lens.len() {
            return None;
        }
        let offset = lens[..i].iter().map(|l| (l * 4).next_multiple_of(256)).sum();
        Some((i, offset, lens[i] * 4))
    }

    #[test]
    fn consecutive_like_updates_become_one_launch_over_their_span() {
        let merged = merge_updates(vec![adam(0, 0.1, 100), adam(1, 0.1, 7), adam(2, 0.1, 300)], &place);
        assert_eq!(merged.len(), 1);
        // 100 floats (512 bytes with the gap), 7 (256), then 300: 768 bytes + 1200.
        assert_eq!(merged[0].params[0], (768 + 1200) / 4);
        assert_eq!(merged[0].binds[0], (2, Bind::Span(BufId(0), BufId(2))));
        assert_eq!(merged[0].binds[3], (5, Bind::Span(BufId(30), BufId(32))));
    }

    fn relu(x: usize, y: usize) -> Launch {
        encode(&Op::Activation { act: Act::Relu, x: BufId(x), y: BufId(y), per: 64 }, &[])[0].clone()
    }

    fn dense(x: usize, y: usize) -> Launch {
        let (w, b) = (BufId(90), BufId(91));
        product(
            Family::Dense,
            0,
            &[8, 64],
            &[buf(A, BufId(x)), buf(B, w), buf(BIAS, b), buf(C, BufId(y))],
            (Size::per_n(1), Size::fixed(64), Size::fixed(1)),
            100,
        )
    }

    #[test]
    fn an_activation_of_a_product_is_stored_by_the_product() {
        let fused = fuse_activations(vec![dense(0, 1), relu(1, 2)]);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.constant("FUSE"), Some(1));
        assert_eq!(fused[0].kernel.constant("ACT"), Some(0));
        assert!(fused[0].binds.contains(&(ACT_OUT, Bind::Buf(BufId(2)))));
        // An activation of another buffer stays a launch of its own.
        assert_eq!(fuse_activations(vec![dense(0, 1), relu(3, 2)]).len(), 2);
    }

    #[test]
    fn an_activation_backward_after_pooling_backward_is_run_by_the_pooling() {
        let shape = crate::model::Shape::new(2, 4, 4);
        let pool = |gx: usize| {
            let op = Op::MaxPool2dBackward { gy: BufId(0), argmax: BufId(1), gx: BufId(gx), shape };
            encode(&op, &[])[0].clone()
        };
        let act =
            encode(&Op::ActivationBackward { act: Act::Tanh, y: BufId(3), gy: BufId(2), gx: BufId(4), per: 32 }, &[])
                [0]
            .clone();
        let fused = fuse_activations(vec![pool(2), act.clone()]);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.constant("ACT"), Some(2));
        assert!(fused[0].binds.contains(&(POOL_ACT_IN, Bind::Buf(BufId(3)))));
        assert!(fused[0].binds.contains(&(POOL_ACT_OUT, Bind::Buf(BufId(4)))));
        assert_eq!(fuse_activations(vec![pool(5), act]).len(), 2);
    }

    /// conv 0 → relu 1 → pool 2 (argmax 3) → conv 4, forward and backward as a step has them
    /// (the relu and the activations' backward already fused), on `side`-square images; `also`
    /// comes after the pooling.
    fn conv_pool_conv(side: usize, also: Option<Launch>) -> Vec<Launch> {
        let shape = crate::model::Shape::new(2, side, side);
        let g = crate::graph::ConvGeom { c_in: 2, c_out: 3, h: side / 2, w: side / 2, k: 3 };
        let id = BufId;
        let conv = |x: usize, y: usize| Op::Conv2d { x: id(x), w: id(60), b: id(61), y: id(y), g };
        let backward =
            Op::Conv2dBackward { x: id(2), w: id(60), gy: id(5), gx: Some(id(6)), gw: id(62), gb: id(63), g };
        // Every buffer sized for a batch of 4 of the largest per-sample size.
        let descs = vec![
            crate::graph::BufDesc {
                name: String::new(),
                len: 4 * 2 * side * side,
                dtype: crate::graph::Dtype::F32,
                set: None
            };
            64
        ];
        let act_back = Op::ActivationBackward { act: Act::Relu, y: id(1), gy: id(7), gx: id(8), per: 2 * side * side };
        let mut ls = fuse_activations(
            [
                encode(&conv(40, 0), &descs),
                vec![relu(0, 1)],
                encode(&Op::MaxPool2d { x: id(1), y: id(2), argmax: id(3), shape }, &descs),
                encode(&conv(2, 4), &descs),
                encode(&backward, &descs),
                encode(&Op::MaxPool2dBackward { gy: id(6), argmax: id(3), gx: id(7), shape }, &descs),
                encode(&act_back, &descs),
            ]
            .concat(),
        );
        ls.extend(also);
        ls
    }

    #[test]
    fn convolutions_read_through_a_pooling_that_is_then_never_stored() {
        let before = conv_pool_conv(8, None);
        let after = pool_on_the_fly(before.clone());
        assert_eq!(after.len(), before.len() - 1);
        assert!(!after.iter().any(|l| l.kernel.family == Family::MaxPool && l.kernel.entry == "forward"));
        // The second convolution's forward and weight gradient read relu's output through the
        // pooling; its data gradient reads no x.
        let pooled: Vec<_> = after.iter().filter(|l| l.kernel.constant("POOLED") == Some(1)).collect();
        assert_eq!(pooled.iter().map(|l| l.kernel.constant("MODE")).collect::<Vec<_>>(), [Some(0), Some(2)]);
        assert!(pooled.iter().all(|l| bound(l, B) == Some(Bind::Buf(BufId(1)))));
        let back = after.iter().find(|l| l.kernel.entry == "backward").expect("the pooling's backward");
        assert_eq!(back.kernel.constant("FROM_INPUT"), Some(1));
        assert_eq!(bound(back, 3), Some(Bind::Buf(BufId(1))));
        // Left alone: odd sides, another reader of the pooled values, a later write of relu's
        // output.
        assert_eq!(pool_on_the_fly(conv_pool_conv(9, None)).len(), before.len());
        let with = |l: Launch| pool_on_the_fly(conv_pool_conv(8, Some(l))).len();
        assert_eq!(with(relu(2, 9)), before.len() + 1);
        assert_eq!(with(relu(9, 1)), before.len() + 1);

        // The second convolution's data gradient then also runs the pooling's backward (and the
        // relu's), unless something later reads the pooling's gradient 7.
        let unpooled = unpool_in_products(after.clone());
        assert_eq!(unpooled.len(), after.len() - 1);
        let data = unpooled.iter().find(|l| l.kernel.constant("UNPOOL") == Some(1)).expect("fused");
        assert_eq!((data.kernel.constant("MODE"), data.kernel.constant("ACT")), (Some(1), Some(0)));
        assert!(data.binds.contains(&(ACT_IN, Bind::Buf(BufId(1)))));
        assert!(data.binds.contains(&(ACT_OUT, Bind::Buf(BufId(8)))));
        let read = pool_on_the_fly(conv_pool_conv(8, Some(relu(7, 9))));
        assert_eq!(unpool_in_products(read.clone()).len(), read.len());
    }

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
        assert!(fused[0].binds.contains(&(LOSS_DENSE_X, Bind::Buf(BufId(50)))));
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
            assert!(both[0].binds.contains(&(LOSS_DENSE_GX, Bind::Buf(BufId(56)))));
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
        assert!(after[0].binds.contains(&(LOSS_DENSE_GX, Bind::Buf(BufId(46)))));
        // A launch in between that reads the loss's gradient otherwise than as a weight
        // gradient keeps the data gradient a launch of its own.
        let kept = conv_into_loss(step(Some(relu(44, 49))), (&set, &place));
        assert_eq!(kept.len(), before.len());
        assert_eq!(kept[0].kernel.constant("BACKWARD"), None);
    }

    /// A conv weight gradient `[4, 9]` with its bias, summed over 100,000 terms in 512 slices.
    fn wgrad(w: usize, bias: usize) -> Vec<Launch> {
        let io = (BufId(98), Some(BufId(99)), Some(BufId(bias)));
        batch_sum(Family::Conv2d, &[1, 4, 10, 10, 3], io, BufId(w), (4, 9, 100_000))
    }

    /// Buffers 0..4 are parameters, 10..14 their gradients and 20..24, 30..34 their optimiser
    /// states, in sets laid out as `place` says.
    fn set(id: BufId) -> Option<ParamSet> {
        match id.0 {
            0..4 => Some(ParamSet::Value),
            10..14 => Some(ParamSet::Grad),
            20..24 => Some(ParamSet::State(0)),
            30..34 => Some(ParamSet::State(1)),
            _ => None,
        }
    }

    fn sums(launches: Vec<Launch>) -> Vec<Launch> {
        combine_sums(place_scratch(launches).0, (&set, &place))
    }

    /// The MLP's backward and update: dense weight gradients of one slice (buffers 12, 13 and
    /// 10, 11), between them the data gradient, which reads the weights (2), then SGD.
    fn mlp_backward(between: Option<Launch>) -> Vec<Launch> {
        let wgrad = |w: usize| {
            batch_sum(Family::Dense, &[8, 4], (BufId(50), Some(BufId(51)), Some(BufId(w + 1))), BufId(w), (4, 8, 100))
        };
        let dims = (Size::per_n(1), Size::fixed(8), Size::fixed(1));
        let data_grad =
            product(Family::Dense, 1, &[8, 4], &[buf(A, BufId(50)), buf(B, BufId(2)), buf(C, BufId(52))], dims, 100);
        let sgd = update(
            "sgd",
            [480, 0.25f32.to_bits(), 0, 0, 0, 0],
            &[(2, Bind::Span(BufId(0), BufId(3))), (3, Bind::Span(BufId(10), BufId(13)))],
            480,
        );
        let mut step = wgrad(12);
        step.push(data_grad);
        step.extend(wgrad(10));
        step.extend(between);
        step.push(sgd);
        step
    }

    fn fold(launches: Vec<Launch>) -> Vec<Launch> {
        let counterpart = |g: BufId, other: ParamSet| {
            let base = match other {
                ParamSet::Value => 0,
                ParamSet::State(i) => 20 + 10 * i as usize,
                ParamSet::Grad => 10,
            };
            (10..14).contains(&g.0).then(|| BufId(g.0 - 10 + base))
        };
        fold_update(launches, (&set, &place), &counterpart)
    }

    #[test]
    fn products_that_write_every_gradient_take_the_sgd_step() {
        let out = fold(mlp_backward(None));
        let modes: Vec<_> = out.iter().map(|l| l.kernel.constant("MODE")).collect();
        assert_eq!(modes, [Some(1), Some(2), Some(2)], "the data gradient first, no update launch");
        for (l, w) in out[1..].iter().zip([2, 0]) {
            assert_eq!(l.kernel.constant("UPDATE"), Some(1));
            assert_eq!(l.kernel.constant("LR"), Some(0.25f32.to_bits()));
            assert!(
                l.binds.contains(&(ACT_OUT, Bind::Buf(BufId(w))))
                    && l.binds.contains(&(ACT_IN, Bind::Buf(BufId(w + 1))))
            );
        }
    }

    #[test]
    fn the_sum_of_every_gradient_takes_the_adam_step() {
        let update = merge_updates((0..4).map(|i| adam(i, 0.1, [100, 7, 300, 5][i])).collect(), &place);
        let mut step = wgrad(10, 11);
        step.extend(wgrad(12, 13));
        step.extend(update.clone());
        let out = fold(sums(step));
        let kinds: Vec<_> = out.iter().map(|l| l.kernel.entry).collect();
        assert_eq!(kinds, ["matmul", "matmul", "sum_slices"]);
        let sum = &out[2];
        assert_eq!(sum.params[1..4], [2, 0, 0.1f32.to_bits()], "Adam, on output binding 0");
        for (binding, first) in [(6, 0), (7, 20), (8, 30)] {
            assert!(sum.binds.contains(&(binding, Bind::Span(BufId(first), BufId(first + 3)))));
        }
        // Adam is not folded into products.
        let mut mlp = mlp_backward(None);
        *mlp.last_mut().unwrap() = update[0].clone();
        assert_eq!(fold(mlp.clone()).len(), mlp.len());
    }

    #[test]
    fn the_sgd_step_stays_a_launch_when_not_every_gradient_is_written_or_one_is_read_before() {
        let mut missing = mlp_backward(None);
        missing.remove(2);
        assert_eq!(fold(missing.clone()).len(), missing.len());
        let l2 = Op::L2 { w: BufId(0), grad: Some(BufId(10)), metrics: BufId(60), lambda: 1e-4, len: 32 };
        let with_l2 = mlp_backward(Some(encode(&l2, &[])[0].clone()));
        assert_eq!(fold(with_l2.clone()).len(), with_l2.len());
    }

    #[test]
    fn a_step_adds_its_gradient_slices_in_one_launch_before_the_update() {
        let mut step = wgrad(10, 11);
        step.extend(wgrad(12, 13));
        step.push(adam(10, 0.1, 100));
        let out = sums(step);
        let kinds: Vec<_> = out.iter().map(|l| l.kernel.entry).collect();
        assert_eq!(kinds, ["matmul", "matmul", "sum_slices", "adam"]);
        let sum = &out[2];
        assert_eq!(sum.binds, [(2, Bind::Scratch), (3, Bind::Span(BufId(10), BufId(13)))]);
        // 40 elements each (4 rows of 9 + the bias column); the second product's slices start
        // after the first's 512·40 floats; outputs at 0, 512, 768 and 2048 bytes in the set.
        assert_eq!(sum.params[..SUM_HEAD], [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sum.params[8..20], [0, 40, 512, 0, 9, 1, 0, 128, 0, 0, 0, 0]);
        assert_eq!(sum.params[20..32], [40, 40, 512, 512 * 40, 9, 1, 192, 512, 0, 0, 0, 0]);
        assert_eq!(out[1].scratch_at, 512 * 40);
        assert_eq!(sum.grid.groups(1), [80, 1, 1]);
    }

    #[test]
    fn sums_come_before_a_reader_of_their_outputs_and_split_when_bindings_run_out() {
        let mut step = wgrad(10, 11);
        step.push(relu(11, 50));
        step.extend(wgrad(12, 13));
        let kinds: Vec<_> = sums(step).iter().map(|l| l.kernel.entry).collect();
        assert_eq!(kinds, ["matmul", "sum_slices", "forward", "matmul", "sum_slices"]);
        // Outside a set, each output takes one of the three output bindings: a weight and a bias
        // gradient take two, so two products need two launches.
        let step: Vec<_> = (0..2).flat_map(|i| wgrad(60 + 2 * i, 61 + 2 * i)).collect();
        let out = sums(step);
        let counts: Vec<_> = out.iter().filter(|l| l.kernel.entry == "sum_slices").map(|l| l.params[0]).collect();
        assert_eq!(counts, [1, 1]);
        assert_eq!(out.iter().filter(|l| l.kernel.entry == "matmul").count(), 2);
    }

    #[test]
    fn a_batch_and_its_targets_are_gathered_in_one_launch() {
        let shape = crate::model::Shape::new(1, 28, 28);
        let image = Op::Gather {
            data: BufId(0),
            index: BufId(1),
            out: BufId(2),
            shape,
            scale: 1.0 / 255.0,
            binarize: false,
            mirrored: 0,
        };
        let labels =
            |index: usize| Op::GatherOneHot { labels: BufId(3), index: BufId(index), out: BufId(4), classes: 10 };
        let both = pair_gathers([image.clone(), labels(1)].iter().flat_map(|op| encode(op, &[])).collect());
        assert_eq!(both.len(), 1);
        assert_eq!(both[0].params[..GATHER_PART], [784, 28, (1.0f32 / 255.0).to_bits(), 0, 0, 0, 0, 0]);
        assert_eq!(both[0].params[GATHER_PART..], [10, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(both[0].grid.groups(100), [(794 * 100u32).div_ceil(256), 1, 1]);
        assert!(both[0].binds.contains(&(5, Bind::Buf(BufId(3)))) && both[0].binds.contains(&(6, Bind::Buf(BufId(4)))));
        // By another index list: two launches.
        assert_eq!(pair_gathers([image, labels(5)].iter().flat_map(|op| encode(op, &[])).collect()).len(), 2);
    }

    #[test]
    fn unlike_or_separated_updates_stay_apart() {
        assert_eq!(merge_updates(vec![adam(0, 0.1, 100), adam(1, 0.2, 7)], &place).len(), 2);
        assert_eq!(merge_updates(vec![adam(0, 0.1, 100), adam(2, 0.1, 300)], &place).len(), 2);
        assert_eq!(merge_updates(vec![adam(1, 0.1, 7), adam(0, 0.1, 100)], &place).len(), 2);
    }
}
