#!/usr/bin/env python3
"""The report's CNN (relu, SGD 0.25, batch 100) for three steps on the first 300 MNIST training
images in order, from weights and biases drawn from N(0, 0.05), in PyTorch float64, against
gpu-train on each backend started from the same weights (`--init`): prints how far each
backend's parameters end from PyTorch's, relative to the largest parameter.

    python3 benches/cnn_torch_f64.py [--bin target/release/gpu-train] [--data ../shared/data]

Needs PyTorch, numpy and safetensors. Tooling for measurement only.
"""
import argparse
import gzip
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 49, 10))


def idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/gpu-train")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--backends", default="reference,cpu,gpu")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnn-f64-"))
    g = torch.Generator().manual_seed(1)
    init = {k: (torch.randn(v.shape, generator=g, dtype=torch.float64) * 0.05).float()
            for k, v in cnn().state_dict().items()}
    save_file(init, str(work / "init.safetensors"))
    net = cnn().double()
    net.load_state_dict({k: v.double() for k, v in init.items()})
    mnist = Path(a.data) / "mnist"
    x = torch.tensor(idx(mnist / "train-images-idx3-ubyte.gz")[:300], dtype=torch.float64)[:, None] / 255.0
    y = torch.tensor(idx(mnist / "train-labels-idx1-ubyte.gz")[:300].astype(np.int64))
    opt = torch.optim.SGD(net.parameters(), lr=0.25)
    for s in range(3):
        loss = nn.functional.cross_entropy(net(x[s * 100:(s + 1) * 100]), y[s * 100:(s + 1) * 100])
        opt.zero_grad()
        loss.backward()
        opt.step()
    want = {k: v.detach() for k, v in net.state_dict().items()}
    largest = max(v.abs().max().item() for v in want.values())
    for backend in a.backends.split(","):
        out = work / backend
        subprocess.run([a.bin, "--task", "mnist-cnn", "--init", str(work / "init.safetensors"), "--no-shuffle",
                        "--train-limit", "300", "--test-limit", "100", "--epochs", "1", "--data", a.data,
                        "--backend", backend, "--out", str(out)], check=True, capture_output=True)
        got = load_file(str(out / "model.safetensors"))
        off = {k: (got[k].double() - want[k]).abs().max().item() / largest for k in want}
        worst = max(off, key=off.get)
        print(f"{backend:<10} {off[worst]:.2e} of the largest parameter (worst: {worst}); "
              + ", ".join(f"{k} {v:.1e}" for k, v in sorted(off.items())))


if __name__ == "__main__":
    main()
