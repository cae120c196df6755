#!/usr/bin/env bash
# The bench and a one-epoch training of every model on a GPU. Run where
# TensorFlow sees a GPU, after `make setup` and `dvc repro split`; it needs
# TensorFlow's CUDA libraries (`pip install 'tensorflow[and-cuda]==2.21.0'`,
# the pinned version). Writes OUT_DIR (default reports/gpu/): gpu.csv (what
# nvidia-smi names), kernels.txt (what `auto` chose for each model: Keras'
# cuDNN layers on the GPU), bench-train.{md,json} (bench/train_speed.py) and
# one-epoch.json (each model's one-epoch training: wall time, best validation
# accuracy, as a DVC experiment that is not kept in the workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-reports/gpu}
mkdir -p "$out"
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" \
    || { echo "gpu.sh: nvidia-smi failed: no GPU on this machine" >&2; exit 1; }
python -c 'import sys, tensorflow as tf; sys.exit(not tf.config.list_physical_devices("GPU"))' \
    || { echo "gpu.sh: TensorFlow sees no GPU (install tensorflow[and-cuda], see above)" >&2; exit 1; }
rnn-kernels | tee "$out/kernels.txt"
grep -q "on GPU" "$out/kernels.txt" || { echo "gpu.sh: auto did not choose the GPU" >&2; exit 1; }
python bench/train_speed.py --no-torch --out "$out/bench-train"
dvc exp run --temp -n gpu-one-epoch -S train.epochs=1 evaluate
dvc exp show --json > "$out/one-epoch.json"
echo "gpu.sh: results in $out/"
