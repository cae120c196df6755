#!/usr/bin/env bash
# Screenshots of the cluster's Airflow UI for the docs, with headless Chromium
# (Debian's `chromium`): the grid view of the latest run with its task
# instances, and the details of the first two mapped trainings (the worker
# each ran on, and the DAG version: the git commit the run was pinned to).
# Usage: cluster/screenshot.sh [OUT_DIR]   (default docs/; needs `AIRFLOW_AUTH=off make cluster-up`)
set -euo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
out=$(cd "${1:-$REPO_ROOT/docs}" && pwd)
command -v chromium >/dev/null || { apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
airflow_env "$CLUSTER_DIR/airflow/admin"
run=$(airflow dags list-runs retrain -o plain 2>/dev/null | awk '$1 == "retrain" {print $2; exit}')
[ -n "$run" ] || { echo "screenshot: no run of retrain yet (make cluster-trigger)" >&2; exit 1; }
base="http://127.0.0.1:$API_PORT"
# Headless Chromium cannot log in: the UI must be the loopback-only one without a login.
if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v2/dags")" != 200 ]; then
    echo "screenshot: the UI asks for a login; start the cluster with AIRFLOW_AUTH=off make cluster-up" >&2
    exit 1
fi
shoot() {  # shoot URL FILE [HEIGHT]: render the page (a script-driven app: give it time)
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size="1500,${3:-900}" \
        --virtual-time-budget=20000 --screenshot="$2" "$1" 2>/dev/null
    echo "screenshot: $2 ($1)"
}
shoot "$base/dags/retrain/runs/$run" "$out/cluster-grid.png"
for index in 0 1; do
    shoot "$base/dags/retrain/runs/$run/tasks/train/mapped/$index/details" \
        "$out/cluster-train-$index.png" 1250
done
