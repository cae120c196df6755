#!/usr/bin/env bash
# One Celery worker standing in for a host of its own: run by up.sh under
# `unshare --mount --uts`, it gets its own hostname and sees none of the
# project checkout, the other worker's files, the database's files or /tmp.
# What it keeps: the Python environment (read-only) and its own folder.
# It reaches everything else over the network: PostgreSQL, Redis, the API
# server, the git remote and the S3 remote.
set -euo pipefail
name=$1
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
me="$CLUSTER_DIR/workers/$name"
index=0
for w in $WORKERS; do [ "$w" = "$name" ] && break; index=$((index + 1)); done
mkdir -p "$me/home" "$me/work"
# Workspaces of tasks that died with this worker's last life (supervise.sh starts it
# again): none runs yet. A training among them goes on from its state in the DVC remote.
leftover=$(cd "$me/work" && find . -mindepth 2 -maxdepth 2 ! -path "./dvc-cache/*" -printf "%P ")
[ -n "$leftover" ] && echo "worker.sh: $name removes the workspaces of its last life: $leftover"
find "$me/work" -mindepth 1 -maxdepth 1 ! -name dvc-cache -exec rm -rf {} +

airflow_env "$me/home"      # read the shared secrets while they are still visible
worker_env "$name"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((LOG_PORT_BASE + index))

hostname "$name"
mount --make-rprivate /
stage=$(mktemp -d /dev/shm/worker-stage.XXXXXX)
mount -t tmpfs tmpfs "$stage"
mkdir "$stage/venv" "$stage/me" "$stage/python"
mount --bind "$VENV" "$stage/venv"
mount --bind "$me" "$stage/me"
python_home=$(readlink -f "$VENV/bin/python" | xargs dirname | xargs dirname)
cd /
# Hide the checkout (and so .cluster with the other worker), the database
# files and the shared /tmp; then put back only what this worker owns.
for hidden in "$REPO_ROOT" "$CLUSTER_DIR" /var/lib/postgresql /tmp; do
    [ -d "$hidden" ] && mount -t tmpfs tmpfs "$hidden"
done
mkdir -p "$VENV" "$me"
mount --move "$stage/venv" "$VENV"
mount -o remount,bind,ro "$VENV"
mount --move "$stage/me" "$me"
[ -d "$python_home" ] || { echo "worker.sh: $python_home hidden" >&2; exit 1; }
cd "$me"
# The worker's log server: Airflow's own app (requests signed with the API's
# secret key), on 127.0.0.1 - Airflow's built-in one listens on every address.
uvicorn --factory airflow.utils.serve_logs.log_server:get_app --host 127.0.0.1 \
    --port "$AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT" --log-level warning &
exec airflow celery worker --skip-serve-logs --celery-hostname "$name@%h" \
    --concurrency "$WORKER_CONCURRENCY" --pid "$me/worker.pid"
