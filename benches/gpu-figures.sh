#!/usr/bin/env bash
# Every GPU figure of the speed comparison, in one call on a machine with a GPU and PyTorch with
# CUDA in its python3 (about 4 minutes on an H100): each task's preset run on gpu-train twice
# (the first fills the driver's shader cache: cold, then warm), the same runs in PyTorch with the
# whole training step captured as a CUDA graph and in PyTorch eager (benches/torch_graphs.py),
# then `gpu-train bench --backend gpu --profile` (products at 1024, 2048 and 4096 against the
# card's f32 peak, step times, launches, each kernel's device time). Writes OUT_DIR/figures.json
# and OUT_DIR/figures.md (benches/gpu_summary.py), beside every run's log.
#
#   benches/gpu-figures.sh OUT_DIR
#
# Build the binary where Rust is and carry it (../shared/tools/device-prep.sh). Environment:
# GPU_TRAIN_BIN (default target/release/gpu-train), GPU_TRAIN_DATA (the data root, default
# ./data), PYTHON (default python3), EPOCHS_SCALE (default 1; e.g. 0.1 for a quick check), and
# for a smoke test on a software device: EXTRA_ARGS (e.g. "--train-limit 200 --test-limit 100",
# given to gpu-train's runs), BENCH_ARGS (e.g. --quick), TORCH_DEVICE (default cuda).
set -uo pipefail

out=${1:?usage: benches/gpu-figures.sh OUT_DIR}
bin=${GPU_TRAIN_BIN:-target/release/gpu-train}
data=${GPU_TRAIN_DATA:-data}
python=${PYTHON:-python3}
scale=${EPOCHS_SCALE:-1}
read -r -a extra <<<"${EXTRA_ARGS:-}"
read -r -a bench_args <<<"${BENCH_ARGS:-}"
device=${TORCH_DEVICE:-cuda}
here=$(dirname "$0")
mkdir -p "$out"
: >"$out/walls.tsv"

# Runs a command with its output in OUT_DIR/NAME.log; appends NAME, wall seconds and exit status
# to walls.tsv.
wall() {
    local name=$1 start end status
    shift
    start=$(date +%s%N)
    "$@" >"$out/$name.log" 2>&1
    status=$?
    end=$(date +%s%N)
    printf '%s\t%s\t%d\n' "$name" "$(((end - start) / 1000000))e-3" "$status" >>"$out/walls.tsv"
    printf '%-24s %8.2f s  exit %d\n' "$name" "$(((end - start) / 1000000))e-3" "$status"
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$out/card.txt" 2>&1 || echo unknown >"$out/card.txt"
for task in warwick:250 mnist-mlp:25 mnist-cnn:6; do
    name=${task%%:*}
    epochs=$("$python" -c "print(max(1, round(${task##*:} * $scale)))")
    for run in cold warm; do
        rm -rf "$out/run-$name-$run"
        wall "gpu-train-$name-$run" "$bin" --task "$name" --epochs "$epochs" --backend gpu --data "$data" \
            --out "$out/run-$name-$run" "${extra[@]}"
    done
    for mode in graphs eager; do
        wall "torch-$mode-$name" "$python" "$here/torch_graphs.py" --task "$name" --epochs "$epochs" --mode "$mode" \
            --device "$device" --data "$data" --json-out "$out/torch-$mode-$name.json"
    done
done
wall bench "$bin" bench --backend gpu --profile --json "$out/bench.json" "${bench_args[@]}"
"$python" "$here/gpu_summary.py" "$out"
