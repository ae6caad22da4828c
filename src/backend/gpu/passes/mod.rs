//! An op list's launches, unit by unit as the plan's fusion (`graph/fuse.rs`) groups the ops
//! ([`lower`]): an activation run by its producer's launch, a max pooling that is never stored
//! (`pool`), the last layer run by its loss (`loss`), the optimiser's step taken by the launches
//! that write the gradients. Then launches of independent work are packed with the same
//! arithmetic: a batch and its targets gathered together, the optimiser updates merged over their
//! parameter set, every weight gradient's slices added in one launch.

mod loss;
mod pool;

use loss::{conv_loss, dense_loss, loss_runs_dense_backward, with_conv_data_grad, DENSE_LOSS_ROWS};
use pool::{read_through, unpool};

use super::bindings::{self, BatchNorm, Gemm, MaxPool, Mode, Optim, Params, ReduceP, Segment, SEGMENTS};
use super::encode::{encode, launch, splits, Bind, Grid, Launch, Size, Slices};
use super::layout::Layout;
use super::shaders::{Family, Kernel};
use crate::graph::{fuse, BufDesc, BufId, Fusable, Fusion, Op, ParamSet};

/// Where a parameter-set buffer lies in its set's storage: (position in the set, byte offset,
/// bytes).
pub type Place<'a> = &'a dyn Fn(BufId) -> Option<(usize, u64, u64)>;

/// Which parameter set a buffer belongs to, and where it lies in it.
pub type Sets<'a> = (&'a dyn Fn(BufId) -> Option<ParamSet>, Place<'a>);

/// What this backend runs inside a producer: the activation of any product (forward, or its
/// backward in an input-gradient product), of a batch normalisation's values and of a max
/// pooling's backward, storing the
/// producer's own output as well; a max pooling is read through by the convolutions after it
/// where it can be ([`pool`]); a loss computes the logits of the layer before it ([`loss`]).
const FUSABLE: Fusable = Fusable {
    dense_activation: true,
    kept_gradient: true,
    conv_pool: |_| false,
    read_through_pool: true,
    logits_in_loss,
    backward_in_loss,
    step_in_gradient,
};

/// The loss kernels read a layer's weights and bias as one span of their parameter set, the
/// bias after the weights; `dense_softmax_ce` has a thread per sample, `conv_sigmoid_bce` takes
/// any number of pixels.
fn logits_in_loss(producer: &Op, rows: usize, descs: &[BufDesc]) -> bool {
    match *producer {
        Op::Dense { w, b, .. } => in_one_set(w, b, descs) && rows <= DENSE_LOSS_ROWS,
        Op::Conv2d { w, b, .. } => in_one_set(w, b, descs),
        _ => false,
    }
}

/// `dense_softmax_ce_backward` writes the weight and bias gradients as one span of the gradient
/// set, and sums them in one slice, as the product of few rows does; `conv_sigmoid_bce` computes
/// a convolution's data gradient.
fn backward_in_loss(op: &Op, rows: usize, descs: &[BufDesc]) -> bool {
    match *op {
        Op::DenseBackward { gw, gb, .. } => in_one_set(gw, gb, descs) && splits(rows) == 1,
        Op::Conv2dBackward { .. } => true,
        _ => false,
    }
}

/// Plain SGD is taken by a weight-gradient product of one slice as it stores the gradients (the
/// data-gradient product that reads the weights then runs first), or by the launch that adds a
/// product's slices; Adam only by the latter, so every sum of the writer must come in slices,
/// and so must a transposed convolution's, whose bias row sums stand between its weight gradient
/// and its data gradient. Momentum is never folded.
fn step_in_gradient(update: &Op, writer: &Op, descs: &[BufDesc]) -> bool {
    let per = |id: BufId, len: usize| descs[id.0].len / len;
    // The terms of each of the writer's batch sums at its largest batch.
    let sums: Vec<usize> = match *writer {
        Op::DenseBackward { gy, n_out, .. } => vec![per(gy, n_out)],
        Op::Conv2dBackward { gy, ref g, .. } => {
            let q = g.out().0 * g.out().1;
            vec![per(gy, g.c_out * q) * q]
        }
        Op::ConvTranspose2dBackward { gy, ref g, .. } => {
            let batch = per(gy, g.c_out * 4 * g.h * g.w);
            vec![batch * g.h * g.w, batch * 4 * g.h * g.w]
        }
        _ => return false,
    };
    let in_slices = sums.iter().all(|&k| splits(k) > 1);
    match update {
        Op::Sgd { .. } => in_slices || !matches!(writer, Op::ConvTranspose2dBackward { .. }),
        Op::Adam { .. } => in_slices,
        _ => false,
    }
}

/// Whether `a` and `b` belong to one parameter set, `b` after `a` (as a plan adds a layer's
/// weights and bias).
fn in_one_set(a: BufId, b: BufId, descs: &[BufDesc]) -> bool {
    descs[a.0].set.is_some() && descs[a.0].set == descs[b.0].set && b.0 > a.0
}

/// The launches of `ops` with buffers laid out as `layout`, unit by unit as [`fuse`] groups them
/// for this backend: an activation (or a pooling's backward and its activation's) is run by the
/// last launch of its producer, which stores both its own result and the epilogue's; a pooling
/// read through has no launch; a loss runs the layer before it (and that layer's data gradient,
/// for a convolution; a dense layer's backward joins it in [`launches`], once the SGD step has
/// been taken by the weight gradient). Each launch is tagged with the index of its op.
fn lower(ops: &[Op], descs: &[BufDesc], layout: &Layout, fusion: &Fusion) -> Vec<Launch> {
    let place = |id: BufId| layout.place(id);
    let first = |i: usize| {
        let mut l = encode(&ops[i], descs).swap_remove(0);
        l.op = i;
        l
    };
    let mut out = Vec::with_capacity(ops.len());
    for unit in &fusion.units {
        let mut launches = match unit.loss {
            Some(loss) => {
                let producer = first(unit.op);
                let mut launches = encode(&ops[loss], descs);
                launches.iter_mut().for_each(|l| l.op = loss);
                launches[0] = match ops[unit.op] {
                    Op::Dense { .. } => dense_loss(&producer, &launches[0], &place),
                    _ => conv_loss(&producer, &launches[0], &place),
                };
                launches
            }
            None => Vec::new(),
        };
        let body = if unit.loss.is_some() { unit.backward } else { Some(unit.op) };
        if let Some(body) = body {
            let mut own = encode(&ops[body], descs);
            own.iter_mut().for_each(|l| l.op = body);
            let last = own.pop().expect("an op launches");
            let last = match (unit.unpool, unit.act) {
                (Some(back), Some(act)) => {
                    let mut back = fuse_pool_activation(&first(back), &first(act)).expect("a pooling's backward");
                    read_through(&mut back, ops, fusion);
                    unpool(&last, &back)
                }
                (None, Some(act)) => {
                    fuse_activation(&last, &first(act)).expect("the plan fuses what this backend runs")
                }
                _ => last,
            };
            match (unit.loss, &ops[unit.op]) {
                // A convolution's input gradient is computed by its loss.
                (Some(_), Op::Conv2d { .. }) => with_conv_data_grad(&mut launches[0], &last),
                _ => own.push(last),
            }
            launches.extend(own);
        }
        launches.iter_mut().for_each(|l| read_through(l, ops, fusion));
        out.extend(launches);
    }
    out
}

/// The launches that run `ops` with buffers laid out as `layout`, after every pass, and the
/// scratch floats they need. Needs no device.
pub fn launches(ops: &[Op], descs: &[BufDesc], layout: &Layout) -> (Vec<Launch>, usize) {
    let place = |id: BufId| layout.place(id);
    let set = |id: BufId| descs[id.0].set;
    let fusion = fuse(ops, descs, &FUSABLE);
    let all = lower(ops, descs, layout, &fusion);
    let (placed, scratch_len) = place_scratch(merge_updates(pair_gathers(all), &place));
    // The member of `other` at a gradient's place in the gradient set.
    let counterpart = |id: BufId, other: ParamSet| {
        (set(id) == Some(ParamSet::Grad)).then_some(())?;
        layout.counterpart(id, other)
    };
    let summed = combine_sums(placed, (&set, &place));
    let folded = match fusion.steps_in_gradients {
        true => {
            fold_update(summed, (&set, &place), &counterpart).expect("the plan's steps fit the gradients' launches")
        }
        false => summed,
    };
    (loss_runs_dense_backward(folded, &fusion.units, (&set, &place)), scratch_len)
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

fn bound(l: &Launch, slot: impl Into<u32>) -> Option<Bind> {
    let slot = slot.into();
    l.binds.iter().find(|b| b.0 == slot).map(|b| b.1)
}

/// The buffer bound alone at `slot`, if any.
fn bound_buf(l: &Launch, slot: impl Into<u32>) -> Option<BufId> {
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
    if k.family == Family::BatchNorm {
        return fuse_norm_activation(producer, act);
    }
    if !(k.family.is_gemm() && k.entry == "matmul" && k.constant("SPLITS") == Some(0)) {
        return None;
    }
    // The activation reads the product's result: as x going forward, as gy going back.
    let (fuse, input) = match (k.mode()?, act.kernel.entry) {
        (Mode::Forward, "forward") => (1, bindings::Act::A),
        (Mode::DataGrad, "backward") => (2, bindings::Act::B),
        _ => return None,
    };
    if bound(act, input)? != bound(producer, Gemm::C)? {
        return None;
    }
    let mut fused = producer.clone();
    fused.kernel = fused.kernel.with("FUSE", fuse).with("ACT", act.kernel.constant("ACT")?);
    fused.binds.push((Gemm::ActOut.into(), bound(act, bindings::Act::C)?));
    if fuse == 2 {
        fused.binds.push((Gemm::ActIn.into(), bound(act, bindings::Act::A)?));
    }
    Some(fused)
}

/// A batch normalisation's `normalize` launch and the activation of the values it stores.
fn fuse_norm_activation(norm: &Launch, act: &Launch) -> Option<Launch> {
    let x = bound(act, bindings::Act::A)?;
    if norm.kernel.entry != "normalize" || act.kernel.entry != "forward" || x != bound(norm, BatchNorm::Y)? {
        return None;
    }
    let mut fused = norm.clone();
    fused.kernel = fused.kernel.with("FUSE", 1).with("ACT", act.kernel.constant("ACT")?);
    fused.binds.push((BatchNorm::ActOut.into(), bound(act, bindings::Act::C)?));
    Some(fused)
}

/// A pooling's backward and the backward of the activation that fed the pooling (its gy is
/// the pooling's gx).
fn fuse_pool_activation(pool: &Launch, act: &Launch) -> Option<Launch> {
    let gy = bound(act, bindings::Act::B)?;
    if pool.kernel.entry != "backward" || act.kernel.entry != "backward" || gy != bound(pool, MaxPool::Dst)? {
        return None;
    }
    let mut fused = pool.clone();
    fused.kernel = fused.kernel.with("FUSE", 1).with("ACT", act.kernel.constant("ACT")?);
    let (y, gx) = (bound(act, bindings::Act::A)?, bound(act, bindings::Act::C)?);
    fused.binds.extend([(MaxPool::ActIn.into(), y), (MaxPool::ActOut.into(), gx)]);
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
    let settings = |l: &Launch| bindings::OptimP { len: 0, ..*l.params.optim() };
    if a.kernel != b.kernel || a.kernel.family != Family::Optim || settings(a) != settings(b) {
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
    params.optim_mut().len = len as u32;
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
    if sums.is_empty() || sums.len() > SEGMENTS {
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
    let mut params = Box::new(ReduceP::default());
    params.count[0] = sums.len() as u32;
    let mut first = 0;
    for (seg, s) in params.seg.iter_mut().zip(sums) {
        let [w_out, w_at] = locate(s.w);
        let [b_out, b_at] = s.bias.map_or([0, 0], locate);
        *seg = Segment {
            head: [first, s.len as u32, s.splits, s.at as u32],
            shape: [s.cols as u32, s.bias.is_some().into(), w_at, b_at],
            outs: [w_out, b_out, 0, 0],
        };
        first += s.len as u32;
    }
    let mut bound = vec![(bindings::Reduce::Part.into(), Bind::Scratch)];
    let outputs = [bindings::Reduce::O0, bindings::Reduce::O1, bindings::Reduce::O2];
    for (&(in_set, first, last), out) in binds.iter().zip(outputs) {
        let bind = if in_set.is_some() { Bind::Span(first, last) } else { Bind::Buf(first) };
        bound.push((out.into(), bind));
    }
    let kernel = Kernel::new(Family::Reduce, "sum_slices");
    let mut l = launch(kernel, Params::Reduce(params), &bound, Grid::PerElement(Size::fixed(first as usize)));
    l.sums = sums.to_vec();
    Some(l)
}

/// The gradients a launch writes, if it is one that can take a plain SGD step as it stores
/// them: a weight-gradient product or a bias row sum of one slice, or a sum of slices.
fn gradients_written(l: &Launch) -> Option<Vec<BufId>> {
    let k = &l.kernel;
    let one_slice = k.constant("SPLITS") == Some(1) && (k.entry == "row_sums" || k.mode() == Some(Mode::WeightGrad));
    if k.family.is_gemm() && one_slice {
        let outs = [Some(Gemm::C), (k.constant("BIAS_COL") == Some(1)).then_some(Gemm::Bias)];
        return outs.into_iter().flatten().map(|slot| bound_buf(l, slot)).collect();
    }
    (k.entry == "sum_slices").then(|| l.sums.iter().flat_map(Slices::outputs).collect())
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

/// Folds the step's optimiser update into the launches that write its gradients, where the
/// plan's fusion says so ([`Fusion::steps_in_gradients`]): plain SGD into one-slice
/// weight-gradient products (a data-gradient product that reads the weights is moved before the
/// weight gradient's where the two are independent) and into sums of slices, Adam into sums of
/// slices. `None` when the launches do not allow it: one of them does not write every gradient,
/// or a launch between reads what they write or the parameters they would move. `sets` says
/// which parameter set a buffer belongs to (see [`combine_sums`]), `counterpart` which buffer of
/// another set lies where a gradient lies in its own (its parameter, its optimiser state).
pub fn fold_update(mut ls: Vec<Launch>, sets: Sets, counterpart: Counterpart) -> Option<Vec<Launch>> {
    let place = sets.1;
    let is_update = |l: &Launch| l.kernel.family == Family::Optim && ["sgd", "adam"].contains(&l.kernel.entry);
    let u = ls.iter().position(is_update)?;
    if ls.iter().filter(|l| is_update(l)).count() > 1 {
        return None;
    }
    let adam = ls[u].kernel.entry == "adam";
    let (first, last) = match bound(&ls[u], Optim::G)? {
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
                let product = next.kernel.family.is_gemm() && next.kernel.mode() == Some(Mode::DataGrad);
                let writes: Vec<BufId> = [Gemm::C, Gemm::ActOut].iter().filter_map(|&s| bound_buf(next, s)).collect();
                if !product || touches(next, &grads) || touches(&ls[i], &writes) {
                    return None;
                }
                ls.swap(i, i + 1);
                i += 1;
            }
        }
        // A sum of slices binds a span of the gradient set but writes only its own outputs.
        let conflicts = |l: &Launch| match gradients_written(l) {
            Some(outs) if l.kernel.entry == "sum_slices" => outs.iter().any(|g| watched.contains(g)),
            _ => touches(l, &watched),
        };
        if ls[i + 1..u].iter().any(conflicts) {
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

/// Makes `l`, which writes `grads`, also take the step of the `update` launch.
fn take_step(l: &mut Launch, grads: &[BufId], counterpart: Counterpart, update: &Launch) -> Option<()> {
    let (u, adam) = (update.params.optim(), update.kernel.entry == "adam");
    let value = |g: BufId| counterpart(g, ParamSet::Value);
    if l.kernel.entry == "sum_slices" {
        // The one binding of the gradient set (every gradient here is in it).
        let (slot, first, last) = l.binds.iter().find_map(|&(slot, b)| match b {
            Bind::Span(first, last) if grads.contains(&first) => Some((slot, first, last)),
            _ => None,
        })?;
        let Params::Reduce(p) = &mut l.params else {
            return None;
        };
        p.count[1..4].copy_from_slice(&[1 + u32::from(adam), slot - u32::from(bindings::Reduce::O0), u.lr.to_bits()]);
        let mut sets = vec![(bindings::Reduce::Values, ParamSet::Value)];
        if adam {
            p.adam[..3].copy_from_slice(&[u.beta1, u.beta2, u.eps]);
            sets.extend([
                (bindings::Reduce::StateM, ParamSet::State(0)),
                (bindings::Reduce::StateV, ParamSet::State(1)),
            ]);
        }
        for (binding, set) in sets {
            l.binds.push((binding.into(), Bind::Span(counterpart(first, set)?, counterpart(last, set)?)));
        }
    } else {
        l.kernel = l.kernel.clone().with("UPDATE", 1);
        l.params.set_lr(u.lr);
        l.binds.push((Gemm::ActOut.into(), Bind::Buf(value(grads[0])?)));
        if let Some(&bias) = grads.get(1) {
            l.binds.push((Gemm::ActIn.into(), Bind::Buf(value(bias)?)));
        }
    }
    Some(())
}

/// Gathers of one batch (its inputs and its targets, by one index list), each with one part,
/// become one launch of two parts.
pub fn pair_gathers(launches: Vec<Launch>) -> Vec<Launch> {
    merge_neighbours(launches, |a, b| {
        use bindings::Gather as G;
        let one_part = |l: &Launch| l.kernel.family == Family::Gather && l.params.gather().parts[1].per == 0;
        if !one_part(a) || !one_part(b) || bound(a, G::Index) != bound(b, G::Index) {
            return None;
        }
        let mut both = a.clone();
        let second = b.params.gather().parts[0];
        both.params.gather_mut().parts[1] = second;
        both.binds.extend([(G::Data1.into(), bound(b, G::Data0)?), (G::Out1.into(), bound(b, G::Out0)?)]);
        both.grid = Grid::Flat(Size::per_n((a.params.gather().parts[0].per + second.per) as usize));
        Some(both)
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode::{batch_sum, buf, encode, product, update};
    use super::*;
    use crate::backend::gpu::bindings::{ConvP, DenseP, GatherPart, OptimP};
    use crate::graph::Op;
    use crate::model::Act;

    fn adam(w: usize, lr: f32, len: usize) -> Launch {
        let ids = [w, w + 10, w + 20, w + 30].map(BufId);
        let binds: Vec<_> =
            [Optim::W, Optim::G, Optim::M, Optim::V].into_iter().zip(ids).map(|(s, id)| buf(s, id)).collect();
        update("adam", OptimP { len: len as u32, lr, ..Default::default() }, &binds)
    }

    /// Buffers 0..4 and their sets' copies (+10, +20, +30): 100, 7, 300, 5 floats, at offsets
    /// aligned to 256 bytes, alike in every set; buffers from 40 on are in no set.
    pub(super) fn place(id: BufId) -> Option<(usize, u64, u64)> {
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
        assert_eq!(merged[0].params.optim().len, (768 + 1200) / 4);
        assert_eq!(merged[0].binds[0], (2, Bind::Span(BufId(0), BufId(2))));
        assert_eq!(merged[0].binds[3], (5, Bind::Span(BufId(30), BufId(32))));
    }

    pub(super) fn relu(x: usize, y: usize) -> Launch {
        encode(&Op::Activation { act: Act::Relu, x: BufId(x), y: BufId(y), per: 64 }, &[])[0].clone()
    }

    /// The launches of `ops` over `descs`, members of sets 256-byte aligned.
    pub(super) fn lowered(ops: &[Op], descs: &[BufDesc]) -> Vec<Launch> {
        launches(ops, descs, &Layout::new(descs, 256)).0
    }

    /// Buffers of 4 samples of up to 128 floats each.
    pub(super) fn descs(count: usize) -> Vec<BufDesc> {
        let desc = BufDesc { name: String::new(), len: 4 * 128, dtype: crate::graph::Dtype::F32, set: None };
        vec![desc; count]
    }

    #[test]
    fn an_activation_of_a_product_is_stored_by_the_product() {
        let dense =
            |x: usize, y: usize| Op::Dense { x: BufId(x), w: BufId(8), b: BufId(9), y: BufId(y), n_in: 8, n_out: 64 };
        let act = |x: usize, y: usize| Op::Activation { act: Act::Relu, x: BufId(x), y: BufId(y), per: 64 };
        let fused = lowered(&[dense(0, 1), act(1, 2)], &descs(10));
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.constant("FUSE"), Some(1));
        assert_eq!(fused[0].kernel.constant("ACT"), Some(0));
        assert!(fused[0].binds.contains(&(Gemm::ActOut.into(), Bind::Buf(BufId(2)))));
        // An activation of another buffer stays a launch of its own.
        assert_eq!(lowered(&[dense(0, 1), act(3, 2)], &descs(10)).len(), 2);
    }

    #[test]
    fn an_activation_of_normalised_values_is_stored_by_the_normalisation() {
        let bn = Op::BatchNorm {
            x: BufId(0),
            gamma: BufId(1),
            beta: BufId(2),
            y: BufId(3),
            stats: BufId(4),
            running: [BufId(5), BufId(6), BufId(7)],
            c: 2,
            hw: 32,
            train: true,
            momentum: 0.1,
            eps: 1e-5,
        };
        let act = |x: usize| Op::Activation { act: Act::Tanh, x: BufId(x), y: BufId(8), per: 64 };
        let fused = lowered(&[bn.clone(), act(3)], &descs(10));
        assert_eq!(fused.len(), 2, "statistics, then normalize with its activation");
        assert_eq!((fused[1].kernel.entry, fused[1].kernel.constant("FUSE")), ("normalize", Some(1)));
        assert_eq!(fused[1].kernel.constant("ACT"), Some(2));
        assert!(fused[1].binds.contains(&(BatchNorm::Y.into(), Bind::Buf(BufId(3)))));
        assert!(fused[1].binds.contains(&(BatchNorm::ActOut.into(), Bind::Buf(BufId(8)))));
        assert_eq!(lowered(&[bn, act(0)], &descs(10)).len(), 3);
    }

    #[test]
    fn an_activation_backward_after_pooling_backward_is_run_by_the_pooling() {
        let shape = crate::model::Shape::new(2, 4, 4);
        let pool = |gx: usize| Op::MaxPool2dBackward { gy: BufId(0), argmax: BufId(1), gx: BufId(gx), shape };
        let act = Op::ActivationBackward { act: Act::Tanh, y: BufId(3), gy: BufId(2), gx: BufId(4), per: 32 };
        let fused = lowered(&[pool(2), act.clone()], &descs(6));
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].kernel.constant("ACT"), Some(2));
        assert!(fused[0].binds.contains(&(MaxPool::ActIn.into(), Bind::Buf(BufId(3)))));
        assert!(fused[0].binds.contains(&(MaxPool::ActOut.into(), Bind::Buf(BufId(4)))));
        assert_eq!(lowered(&[pool(5), act], &descs(6)).len(), 2);
    }

    /// A conv weight gradient `[4, 9]` with its bias, summed over 100,000 terms in 512 slices.
    fn wgrad(w: usize, bias: usize) -> Vec<Launch> {
        let io = (BufId(98), Some(BufId(99)), Some(BufId(bias)));
        let p =
            Params::Conv(ConvP { c_in: 1, c_out: 4, h: 10, w: 10, k: 3, lr: 0.0, pad: 1, stride: 1, oh: 10, ow: 10 });
        batch_sum(Family::Conv2d, &p, io, BufId(w), (4, 9, 100_000))
    }

    /// Buffers 0..4 are parameters, 10..14 their gradients and 20..24, 30..34 their optimiser
    /// states, in sets laid out as `place` says.
    pub(super) fn set(id: BufId) -> Option<ParamSet> {
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
        let p = Params::Dense(DenseP { n_in: 8, n_out: 4, lr: 0.0 });
        let wgrad = |w: usize| {
            batch_sum(Family::Dense, &p, (BufId(50), Some(BufId(51)), Some(BufId(w + 1))), BufId(w), (4, 8, 100))
        };
        let dims = (Size::per_n(1), Size::fixed(8), Size::fixed(1));
        let binds = [buf(Gemm::A, BufId(50)), buf(Gemm::B, BufId(2)), buf(Gemm::C, BufId(52))];
        let data_grad = product(Family::Dense, Mode::DataGrad, &p, &binds, dims, 100);
        let sgd = update(
            "sgd",
            OptimP { len: 480, lr: 0.25, ..Default::default() },
            &[(Optim::W.into(), Bind::Span(BufId(0), BufId(3))), (Optim::G.into(), Bind::Span(BufId(10), BufId(13)))],
        );
        let mut step = wgrad(12);
        step.push(data_grad);
        step.extend(wgrad(10));
        step.extend(between);
        step.push(sgd);
        step
    }

    fn fold(launches: Vec<Launch>) -> Option<Vec<Launch>> {
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
        let out = fold(mlp_backward(None)).expect("folded");
        let modes: Vec<_> = out.iter().map(|l| l.kernel.mode()).collect();
        let expected = [Some(Mode::DataGrad), Some(Mode::WeightGrad), Some(Mode::WeightGrad)];
        assert_eq!(modes, expected, "the data gradient first, no update launch");
        for (l, w) in out[1..].iter().zip([2, 0]) {
            assert_eq!(l.kernel.constant("UPDATE"), Some(1));
            assert_eq!(l.params.dense().lr, 0.25);
            assert!(
                l.binds.contains(&(Gemm::ActOut.into(), Bind::Buf(BufId(w))))
                    && l.binds.contains(&(Gemm::ActIn.into(), Bind::Buf(BufId(w + 1))))
            );
        }
    }

    #[test]
    fn the_sum_of_every_gradient_takes_the_adam_step() {
        let update = merge_updates((0..4).map(|i| adam(i, 0.1, [100, 7, 300, 5][i])).collect(), &place);
        let mut step = wgrad(10, 11);
        step.extend(wgrad(12, 13));
        step.extend(update.clone());
        let out = fold(sums(step)).expect("folded");
        let kinds: Vec<_> = out.iter().map(|l| l.kernel.entry).collect();
        assert_eq!(kinds, ["matmul", "matmul", "sum_slices"]);
        let sum = &out[2];
        let Params::Reduce(p) = &sum.params else { panic!("a sum's parameters") };
        assert_eq!(p.count[1..4], [2, 0, 0.1f32.to_bits()], "Adam, on output binding 0");
        for (binding, first) in
            [(bindings::Reduce::Values, 0), (bindings::Reduce::StateM, 20), (bindings::Reduce::StateV, 30)]
        {
            assert!(sum.binds.contains(&(binding.into(), Bind::Span(BufId(first), BufId(first + 3)))));
        }
        // Adam is not folded into products.
        let mut mlp = mlp_backward(None);
        *mlp.last_mut().unwrap() = update[0].clone();
        assert!(fold(mlp).is_none());
    }

    #[test]
    fn the_sgd_step_stays_a_launch_when_not_every_gradient_is_written_or_one_is_read_before() {
        let mut missing = mlp_backward(None);
        missing.remove(2);
        assert!(fold(missing).is_none());
        let l2 = Op::L2 { w: BufId(0), grad: Some(BufId(10)), metrics: BufId(60), lambda: 1e-4, len: 32 };
        let with_l2 = mlp_backward(Some(encode(&l2, &[])[0].clone()));
        assert!(fold(with_l2).is_none());
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
        let Params::Reduce(p) = &sum.params else { panic!("a sum's parameters") };
        assert_eq!((p.count, p.adam), ([2, 0, 0, 0], [0.0; 4]));
        assert_eq!(p.seg[0], Segment { head: [0, 40, 512, 0], shape: [9, 1, 0, 128], outs: [0; 4] });
        assert_eq!(p.seg[1], Segment { head: [40, 40, 512, 512 * 40], shape: [9, 1, 192, 512], outs: [0; 4] });
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
        let count = |l: &Launch| match &l.params {
            Params::Reduce(p) => Some(p.count[0]),
            _ => None,
        };
        let counts: Vec<_> = out.iter().filter_map(count).collect();
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
        let [first, second] = both[0].params.gather().parts;
        assert_eq!(first, GatherPart { per: 784, w: 28, scale: 1.0 / 255.0, ..Default::default() });
        assert_eq!(second, GatherPart { per: 10, kind: 2, ..Default::default() });
        assert_eq!(both[0].grid.groups(100), [(794 * 100u32).div_ceil(256), 1, 1]);
        let (data, out) = (bindings::Gather::Data1.into(), bindings::Gather::Out1.into());
        assert!(
            both[0].binds.contains(&(data, Bind::Buf(BufId(3)))) && both[0].binds.contains(&(out, Bind::Buf(BufId(4))))
        );
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
