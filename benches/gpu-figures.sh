#!/usr/bin/env bash
# The GPU figures of the speed comparison, on a machine with a GPU (and PyTorch with CUDA in its
# Python, for the same-card comparison): wall time of the report's Warwick run (250 epochs) and
# MLP run (25 epochs) on gpu-train, twice each (the first run also fills the driver's shader
# cache), the same runs on PyTorch eager on the same card, then `gpu-train bench` (GFLOP/s, the
# fraction of the card's f32 peak, step times) as JSON. Everything lands in OUT_DIR; the wall
# times in OUT_DIR/walls.txt.
#
#   benches/gpu-figures.sh OUT_DIR
#
# Environment: GPU_TRAIN_BIN (default target/release/gpu-train), GPU_TRAIN_DATA (the data root,
# default ./data), PEERS (the folder of torch_ref.py, default ../shared/peers), PYTHON (default
# python3), WARWICK_EPOCHS and MLP_EPOCHS (defaults 250 and 25: fewer for a quick check).
set -uo pipefail

out=${1:?usage: benches/gpu-figures.sh OUT_DIR}
bin=${GPU_TRAIN_BIN:-target/release/gpu-train}
data=${GPU_TRAIN_DATA:-data}
peers=${PEERS:-../shared/peers}
python=${PYTHON:-python3}
warwick_epochs=${WARWICK_EPOCHS:-250}
mlp_epochs=${MLP_EPOCHS:-25}
mkdir -p "$out"

# Runs a command with its output in OUT_DIR/NAME.log and appends its wall time to walls.txt.
wall() {
    local name=$1 start end status
    shift
    start=$(date +%s%N)
    "$@" >"$out/$name.log" 2>&1
    status=$?
    end=$(date +%s%N)
    printf '%-16s %8.2f s  exit %d\n' "$name" "$(((end - start) / 1000000))e-3" "$status" | tee -a "$out/walls.txt"
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$out/card.txt" 2>&1 || true
for i in 1 2; do
    wall "warwick-$i" "$bin" --task warwick --epochs "$warwick_epochs" --backend gpu --data "$data" \
        --out "$out/run-warwick-$i"
    wall "mlp-$i" "$bin" --task mnist-mlp --epochs "$mlp_epochs" --backend gpu --data "$data" --out "$out/run-mlp-$i"
done
wall torch-warwick "$python" "$peers/torch_ref.py" --task warwick --epochs "$warwick_epochs" \
    --data "$data/warwick" --device cuda
wall torch-mlp "$python" "$peers/torch_ref.py" --task mnist-mlp --epochs "$mlp_epochs" --data "$data/mnist" \
    --device cuda
wall bench "$bin" bench --backend gpu --json "$out/bench.json"
