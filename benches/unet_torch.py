#!/usr/bin/env python3
"""The built-in U-Net trained in PyTorch as gpu-train's warwick-unet preset trains it: the module
`gpu-train export-torch --task warwick-unet` prints, Glorot-uniform weights and zero biases,
Adam (lr 1e-3, Keras' eps 1e-7), batch 5, every training image and its left-right mirror,
shuffled each epoch, binary cross-entropy on the sigmoid; prints each epoch's seconds (training
and test pass, as gpu-train's epoch line) and the test Dice (the mean over batches of 5, as gpu-train's history, and over every pixel at once).

    python3 benches/unet_torch.py [--epochs 250] [--seed 7] [--threads 2] [--bin target/release/gpu-train]

Needs PyTorch, numpy, Pillow and safetensors. Tooling for measurement only.
"""
import argparse
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from torch_twin import warwick_split


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/gpu-train")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    source = subprocess.run([a.bin, "export-torch", "--task", "warwick-unet"],
                            check=True, capture_output=True, text=True).stdout
    scope = {}
    exec(compile(source, "unet.py", "exec"), scope)
    model = scope["Model"]()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    root = Path(a.data) / "warwick"
    x, y = warwick_split(root / "Train")
    x, y = torch.cat([x, x.flip(3)]), torch.cat([y, y.flip(3)])
    tx, ty = warwick_split(root / "Test")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    batch = 5
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(model(tx[i:i + batch])) for i in range(0, len(tx), batch)])
        seconds = time.perf_counter() - start
        batches = [(2 * (t * q).sum() / (t.sum() + q.sum())).item() for t, q in zip(ty.split(batch), p.split(batch))]
        whole = (2 * (ty * p).sum() / (ty.sum() + p.sum())).item()
        print(f"epoch {epoch}/{a.epochs} - {seconds:.2f}s - test_dice {sum(batches) / len(batches):.4f} "
              f"- test_dice_whole {whole:.4f}", flush=True)


if __name__ == "__main__":
    main()
