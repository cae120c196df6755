#!/usr/bin/env bash
# `make cluster-trigger [ARGS]`: push this checkout's HEAD to the cluster's git
# remote, wait until the DAG processor has parsed that very commit (a DAG
# version with that bundle version), then start one run of it. Unpausing starts
# no run of its own (the DAG's first scheduled run is the next one to come).
# ARGS go to `airflow dags trigger` (e.g. --run-id NAME).
set -euo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
head=$(git -C "$PROJECT_REPO" rev-parse HEAD)
git -C "$PROJECT_REPO" push -q --force "$CLUSTER_DIR/git/$GIT_REPO_NAME" HEAD:refs/heads/main
airflow_env "$CLUSTER_DIR/airflow/admin"
parsed() {
    PGPASSFILE="$CLUSTER_DIR/pgpass" psql -h 127.0.0.1 -p "$PG_PORT" -U airflow -d airflow -qAtc \
        "SELECT 1 FROM dag_version WHERE dag_id = 'retrain' AND bundle_version = '$head'" | grep -q 1
}
WAIT_HINT="see $CLUSTER_DIR/logs/dag-processor.log"
wait_for "commit ${head:0:10} in the DAG processor" 240 parsed
airflow dags unpause retrain >/dev/null
airflow dags trigger retrain "$@"
