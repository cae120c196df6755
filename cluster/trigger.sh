#!/usr/bin/env bash
# `make cluster-trigger`: push this checkout's HEAD to the cluster's git remote,
# wait until the DAG processor has parsed it, unpause the DAG and start a run.
set -euo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
git -C "$PROJECT_REPO" push -q --force "$CLUSTER_DIR/git/$GIT_REPO_NAME" HEAD:refs/heads/main
airflow_env "$CLUSTER_DIR/airflow/admin"
wait_for "the DAG retrain" 180 bash -c 'airflow dags list -o plain 2>/dev/null | grep -q "^retrain"'
airflow dags unpause retrain >/dev/null
airflow dags trigger retrain "$@"
