// The hidden-layer activation, shared by the activation kernels and the products that apply it
// as they store their result.
//   ACT: 0 relu, 1 sigmoid, 2 tanh, 3 leaky relu (slope 0.01 below 0, PyTorch's default).

override ACT: u32 = 0u;

fn activate(x: f32) -> f32 {
    switch ACT {
        case 0u: { return max(x, 0.0); }
        case 1u: { return 1.0 / (1.0 + exp(-x)); }
        case 3u: { return select(x * 0.01, x, x > 0.0); }
        default: { return precise_tanh(x); }
    }
}

// The activation's derivative, from its output y.
fn derivative(y: f32) -> f32 {
    switch ACT {
        case 0u: { return select(0.0, 1.0, y > 0.0); }
        case 1u: { return y * (1.0 - y); }
        // y has x's sign, and at x = 0 the slope is PyTorch's.
        case 3u: { return select(0.01, 1.0, y > 0.0); }
        default: { return 1.0 - y * y; }
    }
}

// tanh to a few ulp: drivers' tanh may be far coarser (lavapipe's is off by ~1e-5 relative).
// Near 0 the series avoids the cancellation in 1 - e^(-2|x|).
fn precise_tanh(x: f32) -> f32 {
    let ax = abs(x);
    if ax < 0.125 {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    }
    let e = exp(-2.0 * ax);
    return sign(x) * (1.0 - e) / (1.0 + e);
}
