#!/usr/bin/env bash
# Orchestration overhead: the same commit and params run three ways, one after
# the other, each from a fresh clone of this repository:
#   plain    `dvc repro && dvc push` (what `make repro` does)
#   local    a triggered run on cluster/standalone.sh (what `make airflow-standalone`
#            starts: LocalExecutor, SQLite, pool 2)
#   cluster  a triggered run on `cluster/up.sh` (CeleryExecutor, PostgreSQL, Redis,
#            two isolated workers, git DAG bundle, S3 remote; started before the clock)
# and the cluster services' peak resident memory while its run goes on.
#
# Usage: bench/orchestration.sh [EPOCHS|tiny]   (default 2; tiny = the test fixture)
# Needs the venv (make setup), root for the cluster, and for real data the MNIST
# files (DATA_MIRROR_DIR or ../shared/data/mnist). Prints a Markdown table, with the
# load average before it starts: run it on an otherwise idle machine, then e.g.
# `bench/orchestration.sh tiny > reports/orchestration-bench-tiny.md`, cited from docs/airflow.md.
# Each clone runs its own code: PYTHONPATH names it, ahead of the venv's editable
# install of this checkout (the cluster's git bundle puts its own commit first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHAT=${1:-2}
WORK=$(mktemp -d /tmp/orchestration-bench.XXXX)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)   # other work on the machine skews every figure
export PATH="$ROOT/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2 GX_ANALYTICS_ENABLED=false
export DATA_MIRROR_DIR="${DATA_MIRROR_DIR:-$ROOT/../shared/data/mnist}" RETRAIN_SCHEDULE=none
[ "$WHAT" = tiny ] && unset DATA_MIRROR_DIR   # the fixture is its own mirror (params-tiny.yaml)

for name in plain local cluster; do
  git clone -q "$ROOT" "$WORK/$name"
  (cd "$WORK/$name"
   if [ "$WHAT" = tiny ]; then cp tests/fixtures/params-tiny.yaml params.yaml
   else sed -i "s/^  epochs: [0-9]* /  epochs: $WHAT /" params.yaml; fi
   dvc remote modify --local storage url "$WORK/$name-remote"
   git -c user.name=bench -c user.email=bench@localhost commit -q --allow-empty -am "bench: $WHAT")
done

wait_state() {  # wait_state: poll `airflow dags list-runs` until the run ends; print its state
  local state
  while :; do
    state=$(airflow dags list-runs retrain -o plain 2>/dev/null | awk '$1 == "retrain" {print $3; exit}')
    case "$state" in success|failed) echo "$state"; return ;; esac
    sleep 5
  done
}

# --- plain dvc repro -----------------------------------------------------------
start=$(date +%s)
(cd "$WORK/plain" && export PYTHONPATH="$WORK/plain" && dvc repro >"$WORK/plain.log" 2>&1 && dvc push -q)
plain=$(( $(date +%s) - start ))

# --- LocalExecutor (cluster/standalone.sh: what `airflow standalone` starts) -----
(export AIRFLOW_HOME="$WORK/airflow-home" AIRFLOW__CORE__LOAD_EXAMPLES=False \
        AIRFLOW__CORE__DAGS_FOLDER="$WORK/local/dags" PIPELINE_PROJECT_DIR="$WORK/local" \
        PYTHONPATH="$WORK/local"
 # Its own process group: everything it started must stop at the end.
 REPO_ROOT="$WORK/local" VENV="$ROOT/.venv" AIRFLOW_PORT=8093 \
     setsid bash "$ROOT/cluster/standalone.sh" >"$WORK/standalone.log" 2>&1 &
 standalone=$!
 trap 'kill -- -$standalone 2>/dev/null; sleep 3; kill -9 -- -$standalone 2>/dev/null || true' EXIT
 until grep -q "UI http" "$WORK/standalone.log"; do sleep 2; done
 until airflow dags list 2>/dev/null | grep -q retrain; do sleep 2; done
 airflow dags unpause retrain >/dev/null
 start=$(date +%s)
 airflow dags trigger retrain >/dev/null
 state=$(wait_state)
 echo "$(( $(date +%s) - start )) $state" > "$WORK/local.result")
read -r local local_state < "$WORK/local.result"

# --- the cluster -----------------------------------------------------------------
export CLUSTER_DIR="$WORK/cluster-state" PROJECT_REPO="$WORK/cluster" CLUSTER_NAME=rnn-mnist-bench \
       PG_PORT=5437 REDIS_PORT=6387 API_PORT=8087 S3_PORT=9007 GIT_PORT=9427 LOG_PORT_BASE=8797 \
       MOTO_VENV="$ROOT/.cluster/moto-venv"
trap 'bash "$ROOT/cluster/down.sh" >/dev/null 2>&1; PURGE=1 bash "$ROOT/cluster/down.sh" >/dev/null 2>&1' EXIT
bash "$ROOT/cluster/up.sh" >"$WORK/cluster-up.log" 2>&1
. "$ROOT/cluster/env.sh"
airflow_env "$CLUSTER_DIR/airflow/admin"
# Peak resident memory of each service (its whole process tree, tasks excluded
# for the workers: their training processes are the pipeline, not the service).
sample() {
  while :; do
    for name in api-server scheduler dag-processor redis s3 git-daemon worker-a worker-b; do
      pid=$(cat "$CLUSTER_DIR/run/$name.pid" 2>/dev/null) || continue
      rss=$(ps -o rss= --ppid "$pid" -p "$pid" 2>/dev/null | awk '{s += $1} END {print s + 0}')
      echo "$name $rss"
    done
    echo "postgresql $(ps -u postgres -o rss= | awk '{s += $1} END {print s + 0}')"
    sleep 2
  done
}
sample > "$WORK/memory.log" &
sampler=$!
start=$(date +%s)
bash "$ROOT/cluster/trigger.sh" >/dev/null 2>&1
cluster_state=$(wait_state)
cluster=$(( $(date +%s) - start ))
kill "$sampler"
hosts=$(PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p "$PG_PORT" -U airflow -d airflow -qAt -c \
  "select string_agg(distinct hostname, ', ') from task_instance" 2>/dev/null || echo "?")

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "## Orchestration on $(nproc) cores of $cpu, params: $WHAT ($(date -u +%F))"
echo
echo "Commit $(git -C "$ROOT" rev-parse --short HEAD); load average before the first run: $LOAD."
echo
echo "| variant | wall time | state |"
echo "|---|---|---|"
echo "| plain \`dvc repro && dvc push\` | ${plain} s | success |"
echo "| LocalExecutor (\`cluster/standalone.sh\`) | ${local} s | $local_state |"
echo "| CeleryExecutor cluster, 2 isolated workers ($hosts) | ${cluster} s | $cluster_state |"
echo
echo "Peak resident memory of the cluster's services during its run:"
echo
echo "| service | peak RSS |"
echo "|---|---|"
awk '{ if ($2 > peak[$1]) peak[$1] = $2 } END { for (s in peak) printf "| %s | %.0f MiB |\n", s, peak[s] / 1024 }' \
  "$WORK/memory.log" | sort
echo
echo "work dir: $WORK"
