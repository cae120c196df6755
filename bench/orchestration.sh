#!/usr/bin/env bash
# Orchestration overhead on real MNIST: the same params run twice from fresh
# clones of this repository, once as plain `dvc repro && dvc push` (what
# `make repro` does) and once as a scheduled-style Airflow run (`airflow
# standalone`: scheduler + LocalExecutor on SQLite, pool `training` of 2, run
# started with `airflow dags trigger`, publish included).
#
# Usage: bench/orchestration.sh [EPOCHS]     (default 2; 20 = the default params)
# Needs the venv (make setup) and the MNIST files (DATA_MIRROR_DIR or ../shared/data/mnist).
# Prints one line per variant: wall time in seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${1:-2}
WORK=$(mktemp -d /tmp/orchestration-bench.XXXX)
export PATH="$ROOT/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2 GX_ANALYTICS_ENABLED=false
export DATA_MIRROR_DIR="${DATA_MIRROR_DIR:-$ROOT/../shared/data/mnist}"

for name in plain airflow; do
  git clone -q "$ROOT" "$WORK/$name"
  (cd "$WORK/$name"
   sed -i "s/^  epochs: [0-9]* /  epochs: $EPOCHS /" params.yaml
   dvc remote modify --local storage url "$WORK/$name-remote"
   git -c user.name=bench -c user.email=bench@localhost commit -q --allow-empty -am "bench: epochs=$EPOCHS")
done

start=$(date +%s)
(cd "$WORK/plain" && dvc repro >"$WORK/plain.log" 2>&1 && dvc push -q)
plain=$(( $(date +%s) - start ))

export AIRFLOW_HOME="$WORK/airflow-home" AIRFLOW__CORE__LOAD_EXAMPLES=False \
       AIRFLOW__CORE__DAGS_FOLDER="$WORK/airflow/dags" PIPELINE_PROJECT_DIR="$WORK/airflow" \
       AIRFLOW__API__PORT=8093 RETRAIN_SCHEDULE=none \
       AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:8093/execution/
airflow db migrate >/dev/null 2>&1
airflow pools set training 2 "models that train at once" >/dev/null
# Its own process group: standalone's scheduler, API server and workers must all
# stop at the end, or they keep serving the next benchmark's tasks.
setsid airflow standalone >"$WORK/standalone.log" 2>&1 &
standalone=$!
trap 'kill -- -$standalone 2>/dev/null; sleep 3; kill -9 -- -$standalone 2>/dev/null || true' EXIT
until airflow dags list 2>/dev/null | grep -q retrain; do sleep 2; done
airflow dags unpause retrain >/dev/null
start=$(date +%s)
airflow dags trigger retrain >/dev/null
while :; do
  state=$(airflow dags list-runs retrain -o plain 2>/dev/null | awk '$1 == "retrain" {print $3; exit}')
  case "$state" in success|failed) break ;; esac
  sleep 5
done
orchestrated=$(( $(date +%s) - start ))

echo "epochs=$EPOCHS plain dvc repro + push: ${plain} s"
echo "epochs=$EPOCHS airflow scheduled run (state $state): ${orchestrated} s"
grep -h "done in" "$WORK/plain.log" | sed 's/^/plain: /'
echo "work dir: $WORK"
