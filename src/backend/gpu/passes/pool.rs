//! A max pooling that is never stored: the convolutions after it read their input through
//! it, and going back the data gradient of the convolution after it passes through it.

use super::{bound, bound_buf};
use crate::backend::gpu::encode::{Bind, Launch, ACT_IN, ACT_OUT, B, C, POOL_ACT_IN, POOL_ACT_OUT};
use crate::backend::gpu::shaders::Family;
use crate::graph::BufId;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::encode::Bind;
    use crate::backend::gpu::passes::lower;
    use crate::backend::gpu::passes::tests::relu;
    use crate::graph::Op;
    use crate::model::Act;

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
        let act = Op::Activation { act: Act::Relu, x: id(0), y: id(1), per: 64 };
        let mut ls = lower(
            &[
                conv(40, 0),
                act,
                Op::MaxPool2d { x: id(1), y: id(2), argmax: id(3), shape },
                conv(2, 4),
                backward,
                Op::MaxPool2dBackward { gy: id(6), argmax: id(3), gx: id(7), shape },
                act_back,
            ],
            &descs,
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
}
