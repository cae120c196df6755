#!/usr/bin/env bash
# Start-up cost of a stage: importing TensorFlow and Keras from a cold page cache
# (as after the machine dropped its file cache) and from a warm one, 3 times each.
# Explains stage wall time outside Keras' fit. Needs root to drop the page cache.
# Usage: sudo bench/startup.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
py="$root/.venv/bin/python"
grep -m1 "model name" /proc/cpuinfo
for kind in cold warm cold warm cold warm; do
  if [ "$kind" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  start=$(date +%s.%N)
  TF_CPP_MIN_LOG_LEVEL=3 "$py" -c "import tensorflow, keras" 2>/dev/null
  echo "$kind import: $(echo "$(date +%s.%N) - $start" | bc) s"
done
