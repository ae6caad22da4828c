//! What each op asks of the device: kernels, their parameters, buffers and dispatch sizes.
//! Pure data, built once per op list; `n` (the batch) is applied when a step is recorded.

use super::shaders::{self, Family, Kernel};
use crate::graph::{BufDesc, BufId, ConvGeom, Op, ParamSet};
use crate::model::Act;

/// A count that may grow with the batch: `per_n·n + fixed`.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub per_n: u32,
    pub fixed: u32,
}

impl Size {
    fn fixed(v: usize) -> Self {
        Size { per_n: 0, fixed: v as u32 }
    }
    fn per_n(v: usize) -> Self {
        Size { per_n: v as u32, fixed: 0 }
    }
    pub fn at(self, n: usize) -> u32 {
        self.per_n * n as u32 + self.fixed
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Grid {
    /// One thread per element, in 256-wide workgroups.
    Flat(Size),
    /// `tm × tn` tiles of an `m × n` product, `z` deep.
    Tiles { m: Size, n: Size, z: Size, tm: u32, tn: u32 },
    /// One workgroup per element.
    PerElement(Size),
    /// `per` workgroups for each batch of `batch` samples in the step (the last may be short).
    Batches { batch: u32, per: u32 },
    /// One workgroup.
    Single,
}

impl Grid {
    /// Workgroup counts for a batch of `n`; 1-D dispatches fold into y above 65535 groups.
    pub fn groups(self, n: usize) -> [u32; 3] {
        match self {
            Grid::Flat(s) => fold(s.at(n).div_ceil(256).max(1)),
            Grid::PerElement(s) => fold(s.at(n).max(1)),
            Grid::Batches { batch, per } => fold((n as u32).div_ceil(batch) * per),
            Grid::Tiles { m, n: cols, z, tm, tn } => [cols.at(n).div_ceil(tn), m.at(n).div_ceil(tm), z.at(n)],
            Grid::Single => [1, 1, 1],
        }
    }
}

/// `g` workgroups, folded into y above 65535.
fn fold(g: u32) -> [u32; 3] {
    if g <= 65535 {
        [g, 1, 1]
    } else {
        [65535, g.div_ceil(65535), 1]
    }
}

/// A buffer for binding `slot` (2..); slots not listed get a dummy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    Buf(BufId),
    /// From the start of the first buffer to the end of the last, of one parameter set.
    Span(BufId, BufId),
    /// The backend's weight-gradient scratch.
    Scratch,
}

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
                slices.at = at;
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
        let writes = |id: BufId| pending.iter().any(|p| p.w == id || p.bias == Some(id));
        let reads = l.binds.iter().any(|&(_, b)| match b {
            Bind::Buf(id) => writes(id),
            Bind::Span(..) => true,
            Bind::Scratch => false,
        });
        if reads || l.kernel.family == Family::Optim {
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
    let outputs: Vec<BufId> = sums.iter().flat_map(|s| std::iter::once(s.w).chain(s.bias)).collect();
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
        return outs
            .into_iter()
            .flatten()
            .map(|slot| match bound(l, slot)? {
                Bind::Buf(id) => Some(id),
                _ => None,
            })
            .collect();
    }
    (k.entry == "sum_slices").then(|| l.sums.iter().flat_map(|s| std::iter::once(s.w).chain(s.bias)).collect())
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
                let writes: Vec<BufId> = [C, ACT_OUT]
                    .iter()
                    .filter_map(|&s| match bound(next, s)? {
                        Bind::Buf(id) => Some(id),
                        _ => None,
                    })
                    .collect();
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

#[derive(Clone, Debug)]
pub struct Launch {
    pub kernel: Kernel,
    /// The family's `P` struct, every field 4 bytes (f32 as bits).
    pub params: Vec<u32>,
    pub binds: Vec<(u32, Bind)>,
    pub grid: Grid,
    /// Scratch floats this launch needs, and where they start in the scratch buffer.
    pub scratch: usize,
    pub scratch_at: usize,
    /// For a sum of slices: the products whose slices it adds.
    pub sums: Vec<Slices>,
}

/// One product's weight-gradient slices (see `reduce.wgsl`), to be added into `w` (and the
/// bias column into `bias`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slices {
    /// Elements of the result, bias column included.
    len: usize,
    splits: u32,
    /// Columns of the weight gradient (the bias column not counted).
    cols: usize,
    w: BufId,
    bias: Option<BufId>,
    /// Where the slices start in the scratch buffer.
    at: usize,
}

fn launch(kernel: Kernel, params: Vec<u32>, binds: &[(u32, Bind)], grid: Grid) -> Launch {
    Launch { kernel, params, binds: binds.to_vec(), grid, scratch: 0, scratch_at: 0, sums: Vec::new() }
}

fn buf(slot: u32, id: BufId) -> (u32, Bind) {
    (slot, Bind::Buf(id))
}

const A: u32 = 2;
const B: u32 = 3;
const BIAS: u32 = 4;
const C: u32 = 5;
const PART: u32 = 6;
const ACT_OUT: u32 = 7;
const ACT_IN: u32 = 8;
const LOSS_PART: u32 = 7;
const POOL_ACT_IN: u32 = 5;
const POOL_ACT_OUT: u32 = 6;

/// Weight-gradient slices for a reduction of up to `k_max` terms: a power of two, about 128
/// terms per slice, at most 512, so that long sums spread over many workgroups; the slices are
/// then added by one workgroup per element.
fn splits(k_max: usize) -> u32 {
    let s = (k_max / 128).clamp(1, 512) as u32;
    let s = 1 << s.ilog2();
    debug_assert!(shaders::SPLITS.contains(&s));
    s
}

/// Tile sides for an `m × n` result, `z` deep: 64 where a dimension is long enough, narrowed to
/// 16 while the grid would have fewer workgroups than a large GPU has cores.
fn tiles(m: usize, n: usize, z: usize) -> (u32, u32) {
    let side = |len: usize| if len <= 32 { 16 } else { 64 };
    let (mut tm, mut tn) = (side(m), side(n));
    let groups = |tm: u32, tn: u32| m.div_ceil(tm as usize) * n.div_ceil(tn as usize) * z;
    while groups(tm, tn) < 128 && tm.max(tn) == 64 {
        if tm >= tn {
            tm = 16;
        } else {
            tn = 16;
        }
    }
    (tm, tn)
}

/// A plain product `M × N`, `z` deep, sized for the tiles at the largest batch `max_n`.
fn product(
    family: Family,
    mode: u32,
    params: &[u32],
    binds: &[(u32, Bind)],
    (m, n, z): (Size, Size, Size),
    max_n: usize,
) -> Launch {
    let (tm, tn) = tiles(m.at(max_n) as usize, n.at(max_n) as usize, z.at(max_n) as usize);
    launch(shaders::gemm(family, mode, 0, (tm, tn)), params.to_vec(), binds, Grid::Tiles { m, n, z, tm, tn })
}

/// Sums over the batch into `out`, in slices, then the slices added in order by a launch that
/// [`combine_sums`] merges with the step's other such launches: the weight
/// gradient (`b` given: `out[m, n] = Σ_k a[m, k]·b[k, n]`, with the bias gradient `Σ_k a[m, k]`
/// into `bias` as one more column, if given) or the bias gradient (`out[m] = Σ_k a[m, k]`).
/// `k_max` is the number of terms at the largest batch. One slice is written straight to `out`.
fn batch_sum(
    family: Family,
    params: &[u32],
    (a, b, bias): (BufId, Option<BufId>, Option<BufId>),
    out: BufId,
    (m, n, k_max): (usize, usize, usize),
) -> Vec<Launch> {
    let s = splits(k_max);
    let z = Size::fixed(s as usize);
    let dest = if s == 1 { buf(C, out) } else { (PART, Bind::Scratch) };
    let cols = n + usize::from(bias.is_some());
    let with_bias = |k: Kernel| if bias.is_some() { k.with("BIAS_COL", 1) } else { k };
    let mut sum = match b {
        Some(b) => {
            let (tm, tn) = tiles(m, cols, s as usize);
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(cols), z, tm, tn };
            let mut binds = vec![buf(A, a), buf(B, b), dest];
            binds.extend(bias.filter(|_| s == 1).map(|g| buf(BIAS, g)));
            launch(with_bias(shaders::gemm(family, 2, s, (tm, tn))), params.to_vec(), &binds, grid)
        }
        None => {
            let grid = Grid::Tiles { m: Size::fixed(m), n: Size::fixed(1), z, tm: 1, tn: 1 };
            launch(shaders::row_sums(family, s), params.to_vec(), &[buf(A, a), dest], grid)
        }
    };
    if s == 1 {
        return vec![sum];
    }
    sum.scratch = s as usize * m * cols;
    let mut reduce = launch(Kernel::new(Family::Reduce, "sum_slices"), Vec::new(), &[(2, Bind::Scratch)], Grid::Single);
    reduce.sums = vec![Slices { len: m * cols, splits: s, cols: n, w: out, bias, at: 0 }];
    vec![sum, reduce]
}

/// Settings of one part of a gather launch (`Part` in `gather.wgsl`), padded to 8 words.
const GATHER_PART: usize = 8;

/// A gather launch with one part: `part` = (per, w, scale, kind, mirrored).
fn gather(part: [u32; 5], data: BufId, index: BufId, out: BufId) -> Launch {
    let mut params = part.to_vec();
    params.resize(2 * GATHER_PART, 0);
    let binds = [buf(2, data), buf(3, index), buf(4, out)];
    launch(Kernel::new(Family::Gather, "gather"), params, &binds, Grid::Flat(Size::per_n(part[0] as usize)))
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

fn act_code(act: Act) -> u32 {
    match act {
        Act::Relu => 0,
        Act::Sigmoid => 1,
        Act::Tanh => 2,
        Act::Softmax => unreachable!("softmax is fused with the loss"),
    }
}

fn conv_params(g: &ConvGeom, with_k: bool) -> Vec<u32> {
    let mut p = vec![g.c_in as u32, g.c_out as u32, g.h as u32, g.w as u32];
    if with_k {
        p.push(g.k as u32);
    }
    p
}

/// The launches that run `op`; `descs` size the weight-gradient splits by the largest batch.
pub fn encode(op: &Op, descs: &[BufDesc]) -> Vec<Launch> {
    let max_n = |id: BufId, per: usize| descs[id.0].len / per;
    match *op {
        Op::Gather { data, index, out, shape, scale, binarize, mirrored } => {
            let part = [shape.len() as u32, shape.w as u32, scale.to_bits(), binarize.into(), mirrored as u32];
            vec![gather(part, data, index, out)]
        }
        Op::GatherOneHot { labels, index, out, classes } => {
            vec![gather([classes as u32, 0, 0, 2, 0], labels, index, out)]
        }
        Op::Dense { x, w, b, y, n_in, n_out } => {
            let dims = (Size::per_n(1), Size::fixed(n_out), Size::fixed(1));
            let binds = [buf(A, x), buf(B, w), buf(BIAS, b), buf(C, y)];
            vec![product(Family::Dense, 0, &[n_in as u32, n_out as u32], &binds, dims, max_n(x, n_in))]
        }
        Op::DenseBackward { x, w, gy, gx, gw, gb, n_in, n_out } => {
            let (p, batch) = ([n_in as u32, n_out as u32], max_n(gy, n_out));
            let mut out = batch_sum(Family::Dense, &p, (gy, Some(x), Some(gb)), gw, (n_out, n_in, batch));
            out.extend(gx.map(|gx| {
                let dims = (Size::per_n(1), Size::fixed(n_in), Size::fixed(1));
                product(Family::Dense, 1, &p, &[buf(A, gy), buf(B, w), buf(C, gx)], dims, batch)
            }));
            out
        }
        Op::Conv2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out), Size::fixed(g.h * g.w), Size::per_n(1));
            let binds = [buf(A, w), buf(B, x), buf(BIAS, b), buf(C, y)];
            let batch = max_n(x, g.c_in * g.h * g.w);
            vec![product(Family::Conv2d, 0, &conv_params(g, true), &binds, dims, batch)]
        }
        Op::Conv2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw, r) = (conv_params(g, true), g.h * g.w, g.k * g.k);
            let batch = max_n(gy, g.c_out * hw);
            let sizes = (g.c_out, g.c_in * r, batch * hw);
            let mut out = batch_sum(Family::Conv2d, &p, (gy, Some(x), Some(gb)), gw, sizes);
            out.extend(gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                product(Family::Conv2d, 1, &p, &[buf(A, w), buf(B, gy), buf(C, gx)], dims, batch)
            }));
            out
        }
        Op::ConvTranspose2d { x, w, b, y, ref g } => {
            let dims = (Size::fixed(g.c_out * 4), Size::fixed(g.h * g.w), Size::per_n(1));
            let binds = [buf(A, w), buf(B, x), buf(BIAS, b), buf(C, y)];
            let batch = max_n(x, g.c_in * g.h * g.w);
            vec![product(Family::ConvTranspose, 0, &conv_params(g, false), &binds, dims, batch)]
        }
        Op::ConvTranspose2dBackward { x, w, gy, gx, gw, gb, ref g } => {
            let (p, hw) = (conv_params(g, false), g.h * g.w);
            let batch = max_n(gy, g.c_out * 4 * hw);
            let mut out =
                batch_sum(Family::ConvTranspose, &p, (x, Some(gy), None), gw, (g.c_in, g.c_out * 4, batch * hw));
            out.extend(batch_sum(Family::ConvTranspose, &p, (gy, None, None), gb, (g.c_out, 1, batch * 4 * hw)));
            out.extend(gx.map(|gx| {
                let dims = (Size::fixed(g.c_in), Size::fixed(hw), Size::per_n(1));
                product(Family::ConvTranspose, 1, &p, &[buf(A, w), buf(B, gy), buf(C, gx)], dims, batch)
            }));
            out
        }
        Op::MaxPool2d { x, y, argmax, shape } => vec![launch(
            Kernel::new(Family::MaxPool, "forward"),
            vec![shape.c as u32, shape.h as u32, shape.w as u32],
            &[buf(2, x), buf(3, argmax), buf(4, y)],
            Grid::Flat(Size::per_n(shape.c * (shape.h / 2) * (shape.w / 2))),
        )],
        Op::MaxPool2dBackward { gy, argmax, gx, shape } => vec![launch(
            Kernel::new(Family::MaxPool, "backward"),
            vec![shape.c as u32, shape.h as u32, shape.w as u32],
            &[buf(2, gy), buf(3, argmax), buf(4, gx)],
            Grid::Flat(Size::per_n(shape.len())),
        )],
        Op::Activation { act, x, y, per } => vec![launch(
            Kernel::new(Family::Activation, "forward").with("ACT", act_code(act)),
            vec![per as u32, 0, 0],
            &[buf(2, x), buf(4, y)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::ActivationBackward { act, y, gy, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "backward").with("ACT", act_code(act)),
            vec![per as u32, 0, 0],
            &[buf(2, y), buf(3, gy), buf(4, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::Dropout { x, y, mask, per, rate, seed } => vec![launch(
            Kernel::new(Family::Activation, "dropout"),
            vec![per as u32, rate.to_bits(), seed],
            &[buf(2, x), buf(4, y), buf(5, mask)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::DropoutBackward { gy, mask, gx, per } => vec![launch(
            Kernel::new(Family::Activation, "dropout_backward"),
            vec![per as u32, 0, 0],
            &[buf(2, mask), buf(3, gy), buf(4, gx)],
            Grid::Flat(Size::per_n(per)),
        )],
        Op::SoftmaxCrossEntropy { logits, target, probs, grad, metrics, classes, batch } => {
            vec![loss("softmax_ce", (classes, batch), logits, target, probs, grad, metrics)]
        }
        Op::SigmoidBce { logits, target, probs, grad, metrics, per, batch } => {
            let mut each = loss("sigmoid_bce", (per, batch), logits, target, probs, grad, metrics);
            each.binds.push((LOSS_PART, Bind::Scratch));
            let groups = (batch * per).div_ceil(256);
            each.grid = Grid::Batches { batch: batch as u32, per: groups as u32 };
            each.scratch = 4 * max_n(logits, per).div_ceil(batch) * groups;
            let mut total = loss("sigmoid_bce_total", (per, batch), logits, target, probs, grad, metrics);
            total.binds = vec![buf(6, metrics), (LOSS_PART, Bind::Scratch)];
            vec![each, total]
        }
        Op::Confusion { probs, target, counts, classes } => vec![launch(
            Kernel::new(Family::Loss, "confusion"),
            vec![classes as u32, 0],
            &[buf(2, counts), buf(3, target), buf(4, probs)],
            Grid::Single,
        )],
        Op::L2 { w, grad, metrics, lambda, len } => {
            let mut binds = vec![buf(2, w), buf(4, metrics)];
            binds.extend(grad.map(|g| buf(3, g)));
            vec![launch(
                Kernel::new(Family::Optim, "l2"),
                vec![len as u32, lambda.to_bits(), 0, 0, 0, grad.is_some().into()],
                &binds,
                Grid::Single,
            )]
        }
        Op::Sgd { w, g, lr, len } => {
            vec![update("sgd", [len as u32, lr.to_bits(), 0, 0, 0, 0], &[buf(2, w), buf(3, g)], len)]
        }
        Op::Momentum { w, g, v, lr, momentum, len } => vec![update(
            "momentum",
            [len as u32, lr.to_bits(), momentum.to_bits(), 0, 0, 0],
            &[buf(2, w), buf(3, g), buf(4, v)],
            len,
        )],
        Op::Adam { w, g, m, v, lr, beta1, beta2, eps, len } => vec![update(
            "adam",
            [len as u32, lr.to_bits(), beta1.to_bits(), beta2.to_bits(), eps.to_bits(), 0],
            &[buf(2, w), buf(3, g), buf(4, m), buf(5, v)],
            len,
        )],
    }
}

/// A loss launch: `(per, batch)` as in `loss.wgsl`'s `P`.
fn loss(
    entry: &'static str,
    (per, batch): (usize, usize),
    logits: BufId,
    target: BufId,
    probs: BufId,
    grad: Option<BufId>,
    metrics: BufId,
) -> Launch {
    let mut binds = vec![buf(2, logits), buf(3, target), buf(4, probs), buf(6, metrics)];
    binds.extend(grad.map(|g| buf(5, g)));
    launch(
        Kernel::new(Family::Loss, entry),
        vec![per as u32, grad.is_some().into(), batch as u32],
        &binds,
        Grid::Single,
    )
}

fn update(entry: &'static str, params: [u32; 6], binds: &[(u32, Bind)], len: usize) -> Launch {
    launch(Kernel::new(Family::Optim, entry), params.to_vec(), binds, Grid::Flat(Size::fixed(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
