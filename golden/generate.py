#!/usr/bin/env python3
"""Writes the PyTorch golden fixtures that the tests compare every backend with: one safetensors
file per op family and per network, the kinds and names of ../shared/golden (see its README).
Fixtures that ../shared/golden lacks (ops added since) are committed in golden/fixtures/.
Values are computed in float64 from float32 inputs and stored as float32; optimiser steps follow
Keras' formulas. Not needed to build or test: the tests read ../shared/golden, or the folder
named by GPU_TRAIN_GOLDEN, so a regenerated set is checked with

    python3 golden/generate.py OUT_DIR --seed 1
    GPU_TRAIN_GOLDEN=OUT_DIR cargo test --test golden_ops --test golden_models

Needs torch and safetensors (golden/requirements.txt).
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F


class Draw:
    """Seeded float32 inputs, held in float64 for the arithmetic."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, scale=1.0):
        return (torch.randn(shape, generator=self.g, dtype=torch.float64) * scale).float().double()

    def uniform(self, *shape):
        return torch.rand(shape, generator=self.g, dtype=torch.float64).float().double()

    def one_hot(self, n, k):
        return F.one_hot(torch.randint(0, k, (n,), generator=self.g), k).double()

    def binary(self, *shape):
        return (self.uniform(*shape) > 0.5).double()


def save(out, name, tensors, **meta):
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / f"{name}.safetensors"), {k: json.dumps(v) if not isinstance(v, str) else v
                                                         for k, v in meta.items()})


def grads(y, gy, *inputs):
    """Gradients of Σ(y·gy) with respect to `inputs`."""
    return torch.autograd.grad((y * gy).sum(), inputs)


def linear_family(out, d):
    x, w, b = d.normal(4, 7), d.normal(6, 7), d.normal(6)
    for t in (x, w, b):
        t.requires_grad_()
    y = F.linear(x, w, b)
    gy = d.normal(*y.shape)
    gx, gw, gb = grads(y, gy, x, w, b)
    save(out, "dense", dict(x=x, w=w, b=b, y=y, gy=gy, gx=gx, gw=gw, gb=gb))
    for name, k, pad in (("conv2d_3x3", 3, 1), ("conv2d_1x1", 1, 0)):
        x, w, b = d.normal(2, 3, 9, 7).requires_grad_(), d.normal(4, 3, k, k).requires_grad_(), d.normal(4).requires_grad_()
        y = F.conv2d(x, w, b, padding=pad)
        gy = d.normal(*y.shape)
        gx, gw, gb = grads(y, gy, x, w, b)
        save(out, name, dict(x=x, w=w, b=b, y=y, gy=gy, gx=gx, gw=gw, gb=gb), stride="1", padding=str(pad))
    x, w, b = d.normal(2, 4, 5, 6).requires_grad_(), d.normal(4, 3, 2, 2).requires_grad_(), d.normal(3).requires_grad_()
    y = F.conv_transpose2d(x, w, b, stride=2)
    gy = d.normal(*y.shape)
    gx, gw, gb = grads(y, gy, x, w, b)
    save(out, "conv_transpose2d_2x2s2", dict(x=x, w=w, b=b, y=y, gy=gy, gx=gx, gw=gw, gb=gb), stride="2", padding="0")


def pooling_and_activations(out, d):
    # Distinct values, so that each window has one maximum.
    x = (torch.randperm(2 * 3 * 8 * 6, generator=d.g).double() / 50.0 - 2.0).reshape(2, 3, 8, 6).requires_grad_()
    y = F.max_pool2d(x, 2)
    gy = d.normal(*y.shape)
    (gx,) = grads(y, gy, x)
    save(out, "maxpool2x2", dict(x=x, y=y, gy=gy, gx=gx), kernel="2", stride="2")
    x, gy = d.normal(5, 13, scale=2.0).requires_grad_(), d.normal(5, 13)
    t = dict(x=x, gy=gy)
    for name, f in (("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        y = f(x)
        (t[f"{name}.gx"],) = grads(y, gy, x)
        t[f"{name}.y"] = y
    save(out, "activations", t)


def losses(out, d):
    logits, target = d.normal(6, 10, scale=2.0).requires_grad_(), d.one_hot(6, 10)
    loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    (g,) = torch.autograd.grad(loss, logits)
    save(out, "softmax_cross_entropy", dict(logits=logits, target=target, probs=F.softmax(logits, 1),
                                            loss=loss.reshape(1), glogits=g), reduction="mean over batch")
    logits, target = d.normal(2, 1, 6, 5, scale=2.0).requires_grad_(), d.binary(2, 1, 6, 5)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    (g,) = torch.autograd.grad(loss, logits)
    p = torch.sigmoid(logits)
    dice = 2 * (target * p).sum() / (target.sum() + p.sum())
    save(out, "sigmoid_bce_dice", dict(logits=logits, target=target, probs=p, loss=loss.reshape(1), glogits=g,
                                       dice=dice.reshape(1)),
         reduction="mean over all elements", dice="2*sum(y*p)/(sum(y)+sum(p)) over the whole batch")
    # Masks of classes: class indices per pixel, softmax over the channels (the layout of
    # F.cross_entropy on [n, k, h, w]); the prediction is each pixel's most probable class.
    logits, target = d.normal(2, 4, 5, 6, scale=2.0).requires_grad_(), torch.randint(0, 4, (2, 5, 6), generator=d.g)
    loss = F.cross_entropy(logits, target)
    (g,) = torch.autograd.grad(loss, logits)
    pred = logits.argmax(1)
    counts = torch.tensor([[((pred == c) & (target == c)).sum(), (target == c).sum(), (pred == c).sum()]
                           for c in range(4)], dtype=torch.float64)
    present = counts[:, 1] + counts[:, 2] > 0
    dice = (2 * counts[present, 0] / (counts[present, 1] + counts[present, 2])).mean()
    save(out, "pixel_softmax_cross_entropy", dict(logits=logits, target=target.double(), probs=F.softmax(logits, 1),
                                                  loss=loss.reshape(1), glogits=g, counts=counts, dice=dice.reshape(1)),
         reduction="mean over all pixels", counts="per class: pixels predicted and true, true, predicted",
         dice="mean over classes present in truth or prediction of 2*both/(true+predicted)")
    w = d.normal(4, 3, 3, 3).requires_grad_()
    penalty = 1e-4 * (w * w).sum()
    (gw,) = torch.autograd.grad(penalty, w)
    save(out, "l2", dict(w=w, penalty=penalty.reshape(1), gw=gw), l2="0.0001")


def avg_pooling(out, d):
    # Odd height and width: the last row and column are dropped, their gradient 0.
    x = d.normal(2, 3, 7, 9).requires_grad_()
    y = F.avg_pool2d(x, 2)
    gy = d.normal(*y.shape)
    (gx,) = grads(y, gy, x)
    save(out, "avgpool2x2", dict(x=x, y=y, gy=gy, gx=gx), kernel="2", stride="2")


def leaky_relu(out, d):
    # Zeros and equal values among the inputs: at 0 PyTorch's gradient takes the slope.
    x = d.normal(4, 11, scale=2.0)
    x[0, :3] = 0.0
    x[1, :4] = x[1, 4]
    x.requires_grad_()
    y = F.leaky_relu(x)
    gy = d.normal(*y.shape)
    (gx,) = grads(y, gy, x)
    save(out, "leaky_relu", dict(x=x, y=y, gy=gy, gx=gx), negative_slope="0.01")


def batch_norm(out, d):
    """nn.BatchNorm2d(4) in training (batch statistics, running ones updated, gradients), then
    in evaluation (the running statistics) on other inputs. Channels of different means and
    scales; a channel with a zero and ties."""
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.copy_(d.normal(4))
        bn.bias.copy_(d.normal(4))
        bn.running_mean.copy_(d.normal(4))
        bn.running_var.copy_(d.uniform(4) + 0.5)
    t = dict(gamma=bn.weight, beta=bn.bias, running_mean0=bn.running_mean.clone(), running_var0=bn.running_var.clone())
    x = d.normal(3, 4, 5, 7) * torch.tensor([1.0, 3.0, 0.2, 1.0]).double().reshape(1, 4, 1, 1)
    x = x + torch.tensor([0.0, 2.0, -1.0, 0.5]).double().reshape(1, 4, 1, 1)
    x[0, 3, 0, :3] = 0.0
    x[1, 3, 2, :4] = x[1, 3, 2, 4]
    x.requires_grad_()
    y = bn(x)
    gy = d.normal(*y.shape)
    gx, gg, gb = grads(y, gy, x, bn.weight, bn.bias)
    t.update(x=x, y=y, gy=gy, gx=gx, ggamma=gg, gbeta=gb, running_mean=bn.running_mean, running_var=bn.running_var)
    bn.eval()
    x_eval = d.normal(2, 4, 5, 7) * 2.0
    t.update(x_eval=x_eval, y_eval=bn(x_eval))
    save(out, "batch_norm", t, momentum="0.1", eps="1e-05")


def optimizers(out, d):
    """Three steps from w0 with gradients g0..g2, in Keras' forms."""
    w0, gs = d.normal(3, 5), [d.normal(3, 5) for _ in range(3)]
    t = dict(w0=w0, g0=gs[0], g1=gs[1], g2=gs[2])
    w = w0.clone()
    for i, g in enumerate(gs):
        w = w - 0.25 * g
        t[f"sgd.w{i + 1}"] = w
    w, v = w0.clone(), torch.zeros_like(w0)
    for i, g in enumerate(gs):
        v = 0.8 * v - 0.01 * g
        w = w + v
        t[f"momentum.w{i + 1}"] = w
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for i, g in enumerate(gs):
        step = i + 1
        m = m + (1 - 0.9) * (g - m)
        v = v + (1 - 0.999) * (g * g - v)
        alpha = 1e-3 * (1 - 0.999 ** step) ** 0.5 / (1 - 0.9 ** step)
        w = w - alpha * m / (v.sqrt() + 1e-7)
        t[f"adam.w{step}"] = w
    save(out, "optimizers", t, sgd={"lr": 0.25}, momentum={"lr": 0.01, "momentum": 0.8},
         adam={"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07})


def networks():
    """The report's networks as torch.nn.Sequential, indices as gpu-train's checkpoint keys."""
    mlp = nn.Sequential(nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 10))

    def cnn(act):
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), act(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), act(), nn.Flatten(), nn.Linear(32 * 49, 10))
    fcn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(),
                        nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 1, 1))
    return [("model_mnist_mlp", mlp, (4, 784), "classes"),
            ("model_mnist_cnn_relu", cnn(nn.ReLU), (4, 1, 28, 28), "classes"),
            ("model_mnist_cnn_tanh", cnn(nn.Tanh), (4, 1, 28, 28), "classes"),
            ("model_warwick_fcn", fcn, (2, 3, 32, 32), "mask")]


class SmallUNet(nn.Module):
    """Two levels of a U-Net (tests/common's small_unet), written out by hand."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(3, 4, 3, padding=1)
        self.down2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bottom = nn.Conv2d(6, 8, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.mid = nn.Conv2d(12, 6, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        skip1 = F.relu(self.down1(x))
        skip2 = F.relu(self.down2(F.max_pool2d(skip1, 2)))
        bottom = F.relu(self.bottom(F.max_pool2d(skip2, 2)))
        mid = F.relu(self.mid(torch.cat([skip2, self.up2(bottom)], 1)))
        return self.head(torch.cat([self.up1(mid), skip1], 1))


class PoolUpsampleAdd(nn.Module):
    """A residual path (tests/common's pool_upsample_add), written out by hand."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        skip = F.relu(self.a(x))
        up = F.interpolate(self.b(F.max_pool2d(skip, 2)), scale_factor=2, mode="nearest")
        return self.head(skip + up)


def residual_models(out, d):
    models(out, d, [("model_pool_upsample_add", PoolUpsampleAdd(), (2, 3, 8, 12), "mask")])


def graph_models(out, d):
    models(out, d, [("model_small_unet", SmallUNet(), (2, 3, 8, 12), "mask")])


def models(out, d, nets=None):
    for name, net, shape, target_kind in nets or networks():
        net = net.double()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(d.normal(*p.shape, scale=0.1))
        x = d.uniform(*shape)
        x = torch.where(d.uniform(*shape) < 0.3, torch.zeros_like(x), x).requires_grad_()
        logits = net(x)
        if target_kind == "classes":
            target = d.one_hot(shape[0], 10)
            loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
            meta = "softmax cross-entropy, mean over batch"
        else:
            target = d.binary(*logits.shape)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            meta = "sigmoid then binary cross-entropy, mean over pixels"
        params = dict(net.named_parameters())
        gs = torch.autograd.grad(loss, [x, *params.values()])
        t = dict(x=x, target=target, output=logits, loss=loss.reshape(1), gx=gs[0])
        t.update({f"param.{k}": v for k, v in params.items()})
        t.update({f"grad.{k}": g for k, g in zip(params, gs[1:])})
        save(out, name, t, loss=meta)


def strided_convolutions(out, d):
    """Convolutions of other paddings and strides, on a 9x8 input: a stride of 2 drops a last
    column or row, as PyTorch's does."""
    for name, k, stride, pad in (("conv2d_3x3_s2p1", 3, 2, 1), ("conv2d_2x2_valid", 2, 1, 0),
                                 ("conv2d_5x5_s2_valid", 5, 2, 0)):
        x, w, b = d.normal(2, 3, 9, 8).requires_grad_(), d.normal(4, 3, k, k).requires_grad_(), d.normal(4).requires_grad_()
        y = F.conv2d(x, w, b, stride=stride, padding=pad)
        gy = d.normal(*y.shape)
        gx, gw, gb = grads(y, gy, x, w, b)
        save(out, name, dict(x=x, w=w, b=b, y=y, gy=gy, gx=gx, gw=gw, gb=gb), stride=str(stride), padding=str(pad))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    d = Draw(a.seed)
    for part in (linear_family, pooling_and_activations, losses, optimizers, models, avg_pooling, leaky_relu,
                 graph_models, batch_norm, residual_models, strided_convolutions):
        part(a.out, d)
    print(f"wrote {len(list(a.out.glob('*.safetensors')))} fixtures to {a.out}")


if __name__ == "__main__":
    main()
