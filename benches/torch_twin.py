#!/usr/bin/env python3
"""A Warwick run's checkpoint in its PyTorch twin: the module that `gpu-train export-torch`
prints for the run's model.toml, loaded with load_state_dict(strict=True), on the Warwick test
images, beside `gpu-train evaluate` of the same checkpoint. Prints both test Dice figures (the
mean over batches of 5, as in training, and over every pixel at once).

    python3 benches/torch_twin.py RUN_FOLDER [--bin target/release/gpu-train] [--data ../shared/data]

Needs PyTorch, numpy, Pillow and safetensors. Tooling for measurement only.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file


def warwick_split(folder):
    """A Warwick split's images [n, 3, h, w] in [0, 1] and masks [n, 1, h, w] in {0, 1}."""
    xs, ys = [], []
    for image in sorted(Path(folder).glob("image_*.png")):
        label = image.with_name("label_" + image.name[len("image_"):])
        xs.append(np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0)
        ys.append((np.asarray(Image.open(label).convert("L")) > 0).astype(np.float32))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(ys))[:, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--bin", default="target/release/gpu-train")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--batch", type=int, default=5)
    a = ap.parse_args()
    source = subprocess.run([a.bin, "export-torch", "--model", str(a.run / "model.toml")],
                            check=True, capture_output=True, text=True).stdout
    scope = {}
    exec(compile(source, "model.py", "exec"), scope)
    model = scope["Model"]()
    model.load_state_dict(load_file(str(a.run / "model.safetensors")), strict=True)
    model.eval()
    x, y = warwick_split(Path(a.data) / "warwick" / "Test")
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(model(x[i:i + a.batch])) for i in range(0, len(x), a.batch)])
    batches = [(2 * (t * q).sum() / (t.sum() + q.sum())).item()
               for t, q in zip(y.split(a.batch), p.split(a.batch))]
    whole = (2 * (y * p).sum() / (y.sum() + p.sum())).item()
    print(f"pytorch twin: test Dice {np.mean(batches):.4f} (mean of batches of {a.batch}), {whole:.4f} (every pixel)")
    ours = subprocess.run([a.bin, "evaluate", "--task", "warwick", "--model", str(a.run / "model.safetensors"),
                           "--data", a.data, "--backend", "cpu"], check=True, capture_output=True, text=True)
    print("gpu-train evaluate:", ours.stdout.strip())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
