#!/usr/bin/env bash
# Screenshots of the cluster's Airflow UI for the docs, with headless Chromium
# (Debian's `chromium`): the DAG's grid view of the latest run, and the list of
# its mapped trainings with the worker each ran on.
# Usage: cluster/screenshot.sh [OUT_DIR]   (default docs/; needs `make cluster-up`)
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
shoot() {  # shoot URL FILE: render the page (the UI is a script-driven app: give it time)
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1500,900 \
        --virtual-time-budget=20000 --screenshot="$2" "$1" 2>/dev/null
    echo "screenshot: $2 ($1)"
}
shoot "$base/dags/retrain/runs/$run" "$out/cluster-grid.png"
shoot "$base/dags/retrain/runs/$run/tasks/train/mapped" "$out/cluster-trainings.png"
