#!/usr/bin/env bash
# `make cluster-up`: a real Airflow cluster on this machine, from Debian's and
# PyPI's packages only. Safe to run again: what is up stays up.
#   PostgreSQL  metadata DB        Redis        Celery broker
#   api-server, scheduler, dag-processor        (the DAG comes from git: GitDagBundle)
#   worker-a, worker-b  Celery workers, each isolated (cluster/worker.sh)
#   git daemon  the git remote     moto server  the S3-protocol DVC remote
# Each but PostgreSQL (Debian's pg_ctlcluster) and the S3 server (its data lives in
# memory) runs under cluster/supervise.sh, which starts it again when it dies.
# Stop it with `make cluster-down` (PURGE=1 also drops its database and state).
set -euo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
check_listen cluster
WAIT_HINT="see $CLUSTER_DIR/logs/"
longest=$((RETRAIN_TRAIN_TIMEOUT_MIN * 60 + START_MARGIN_S))
if [ "$VISIBILITY_TIMEOUT_S" -lt "$longest" ]; then
    echo "cluster: VISIBILITY_TIMEOUT_S=$VISIBILITY_TIMEOUT_S must be at least the training timeout plus START_MARGIN_S for its start-up ($((RETRAIN_TRAIN_TIMEOUT_MIN * 60)) + $START_MARGIN_S = $longest s), or Redis would hand a running training out again" >&2
    exit 2
fi
mkdir -p "$CLUSTER_DIR"/{logs,run,airflow,git,workers,redis}
generate_secrets "$CLUSTER_DIR"
# shellcheck disable=SC1090
. "$secrets_file"
export REDISCLI_AUTH="$REDIS_PASSWORD"   # redis-cli's password, never on a command line
# psql's password file (root only), for trigger.sh and by-hand queries
(umask 077; echo "127.0.0.1:$PG_PORT:airflow:airflow:$PG_PASSWORD" > "$CLUSTER_DIR/pgpass")

install_packages() {
    local missing=()
    command -v pg_createcluster >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v unshare >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "cluster: installing ${missing[*]} (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n | tail -1)
    fi
    if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
        echo "cluster: creating the S3 server's own environment ($MOTO_VENV)"
        python3.11 -m venv "$MOTO_VENV"
        "$MOTO_VENV/bin/pip" install -q -r "$REPO_ROOT/cluster/moto-requirements.txt" \
            >"$CLUSTER_DIR/logs/moto-install.log" 2>&1 \
            || { echo "cluster: pip failed, see $CLUSTER_DIR/logs/moto-install.log" >&2; exit 1; }
    fi
}

start_postgres() {
    if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$CLUSTER_NAME"; then
        pg_createcluster -p "$PG_PORT" "$PG_VERSION" "$CLUSTER_NAME" >/dev/null
    fi
    # Pinned, not left to the default ('localhost'), in a file its postgresql.conf includes.
    echo "listen_addresses = '127.0.0.1'" > "/etc/postgresql/$PG_VERSION/$CLUSTER_NAME/conf.d/listen.conf"
    pg_ctlcluster "$PG_VERSION" "$CLUSTER_NAME" start 2>/dev/null || true
    wait_for PostgreSQL 60 su postgres -c "psql -p $PG_PORT -qAtc 'select 1'"
    # The role's password is this cluster's generated one (secrets.env), set on every
    # start; it reaches psql on its input, never on a command line.
    { printf '\\set pw %s\n' "$PG_PASSWORD"; cat <<'SQL'; } | su postgres -c "psql -p $PG_PORT -qAt" >/dev/null
SELECT 'CREATE ROLE airflow LOGIN'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow')\gexec
ALTER ROLE airflow PASSWORD :'pw';
SELECT 'CREATE DATABASE airflow OWNER airflow'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow')\gexec
SQL
}

start_redis() {
    running redis || {
        # Persistence on (append-only file, fsync every second): queued tasks survive a
        # restart. The password is in the file (root only), not on the command line.
        (umask 077; cat > "$CLUSTER_DIR/redis/redis.conf" <<CONF
port $REDIS_PORT
bind 127.0.0.1
dir $CLUSTER_DIR/redis
appendonly yes
appendfsync everysec
requirepass $REDIS_PASSWORD
CONF
        )
        supervise redis redis-server "$CLUSTER_DIR/redis/redis.conf"
    }
    wait_for Redis 30 redis-cli -p "$REDIS_PORT" ping
}

start_git_remote() {
    local bare="$CLUSTER_DIR/git/$GIT_REPO_NAME"
    [ -d "$bare" ] || git init -q --bare -b main "$bare"
    git -C "$PROJECT_REPO" push -q --force "$bare" HEAD:refs/heads/main
    running git-daemon || supervise git-daemon git daemon --reuseaddr --export-all \
        --enable=receive-pack --listen=127.0.0.1 --port="$GIT_PORT" --base-path="$CLUSTER_DIR/git" \
        "$CLUSTER_DIR/git"
    wait_for "git daemon" 30 git ls-remote "git://127.0.0.1:$GIT_PORT/$GIT_REPO_NAME"
}

start_s3() {
    running s3 || start_daemon s3 "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
    wait_for "S3 server" 60 curl -sf "http://127.0.0.1:$S3_PORT/moto-api/"
    # The generated keys (secrets.env); moto's server accepts any, a real object store checks them.
    AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
        "$MOTO_VENV/bin/python" - "$S3_PORT" "$S3_BUCKET" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=sys.argv[2])
PY
}

running() { [ -f "$CLUSTER_DIR/run/$1.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/run/$1.pid")" 2>/dev/null; }

start_airflow() {
    (airflow_env "$CLUSTER_DIR/airflow/admin"
     airflow db migrate >"$CLUSTER_DIR/logs/db-migrate.log" 2>&1 \
         || { echo "cluster: airflow db migrate failed: $(tail -n 1 "$CLUSTER_DIR/logs/db-migrate.log")" >&2; exit 1; }
     airflow pools set training "$TRAINING_SLOTS" "models that train at once" >/dev/null)
    for component in api-server scheduler dag-processor; do
        running "$component" && continue
        local args=()
        [ "$component" = api-server ] && args=(--host "$LISTEN_HOST" --port "$API_PORT" --workers 1)
        [ "$component" = scheduler ] && args=(--skip-serve-logs)   # the workers serve task logs
        (airflow_env "$CLUSTER_DIR/airflow/$component"
         supervise "$component" airflow "$component" "${args[@]}")
    done
    wait_for "API server" 120 curl -sf "http://$(api_host_for_clients):$API_PORT/api/v2/monitor/health"
    for name in $WORKERS; do
        running "$name" || supervise "$name" unshare --mount --uts --fork \
            bash "$REPO_ROOT/cluster/worker.sh" "$name"
    done
    for name in $WORKERS; do
        wait_for "$name" 120 grep -q "ready" "$CLUSTER_DIR/logs/$name.log"
    done
}

install_packages
start_postgres
start_redis
start_git_remote
start_s3
start_airflow
if [ "$AIRFLOW_AUTH" = on ]; then
    login="user admin, password in $passwords_file"
else
    login="no login: AIRFLOW_AUTH=off"
fi
cat <<MSG
cluster: up. UI http://$LISTEN_HOST:$API_PORT ($login)
  metadata DB  postgresql://127.0.0.1:$PG_PORT/airflow   broker redis://127.0.0.1:$REDIS_PORT
  git remote   git://127.0.0.1:$GIT_PORT/$GIT_REPO_NAME (main = this checkout's HEAD)
  DVC remote   s3://$S3_BUCKET/dvc at $S3_ENDPOINT
  workers      $WORKERS (logs: $CLUSTER_DIR/logs/)
Run the DAG: make cluster-trigger    Stop: make cluster-down
MSG
