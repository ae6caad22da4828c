#!/usr/bin/env python3
"""The report's three networks trained in PyTorch the way a PyTorch user who wants speed would:
data resident on the card, and (with --mode graphs) the whole training step -- batch gather,
forward, loss, backward, optimiser step and the running sums of loss and metric -- captured once
as a CUDA graph and replayed each step. --mode eager runs the same code without the graph.

Same networks and settings as gpu-train's presets: the MLP 784-100-10 (sigmoid, SGD 0.25,
batch 100, 25 epochs), the CNN (relu, SGD 0.25, batch 100, 6 epochs) and the Warwick FCN (relu,
Adam 1e-3 with epsilon 1e-7, batch 5, 250 epochs). Keras-style initial weights (Glorot uniform;
the CNN's N(0, 0.05)) and zero biases. Metrics are read once per epoch, as gpu-train reads them.

    python3 benches/torch_graphs.py --task warwick --data DATA_ROOT --mode graphs --json-out F

Needs PyTorch, numpy and Pillow (the GPU machine's python3 has them). Prints one line per epoch
and ends with one JSON line: wall seconds of the whole script, median epoch seconds, the final
test metric. Tooling for measurement only; nothing in the project imports it.
"""
import argparse
import gzip
import json
import statistics
import struct
import sys
import time
from pathlib import Path

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

SETTINGS = {
    "mnist-mlp": dict(epochs=25, batch=100, opt="sgd", lr=0.25),
    "mnist-cnn": dict(epochs=6, batch=100, opt="sgd", lr=0.25),
    "warwick": dict(epochs=250, batch=5, opt="adam", lr=1e-3),
}


def read_idx(path):
    """An IDX file (gzipped): its array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(root):
    d = Path(root) / "mnist"
    if not d.is_dir():
        d = Path(root)
    x = [read_idx(d / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")]
    y = [read_idx(d / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")]
    return [(a.astype(np.float32)[:, None] / 255.0, b.astype(np.int64)) for a, b in zip(x, y)]


def load_warwick(root):
    from PIL import Image

    d = Path(root) / "warwick"
    if not d.is_dir():
        d = Path(root)
    out = []
    for split in ("Train", "Test"):
        images = sorted((d / split).glob("image_*.png"))
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in images])
        y = np.stack([np.asarray(Image.open(p.with_name(p.name.replace("image_", "label_"))).convert("L")) > 0
                      for p in images]).astype(np.float32)
        out.append((x.transpose(0, 3, 1, 2).copy(), y[:, None]))
    return out


def synthetic(task):
    rng = np.random.default_rng(1)
    if task == "warwick":
        shapes = [(85, 3, 128, 128), (60, 3, 128, 128)]
        return [(rng.random(s, dtype=np.float32), (rng.random((s[0], 1, 128, 128)) > 0.5).astype(np.float32))
                for s in shapes]
    return [(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)) for n in (60000, 10000)]


def build(task):
    if task == "mnist-mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 10))
    elif task == "mnist-cnn":
        net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    else:
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(),
            nn.Conv2d(8, 1, 1))
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if task == "mnist-cnn":
                nn.init.normal_(m.weight, 0.0, 0.05)
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=SETTINGS, required=True)
    ap.add_argument("--data", default="data", help="data root (mnist/, warwick/) or the set's folder")
    ap.add_argument("--mode", choices=["graphs", "eager"], default="graphs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--synthetic", action="store_true", help="random data of the real sizes (timing only)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    s = SETTINGS[a.task]
    epochs = a.epochs or s["epochs"]
    if a.mode == "graphs" and not a.device.startswith("cuda"):
        sys.exit("--mode graphs needs --device cuda")
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    splits = synthetic(a.task) if a.synthetic else (load_warwick(a.data) if a.task == "warwick" else load_mnist(a.data))
    (xtr, ytr), (xte, yte) = [(torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)) for x, y in splits]
    net = build(a.task).to(dev)
    if s["opt"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=s["lr"])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=s["lr"], eps=1e-7, capturable=a.mode == "graphs")
    seg = a.task == "warwick"
    batch, n = s["batch"], xtr.shape[0]
    steps = n // batch

    def loss_and_metric(logits, y):
        if seg:
            p = torch.sigmoid(logits)
            dice = 2 * (p * y).sum() / (p.sum() + y.sum())
            return nn.functional.binary_cross_entropy_with_logits(logits, y), dice
        return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    idx = torch.zeros(batch, dtype=torch.int64, device=dev)
    sums = torch.zeros(2, device=dev)

    def step():
        xb, yb = xtr.index_select(0, idx), ytr.index_select(0, idx)
        loss, metric = loss_and_metric(net(xb), yb)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        sums.add_(torch.stack([loss.detach(), metric.detach()]))

    graph = None
    if a.mode == "graphs":
        # Warm-up on a side stream, as CUDA graphs require, then capture: three training steps
        # more than gpu-train takes, a few milliseconds.
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):
            for i in range(3):
                idx.copy_(torch.arange(i * batch, (i + 1) * batch, device=dev))
                step()
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        sums.zero_()
    seconds, last = [], None
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, device=dev, generator=gen)
        for i in range(steps):
            idx.copy_(order[i * batch:(i + 1) * batch])
            graph.replay() if graph is not None else step()
        with torch.no_grad():
            net.eval()
            test_loss, test_metric = loss_and_metric(net(xte), yte)
            net.train()
            train = (sums / steps).tolist()
            last = (test_loss.item(), test_metric.item())
        sums.zero_()
        seconds.append(time.perf_counter() - t0)
        print(f"Epoch {epoch}/{epochs} - {seconds[-1]:.3f}s - loss {train[0]:.4f} - metric {train[1]:.4f} - "
              f"test_loss {last[0]:.4f} - test_metric {last[1]:.4f}", flush=True)
    result = {
        "trainer": f"torch-{a.mode}", "task": a.task, "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda" else "cpu", "torch": torch.__version__, "epochs": epochs,
        "epoch_s_median": statistics.median(seconds[1:] or seconds), "train_s": sum(seconds),
        "final_test_loss": last[0], "final_test_metric": last[1], "wall_s": time.perf_counter() - START,
    }
    print(json.dumps(result))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
