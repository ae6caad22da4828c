#!/usr/bin/env python3
"""Gathers what benches/gpu-figures.sh left in OUT_DIR into OUT_DIR/figures.json and a Markdown
table, OUT_DIR/figures.md (also printed): per task, wall time cold and warm, epochs, steps and
launches per second, the final metrics, beside PyTorch with CUDA graphs and eager; the products'
TFLOP/s and fraction of f32 peak; each kernel's share of a training step.

    python3 benches/gpu_summary.py OUT_DIR
"""
import json
import sys
from pathlib import Path

STEPS = {"warwick": 17, "mnist-mlp": 600, "mnist-cnn": 600}  # training steps per epoch at full size
SAMPLES = {"warwick": 85, "mnist-mlp": 60000, "mnist-cnn": 60000}


def steps_of(run_dir, task):
    """Training steps per epoch of a gpu-train run, from its config.json (limits, batch, flips)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    n = min(cfg.get("train_limit") or SAMPLES[task], SAMPLES[task]) * (2 if cfg.get("hflip") else 1)
    return -(-n // cfg["batch_size"])


def main(out):
    out = Path(out)
    walls = {}
    for line in (out / "walls.tsv").read_text().splitlines():
        name, seconds, status = line.split("\t")
        walls[name] = (float(seconds), int(status))
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    launches = {t["task"]: t for t in bench.get("tasks", [])}
    card = (out / "card.txt").read_text().strip()
    rows, md = [], [f"# GPU figures: {card}", "", f"gpu-train backend: {bench.get('backend', '?')}", ""]
    md += ["| task | trainer | epochs | wall s (cold) | wall s (warm) | epochs/s | steps/s | launches/s | final test metric |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for task in ("warwick", "mnist-mlp", "mnist-cnn"):
        hist = out / f"run-{task}-warm" / "history.json"
        if hist.is_file():
            h = json.loads(hist.read_text())
            epochs, last = len(h["epochs"]), h["epochs"][-1]
            cold, warm = walls.get(f"gpu-train-{task}-cold", (None, 1))[0], walls[f"gpu-train-{task}-warm"][0]
            t, steps = launches.get(task, {}), steps_of(hist.parent, task)
            per_epoch = steps * (t.get("train_launches") or 0) + t.get("test_steps", 0) * (t.get("test_launches") or 0)
            metric = last.get("test_dice_whole") or last["test_metric"]
            row = dict(task=task, trainer="gpu-train", epochs=epochs, wall_cold=cold, wall_warm=warm,
                       epochs_per_s=epochs / warm, steps_per_s=epochs * steps / warm,
                       launches_per_s=epochs * per_epoch / warm, final_test_metric=metric)
            rows.append(row)
        for mode in ("graphs", "eager"):
            j = out / f"torch-{mode}-{task}.json"
            if j.is_file():
                r = json.loads(j.read_text())
                rows.append(dict(task=task, trainer=f"PyTorch {r['torch']} {mode}", epochs=r["epochs"], wall_cold=None,
                                 wall_warm=r["wall_s"], epochs_per_s=r["epochs"] / r["wall_s"],
                                 steps_per_s=r["epochs"] * STEPS[task] / r["wall_s"], launches_per_s=None,
                                 final_test_metric=r["final_test_metric"]))
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        md.append(f"| {r['task']} | {r['trainer']} | {r['epochs']} | {fmt(r['wall_cold'], '.2f')} | "
                  f"{fmt(r['wall_warm'], '.2f')} | {fmt(r['epochs_per_s'], '.3g')} | {fmt(r['steps_per_s'], '.4g')} | "
                  f"{fmt(r['launches_per_s'], '.4g')} | {fmt(r['final_test_metric'], '.4f')} |")
    md += ["", "PyTorch walls are the whole script (start, data load, training, test passes), as gpu-train's are.",
           "", "| product | ms | TFLOP/s | of f32 peak |", "| --- | ---: | ---: | ---: |"]
    for m in bench.get("matmul", []):
        peak = m.get("peak_fraction")
        md.append(f"| {m['m']}x{m['n']}x{m['k']} | {m['ms']:.3f} | {m['gflops'] / 1e3:.2f} | "
                  f"{'–' if peak is None else format(peak * 100, '.1f') + '%'} |")
    for t in bench.get("tasks", []):
        prof = t.get("profile") or {}
        if "Times" in prof:
            times = prof["Times"]
            total = sum(k["ms"] for k in times)
            md += ["", f"## {t['task']}: a training step on the device ({len(times)} launches, "
                   f"{total:.4f} ms of kernels, {t['step_ms']:.4f} ms wall)", "",
                   "| # | kernel | ms | share |", "| ---: | --- | ---: | ---: |"]
            md += [f"| {k['launch']} | `{k['kernel']}` | {k['ms']:.4f} | {100 * k['ms'] / total:.1f}% |" for k in times]
        elif "Unavailable" in prof:
            md += ["", f"{t['task']}: no kernel profile: {prof['Unavailable']}"]
    text = "\n".join(md) + "\n"
    (out / "figures.md").write_text(text)
    (out / "figures.json").write_text(json.dumps(dict(card=card, runs=rows, bench=bench), indent=1))
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__))
