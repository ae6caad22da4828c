//! A max pooling that is never stored ([`Fusion::read_through`]): the convolutions after it read
//! their input through it (`POOLED` in `conv2d.wgsl`), its backward finds each window's maximum
//! again from the pooling's input (`FROM_INPUT` in `maxpool.wgsl`), and the input-gradient
//! product of the convolution after it may run that backward as it stores each gradient
//! (`UNPOOL` in `conv2d.wgsl`).

use super::{bound, bound_buf};
use crate::backend::gpu::bindings::{Gemm, MaxPool, Mode};
use crate::backend::gpu::encode::{Bind, Launch};
use crate::backend::gpu::shaders::Family;
use crate::graph::{Fusion, Op};

/// Rebinds what `l` reads of a pooling read through: a convolution's input x (forward or
/// weight gradient) becomes the pooling's input, read through the pooling; the pooling
/// backward's argmax becomes the pooling's input, searched again.
pub fn read_through(l: &mut Launch, ops: &[Op], fusion: &Fusion) {
    for i in 0..l.binds.len() {
        let (slot, Bind::Buf(id)) = l.binds[i] else {
            continue;
        };
        let Some(&Op::MaxPool2d { x, y, .. }) = fusion.pooling_of(ops, id) else {
            continue;
        };
        let k = &l.kernel;
        let constant = if id == y {
            let conv = k.family == Family::Conv2d
                && k.entry == "matmul"
                && matches!(k.mode(), Some(Mode::Forward | Mode::WeightGrad));
            assert!(conv && slot == u32::from(Gemm::B), "only a convolution's input reads through a pooling: {k:?}");
            "POOLED"
        } else {
            let backward = k.family == Family::MaxPool && k.entry == "backward";
            assert!(backward && slot == u32::from(MaxPool::Argmax), "{k:?} reads an argmax");
            "FROM_INPUT"
        };
        l.binds.remove(i);
        l.binds.push((slot, Bind::Buf(x)));
        l.kernel = l.kernel.clone().with(constant, 1);
        return read_through(l, ops, fusion);
    }
}

/// A convolution's input-gradient `product` that also runs `pool`, the backward of a pooling
/// read through (with the backward of the activation before the pooling), which reads the
/// product's result.
pub fn unpool(product: &Launch, pool: &Launch) -> Launch {
    let (kp, kq) = (&product.kernel, &pool.kernel);
    let data_grad = kp.family == Family::Conv2d && kp.entry == "matmul" && kp.mode() == Some(Mode::DataGrad);
    let from_input = kq.entry == "backward" && kq.constant("FROM_INPUT") == Some(1) && kq.constant("FUSE") == Some(1);
    let x = bound(pool, MaxPool::Argmax);
    let fits = bound(pool, MaxPool::Src) == bound(product, Gemm::C)
        && bound(pool, MaxPool::ActIn) == x
        && bound_buf(pool, MaxPool::Dst).is_some();
    assert!(data_grad && from_input && fits, "the plan unpools in an input-gradient product: {kp:?}, {kq:?}");
    let mut fused = product.clone();
    fused.kernel = fused.kernel.with("UNPOOL", 1).with("ACT", kq.constant("ACT").expect("an activation"));
    let out = bound(pool, MaxPool::ActOut).expect("its output");
    fused.binds.extend([(Gemm::ActOut.into(), out), (Gemm::ActIn.into(), x.expect("x"))]);
    fused
}

#[cfg(test)]
mod tests {
    use crate::backend::gpu::bindings::{Gemm, MaxPool, Mode};
    use crate::backend::gpu::encode::{Bind, Launch};
    use crate::backend::gpu::passes::bound;
    use crate::backend::gpu::passes::tests::lowered;
    use crate::backend::gpu::shaders::Family;
    use crate::graph::{BufDesc, BufId, ConvGeom, Dtype, Op};
    use crate::model::{Act, Shape};

    /// conv 0 → relu 1 → pool 2 (argmax 3) → conv 4, forward and backward as a step has them,
    /// on `side`-square images, with `also` after them.
    fn conv_pool_conv(side: usize, also: Option<Op>) -> Vec<Launch> {
        let shape = Shape::new(2, side, side);
        let g = ConvGeom::same(2, 3, side / 2, side / 2, 3);
        let id = BufId;
        let conv = |x: usize, y: usize, g: ConvGeom| Op::Conv2d { x: id(x), w: id(60), b: id(61), y: id(y), g };
        let backward =
            Op::Conv2dBackward { x: id(2), w: id(60), gy: id(5), gx: Some(id(6)), gw: id(62), gb: id(63), g };
        // Every buffer sized for a batch of 4 of the largest per-sample size.
        let desc = BufDesc { name: String::new(), len: 4 * 3 * side * side, dtype: Dtype::F32, set: None };
        let per = 2 * side * side;
        let mut ops = vec![
            conv(40, 0, ConvGeom::same(1, 2, side, side, 3)),
            Op::Activation { act: Act::Relu, x: id(0), y: id(1), per },
            Op::MaxPool2d { x: id(1), y: id(2), argmax: id(3), shape },
            conv(2, 4, g),
            backward,
            Op::MaxPool2dBackward { gy: id(6), argmax: id(3), gx: id(7), shape },
            Op::ActivationBackward { act: Act::Relu, y: id(1), gy: id(7), gx: id(8), per },
        ];
        ops.extend(also);
        lowered(&ops, &vec![desc; 64])
    }

    #[test]
    fn convolutions_read_through_a_pooling_that_is_then_never_stored() {
        let alone = |side: usize, also: Option<Op>| {
            let mut ls = conv_pool_conv(side, also.clone());
            ls.truncate(ls.len() - also.map_or(0, |_| 1));
            ls
        };
        let after = conv_pool_conv(8, None);
        assert!(!after.iter().any(|l| l.kernel.family == Family::MaxPool && l.kernel.entry == "forward"));
        // The second convolution's forward and weight gradient read relu's output through the
        // pooling; its data gradient reads no x.
        let pooled: Vec<_> = after.iter().filter(|l| l.kernel.constant("POOLED") == Some(1)).collect();
        let modes: Vec<_> = pooled.iter().map(|l| l.kernel.mode()).collect();
        assert_eq!(modes, [Some(Mode::Forward), Some(Mode::WeightGrad)]);
        assert!(pooled.iter().all(|l| bound(l, Gemm::B) == Some(Bind::Buf(BufId(1)))));
        // The second convolution's data gradient also runs the pooling's backward and the relu's.
        let data = after.iter().find(|l| l.kernel.constant("UNPOOL") == Some(1)).expect("fused");
        assert_eq!((data.kernel.mode(), data.kernel.constant("ACT")), (Some(Mode::DataGrad), Some(0)));
        assert!(data.binds.contains(&(Gemm::ActIn.into(), Bind::Buf(BufId(1)))));
        assert!(data.binds.contains(&(Gemm::ActOut.into(), Bind::Buf(BufId(8)))));
        assert!(!after.iter().any(|l| l.kernel.family == Family::MaxPool));

        // Stored: odd sides, another reader of the pooled values, a later write of relu's output.
        let relu = |x: usize, y: usize| Op::Activation { act: Act::Relu, x: BufId(x), y: BufId(y), per: 8 };
        for (side, also) in [(9, None), (8, Some(relu(2, 9))), (8, Some(relu(9, 1)))] {
            let ls = alone(side, also);
            assert_eq!(ls.len(), after.len() + 2, "side {side}");
            assert!(ls.iter().any(|l| l.kernel.family == Family::MaxPool && l.kernel.entry == "forward"));
        }
        // Read through, but the pooling's backward on its own when its gradient 7 is read later.
        let ls = alone(8, Some(relu(7, 9)));
        assert_eq!(ls.len(), after.len() + 1);
        let back = ls.iter().find(|l| l.kernel.entry == "backward").expect("the pooling's backward");
        assert_eq!(back.kernel.constant("FROM_INPUT"), Some(1));
        assert_eq!(bound(back, MaxPool::Argmax), Some(Bind::Buf(BufId(1))));
    }
}
