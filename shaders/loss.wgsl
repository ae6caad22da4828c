// Losses fused with the output activation, and the metrics they add to the metrics buffer
// (slots as in graph::slot: 0 loss·n, 1 metric, 2 samples, 3 batches, 4 Σy·p, 5 Σy, 6 Σp).
// A step of more than `batch` samples (a test pass in large steps) adds its metrics as steps of
// `batch` samples would, batch after batch. Sums use fixed strides and fixed trees, so results
// never depend on scheduling (no float atomics).
//   softmax_ce:  one workgroup: probs, grad (p - t)/n when has_grad, loss and correct count.
//   dense_softmax_ce: softmax_ce after computing its logits as the dense layer before it
//                would (steps of at most 256 samples): logits[s, o] = Σ_i x[s, i]·w[o, i] +
//                b[o], summed over i in order as matmul.wgsl does, with w and b in `aux`.
//   dense_softmax_ce_backward: then also that layer's backward from the loss's gradient g,
//                each sum in matmul.wgsl's order: gx[s, i] = Σ_o g[s, o]·w[o, i] (with FUSE,
//                also act_gx = gx·activate'(x), the backward of the activation that made x),
//                then gw[o, i] = Σ_s g[s, o]·x[s, i] and gb[o] = Σ_s g[s, o] into `layer`
//                (laid out as w and b in aux), and with UPDATE the SGD step on w and b.
//   sigmoid_bce: one thread per element, the workgroups of each batch apart: probs, grad
//                (p - t)/(n·per) when has_grad, and each workgroup's sums of loss, t·p, t and p
//                in part; then sigmoid_bce_total (one workgroup) adds them in order, batch by
//                batch: loss, the batch's Dice and its sums.
//   conv_sigmoid_bce: sigmoid_bce after computing each logit as the 1x1 convolution to one
//                channel before it would: Σ_c w[c]·x[s, c, q] + b, summed over c in order as
//                matmul.wgsl does, with w then b in `layer`; with BACKWARD, also that
//                convolution's data gradient gx[s, c, q] = w[c]·g[s, q] into layer_gx (with
//                FUSE, act_gx as in dense_softmax_ce_backward).
//   pixel_softmax_ce: one thread per pixel, the workgroups of each batch apart: softmax over
//                the n_in classes (channels `per` apart), probs, grad (p - onehot)/(n·per) when
//                has_grad, and in aux each workgroup's loss sum, then per class the pixels where
//                truth and prediction (the first most probable class) agree, where the truth is,
//                where the prediction is (counted in integers); then pixel_softmax_ce_total (one
//                workgroup) adds them in order, batch by batch: loss, the batch's mean per-class
//                Dice (over classes present in truth or prediction) and the counts (slots 7…).
//   confusion:   counts[true·k + predicted] += 1, one workgroup counting in integers, for up
//                to 1,024 cells at a time (the sums are exact, so the order does not matter).
// Bindings: logits, truth (the target), probs, grad, metrics (confusion: counts in the logits
// slot), aux (sigmoid_bce's sums, or the dense layer's weights then bias), layer_x (the input
// of the layer run here), layer_gx and act_gx (its data gradient), layer (the dense layer's
// gradients, or the convolution's weights and bias).

struct P {
    // Classes (softmax_ce, confusion) or elements per sample (sigmoid_bce, pixel_softmax_ce).
    per: u32,
    has_grad: u32,
    batch: u32,
    // The layer run here (dense_softmax_ce*, conv_sigmoid_bce): its inputs per sample (the
    // convolution's channels), and where its bias starts after its weights (in aux, or layer).
    // pixel_softmax_ce: the classes.
    n_in: u32,
    bias_at: u32,
    // The SGD step's rate, where this loss takes the step (UPDATE).
    lr: f32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> truth: array<f32>;
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(7) var<storage, read_write> aux: array<f32>;
@group(0) @binding(8) var<storage, read_write> layer_x: array<f32>;
@group(0) @binding(9) var<storage, read_write> layer_gx: array<f32>;
@group(0) @binding(10) var<storage, read_write> act_gx: array<f32>;
@group(0) @binding(11) var<storage, read_write> layer: array<f32>;

override BACKWARD: u32 = 0u;
override FUSE: u32 = 0u;
override UPDATE: u32 = 0u;

// sigmoid_bce's four sums of its workgroup w, at aux[4w..4w + 4].
fn part(w: u32) -> vec4<f32> {
    return vec4(aux[4u * w], aux[4u * w + 1u], aux[4u * w + 2u], aux[4u * w + 3u]);
}

fn set_part(w: u32, v: vec4<f32>) {
    aux[4u * w] = v.x;
    aux[4u * w + 1u] = v.y;
    aux[4u * w + 2u] = v.z;
    aux[4u * w + 3u] = v.w;
}

fn argmax_row(row: u32, from_probs: bool) -> u32 {
    var best = 0u;
    for (var i = 1u; i < p.per; i++) {
        if from_probs {
            if probs[row * p.per + i] > probs[row * p.per + best] {
                best = i;
            }
        } else if truth[row * p.per + i] > truth[row * p.per + best] {
            best = i;
        }
    }
    return best;
}

// Batches of `p.batch` samples in this step; the first sample and the size of batch b.
fn batch_count() -> u32 {
    return (step.n + p.batch - 1u) / p.batch;
}

fn batch_at(b: u32) -> vec2<u32> {
    return vec2(b * p.batch, min(p.batch, step.n - b * p.batch));
}

// Workgroups of sigmoid_bce per batch.
fn batch_groups() -> u32 {
    return (p.batch * p.per + 255u) / 256u;
}

@compute @workgroup_size(256)
fn softmax_ce(@builtin(local_invocation_index) li: u32) {
    softmax_rows(li);
}

@compute @workgroup_size(256)
fn dense_softmax_ce(@builtin(local_invocation_index) li: u32) {
    dense_logits(li);
    storageBarrier();
    softmax_rows(li);
}

@compute @workgroup_size(256)
fn dense_softmax_ce_backward(@builtin(local_invocation_index) li: u32) {
    dense_logits(li);
    storageBarrier();
    softmax_rows(li);
    storageBarrier();
    let k = p.per;
    for (var e = li; e < step.n * p.n_in; e += 256u) {
        let s = e / p.n_in;
        var acc = 0.0;
        for (var o = 0u; o < k; o++) {
            acc += grad[s * k + o] * aux[o * p.n_in + e % p.n_in];
        }
        layer_gx[e] = acc;
        if FUSE == 1u {
            act_gx[e] = acc * derivative(layer_x[e]);
        }
    }
    // Every read of w above comes before the step below moves it.
    storageBarrier();
    let cols = p.n_in + 1u;
    for (var e = li; e < k * cols; e += 256u) {
        let o = e / cols;
        let i = e % cols;
        var acc = 0.0;
        for (var s = 0u; s < step.n; s++) {
            var x = 1.0;
            if i < p.n_in {
                x = layer_x[s * p.n_in + i];
            }
            acc += grad[s * k + o] * x;
        }
        let at = select(o * p.n_in + i, p.bias_at + o, i == p.n_in);
        layer[at] = acc;
        if UPDATE == 1u {
            aux[at] -= p.lr * acc;
        }
    }
}

// The dense layer's logits, by the workgroup's 256 threads.
fn dense_logits(li: u32) {
    for (var e = li; e < step.n * p.per; e += 256u) {
        let s = e / p.per;
        let o = e % p.per;
        var acc = 0.0;
        for (var i = 0u; i < p.n_in; i++) {
            acc += layer_x[s * p.n_in + i] * aux[o * p.n_in + i];
        }
        logits[e] = acc + aux[p.bias_at + o];
    }
}

// softmax_ce's work, by the 256 threads of one workgroup.
fn softmax_rows(li: u32) {
    let k = p.per;
    for (var b = 0u; b < batch_count(); b++) {
        let at = batch_at(b);
        var loss = 0.0;
        var correct = 0.0;
        for (var s = at.x + li; s < at.x + at.y; s += 256u) {
            var m = logits[s * k];
            for (var i = 1u; i < k; i++) {
                m = max(m, logits[s * k + i]);
            }
            var sum = 0.0;
            for (var i = 0u; i < k; i++) {
                sum += exp(logits[s * k + i] - m);
            }
            let log_sum = log(sum);
            for (var i = 0u; i < k; i++) {
                let log_p = logits[s * k + i] - m - log_sum;
                let pr = exp(log_p);
                probs[s * k + i] = pr;
                loss -= truth[s * k + i] * log_p;
                if p.has_grad != 0u {
                    grad[s * k + i] = (pr - truth[s * k + i]) / f32(at.y);
                }
            }
            correct += select(0.0, 1.0, argmax_row(s, true) == argmax_row(s, false));
        }
        let total = workgroup_sum(li, vec4(loss, correct, 0.0, 0.0));
        if li == 0u {
            metrics[0] += total.x;
            metrics[1] += total.y;
            metrics[2] += f32(at.y);
            metrics[3] += 1.0;
        }
        // Every thread has read the tree before the next batch writes it.
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn sigmoid_bce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    bce_group(wg.x + wg.y * groups.x, li, false);
}

@compute @workgroup_size(256)
fn conv_sigmoid_bce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    bce_group(wg.x + wg.y * groups.x, li, true);
}

// The 1x1 convolution's logit of element i = (s, q).
fn conv_logit(i: u32) -> f32 {
    let s = i / p.per;
    let q = i % p.per;
    var acc = 0.0;
    for (var c = 0u; c < p.n_in; c++) {
        acc += layer[c] * layer_x[(s * p.n_in + c) * p.per + q];
    }
    return acc + layer[p.bias_at];
}

// That convolution's data gradient at element i = (s, q), from the logit's gradient g.
fn conv_data_grad(i: u32, g: f32) {
    let s = i / p.per;
    let q = i % p.per;
    for (var c = 0u; c < p.n_in; c++) {
        let j = (s * p.n_in + c) * p.per + q;
        // 0 + w·g, as the product sums its one term (a -0 becomes +0).
        var acc = 0.0;
        acc += layer[c] * g;
        layer_gx[j] = acc;
        if FUSE == 1u {
            act_gx[j] = acc * derivative(layer_x[j]);
        }
    }
}

// Workgroup w of sigmoid_bce, or with `conv` of conv_sigmoid_bce.
fn bce_group(w: u32, li: u32, conv: bool) {
    let b = w / batch_groups();
    var acc = vec4(0.0);
    if b < batch_count() {
        let at = batch_at(b);
        let e = (w % batch_groups()) * 256u + li;
        if e < at.y * p.per {
            let i = at.x * p.per + e;
            if conv {
                logits[i] = conv_logit(i);
            }
            let z = logits[i];
            let t = truth[i];
            let pr = 1.0 / (1.0 + exp(-z));
            probs[i] = pr;
            if p.has_grad != 0u {
                let g = (pr - t) / f32(at.y * p.per);
                grad[i] = g;
                if conv && BACKWARD == 1u {
                    conv_data_grad(i, g);
                }
            }
            // max(z, 0) - z·t + ln(1 + e^-|z|): stable for large |z|.
            acc = vec4(max(z, 0.0) - z * t + log(1.0 + exp(-abs(z))), t * pr, t, pr);
        }
    }
    let total = workgroup_sum(li, acc);
    if li == 0u {
        set_part(w, total);
    }
}

@compute @workgroup_size(256)
fn sigmoid_bce_total(@builtin(local_invocation_index) li: u32) {
    for (var b = 0u; b < batch_count(); b++) {
        let at = batch_at(b);
        let first = b * batch_groups();
        var acc = vec4(0.0);
        for (var g = li; g < (at.y * p.per + 255u) / 256u; g += 256u) {
            acc += part(first + g);
        }
        let total = workgroup_sum(li, acc);
        if li == 0u {
            var dice = 1.0;
            if total.z + total.w > 0.0 {
                dice = 2.0 * total.y / (total.z + total.w);
            }
            metrics[0] += total.x / f32(p.per);
            metrics[1] += dice;
            metrics[2] += f32(at.y);
            metrics[3] += 1.0;
            metrics[4] += total.y;
            metrics[5] += total.z;
            metrics[6] += total.w;
        }
        workgroupBarrier();
    }
}

const CELLS: u32 = 1024u;
var<workgroup> cells: array<atomic<u32>, CELLS>;

// Floats each workgroup of pixel_softmax_ce leaves in aux: its loss, then three counts per class.
fn pixel_stride() -> u32 {
    return 1u + 3u * p.n_in;
}

@compute @workgroup_size(256)
fn pixel_softmax_ce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let w = wg.x + wg.y * groups.x;
    let k = p.n_in;
    for (var j = li; j < 3u * k; j += 256u) {
        atomicStore(&cells[j], 0u);
    }
    workgroupBarrier();
    var loss = 0.0;
    let b = w / batch_groups();
    if b < batch_count() {
        let at = batch_at(b);
        let e = (w % batch_groups()) * 256u + li;
        if e < at.y * p.per {
            let s = at.x + e / p.per;
            let q = e % p.per;
            let first = s * k * p.per + q;
            var m = logits[first];
            for (var c = 1u; c < k; c++) {
                m = max(m, logits[first + c * p.per]);
            }
            var sum = 0.0;
            for (var c = 0u; c < k; c++) {
                sum += exp(logits[first + c * p.per] - m);
            }
            let t = u32(truth[s * p.per + q]);
            var best = 0u;
            var best_p = 0.0;
            for (var c = 0u; c < k; c++) {
                let pr = exp(logits[first + c * p.per] - m) / sum;
                probs[first + c * p.per] = pr;
                if p.has_grad != 0u {
                    grad[first + c * p.per] = (pr - select(0.0, 1.0, c == t)) / f32(at.y * p.per);
                }
                if c == 0u || pr > best_p {
                    best = c;
                    best_p = pr;
                }
            }
            loss = log(sum) - (logits[first + t * p.per] - m);
            atomicAdd(&cells[3u * t + 1u], 1u);
            atomicAdd(&cells[3u * best + 2u], 1u);
            if best == t {
                atomicAdd(&cells[3u * t], 1u);
            }
        }
    }
    let total = workgroup_sum(li, vec4(loss, 0.0, 0.0, 0.0));
    if li == 0u {
        aux[w * pixel_stride()] = total.x;
    }
    for (var j = li; j < 3u * k; j += 256u) {
        aux[w * pixel_stride() + 1u + j] = f32(atomicLoad(&cells[j]));
    }
}

var<workgroup> class_counts: array<f32, 256>;

@compute @workgroup_size(256)
fn pixel_softmax_ce_total(@builtin(local_invocation_index) li: u32) {
    let k = p.n_in;
    for (var b = 0u; b < batch_count(); b++) {
        let at = batch_at(b);
        let first = b * batch_groups();
        let used = (at.y * p.per + 255u) / 256u;
        var acc = vec4(0.0);
        for (var g = li; g < used; g += 256u) {
            acc.x += aux[(first + g) * pixel_stride()];
        }
        let total = workgroup_sum(li, acc);
        if li < 3u * k {
            // Whole numbers below 2^24: exact in any order.
            var count = 0.0;
            for (var g = 0u; g < used; g++) {
                count += aux[(first + g) * pixel_stride() + 1u + li];
            }
            class_counts[li] = count;
            metrics[7u + li] += count;
        }
        workgroupBarrier();
        if li == 0u {
            var dice = 0.0;
            var present = 0u;
            for (var c = 0u; c < k; c++) {
                let both = class_counts[3u * c] + class_counts[3u * c];
                let t_p = class_counts[3u * c + 1u] + class_counts[3u * c + 2u];
                if t_p > 0.0 {
                    dice += both / t_p;
                    present++;
                }
            }
            metrics[0] += total.x / f32(p.per);
            metrics[1] += select(1.0, dice / f32(present), present > 0u);
            metrics[2] += f32(at.y);
            metrics[3] += 1.0;
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn confusion(@builtin(local_invocation_index) li: u32) {
    for (var first = 0u; first < p.per * p.per; first += CELLS) {
        for (var c = li; c < CELLS; c += 256u) {
            atomicStore(&cells[c], 0u);
        }
        workgroupBarrier();
        for (var s = li; s < step.n; s += 256u) {
            let cell = argmax_row(s, false) * p.per + argmax_row(s, true);
            if cell >= first && cell < first + CELLS {
                atomicAdd(&cells[cell - first], 1u);
            }
        }
        workgroupBarrier();
        for (var c = li; c < min(CELLS, p.per * p.per - first); c += 256u) {
            logits[first + c] += f32(atomicLoad(&cells[c]));
        }
        workgroupBarrier();
    }
}
