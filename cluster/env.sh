# shellcheck shell=bash
# Settings of the one-machine cluster (sourced by up.sh, down.sh, worker.sh and
# trigger.sh). Every value can be overridden from the environment; tests give
# the cluster a folder and ports of its own so it never meets a user's.
#
# What stands for what on a real cluster (docs/airflow.md, "On a cluster"):
#   PostgreSQL (Debian's)  - Airflow's metadata database
#   Redis (Debian's)       - the Celery broker
#   git daemon             - the git remote: code in (DAG bundle), run records out
#   moto server            - the S3-protocol DVC remote
#   worker-a, worker-b     - two Celery workers, each in its own mount and UTS
#                            namespace: own hostname, own files, no shared disk

: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${PROJECT_REPO:=$REPO_ROOT}"                # whose HEAD becomes main on the git remote
: "${CLUSTER_DIR:=$REPO_ROOT/.cluster}"        # state: logs, pid files, homes, the git remote
: "${CLUSTER_NAME:=rnn-mnist}"                 # PostgreSQL cluster name (pg_lsclusters)
: "${PG_PORT:=5433}"
: "${REDIS_PORT:=6380}"
: "${API_PORT:=8081}"
: "${S3_PORT:=9000}"                           # the moto server
: "${S3_ENDPOINT:=http://127.0.0.1:$S3_PORT}"  # what workers use (a test may put a proxy here)
: "${GIT_PORT:=9418}"
GIT_REPO_NAME=rnn-mnist.git
: "${GIT_ENDPOINT:=git://127.0.0.1:$GIT_PORT/$GIT_REPO_NAME}"  # what Airflow and tasks use (a test may put a relay here)
# Who may reach the API server and UI: 127.0.0.1 unless asked for another address.
# Every other server (PostgreSQL, Redis, git daemon, S3 server, log servers) serves
# only this machine's processes and always listens on 127.0.0.1.
: "${LISTEN_HOST:=127.0.0.1}"
: "${AIRFLOW_AUTH:=on}"      # on: log in as admin, password generated per cluster; off: no login
: "${LOG_PORT_BASE:=8793}"                     # worker-a serves its logs here, worker-b +1
: "${WORKERS:=worker-a worker-b}"
: "${WORKER_CONCURRENCY:=1}"                   # task slots per worker: one training each
: "${TRAINING_SLOTS:=2}"                       # the `training` pool: workers x concurrency
: "${RETRAIN_SCHEDULE:=@weekly}"
# A task whose worker died is failed by the scheduler HEARTBEAT_TIMEOUT_S after its last
# heartbeat (it looks every HEARTBEAT_CHECK_S) and retried RETRAIN_RETRY_DELAY_S to twice
# that later (Airflow's back-off draws between 1x and 2x the base; x2 each try): with
# start-up, the next try starts within 20 + 10 + 2 x 10 + 20 = 70 s of the death
# (docs/airflow.md, "A worker that dies"; tests/test_cluster.py asserts it).
: "${HEARTBEAT_TIMEOUT_S:=20}"
: "${HEARTBEAT_CHECK_S:=10}"
: "${RETRAIN_RETRY_DELAY_S:=10}"
: "${RESTART_DELAY_S:=5}"                      # a dead component is started again this much later (supervise.sh)
: "${TOKEN_LIFETIME_S:=86400}"                 # execution API token: outlives a long training
: "${RETRAIN_TRAIN_TIMEOUT_MIN:=360}"           # the longest a training may run (the DAG's timeout)
# Celery acknowledges a task when it ends (acks late) and Redis hands an
# unacknowledged task to another worker after the visibility timeout: it must
# outlast the longest training plus START_MARGIN_S for a task's start-up, or
# Redis would hand a running training out again (up.sh refuses less).
: "${VISIBILITY_TIMEOUT_S:=86400}"
: "${START_MARGIN_S:=600}"
: "${VENV:=$REPO_ROOT/.venv}"
: "${MOTO_VENV:=$CLUSTER_DIR/moto-venv}"
S3_BUCKET=rnn-mnist

export REPO_ROOT CLUSTER_DIR VENV
PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | sort -n | tail -1)
export PG_VERSION

# Secrets generated once per cluster (generate_secrets), never in git: every
# component must agree on them.
secrets_file="$CLUSTER_DIR/secrets.env"
passwords_file="$CLUSTER_DIR/passwords.json"   # the UI's users (Airflow's simple auth manager)

is_loopback() { case "$1" in 127.*|::1|"[::1]"|localhost) return 0 ;; *) return 1 ;; esac; }

check_listen() {
    # check_listen WHO: refuse, in one line, an address beyond loopback without a login.
    case "$AIRFLOW_AUTH" in
        on|off) ;;
        *) echo "$1: AIRFLOW_AUTH must be on or off, not '$AIRFLOW_AUTH'" >&2; exit 2 ;;
    esac
    if [ "$AIRFLOW_AUTH" = off ] && ! is_loopback "$LISTEN_HOST"; then
        echo "$1: refusing LISTEN_HOST=$LISTEN_HOST with AIRFLOW_AUTH=off: anyone who reaches it would be admin (AIRFLOW_AUTH=off is for 127.0.0.1 only)" >&2
        exit 2
    fi
}

api_host_for_clients() {
    # Where this machine's own processes reach the API server.
    case "$LISTEN_HOST" in 0.0.0.0|::|"[::]") echo 127.0.0.1 ;; *) is_loopback "$LISTEN_HOST" && echo 127.0.0.1 || echo "$LISTEN_HOST" ;; esac
}

generate_secrets() {
    # generate_secrets FOLDER: the JWT secret, Fernet key, log-server key, the database's,
    # Redis' and the S3 server's credentials and the admin's password, once; readable by
    # root only. A secret a folder lacks (made by an older version) is added.
    local folder=$1
    mkdir -p "$folder"
    (umask 077; "$VENV/bin/python" - "$folder" <<'PY'
import json, secrets, sys
from pathlib import Path
from cryptography.fernet import Fernet
folder = Path(sys.argv[1])
token = lambda: secrets.token_urlsafe(32)
wanted = {"JWT_SECRET": token, "FERNET_KEY": lambda: Fernet.generate_key().decode(),
          "API_SECRET_KEY": token, "PG_PASSWORD": lambda: secrets.token_hex(16),
          "REDIS_PASSWORD": lambda: secrets.token_hex(16),
          "S3_ACCESS_KEY": lambda: "AK" + secrets.token_hex(8).upper(),
          "S3_SECRET_KEY": lambda: secrets.token_hex(20)}
env = folder / "secrets.env"
have = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line) \
    if env.exists() else {}
if set(wanted) - set(have):
    env.write_text("".join(f"{k}={have.get(k) or make()}\n" for k, make in wanted.items()))
if not (folder / "passwords.json").exists():
    (folder / "passwords.json").write_text(json.dumps({"admin": token()}) + "\n")
PY
    )
}

auth_env() {
    # auth_env PASSWORDS_FILE: the API server's login (Airflow's simple auth manager).
    if [ "$AIRFLOW_AUTH" = off ]; then
        export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True   # no login, loopback only
    else
        export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False
        export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
        export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$1"
    fi
}

airflow_env() {
    # The environment every Airflow component shares; $1 = the component's home.
    # shellcheck disable=SC1090
    [ -f "$secrets_file" ] && . "$secrets_file"
    local pg="airflow:${PG_PASSWORD:-}@127.0.0.1:$PG_PORT/airflow" api
    api="http://$(api_host_for_clients):$API_PORT"
    export AIRFLOW_HOME="$1"
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$pg"
    export AIRFLOW__CELERY__BROKER_URL="redis://:${REDIS_PASSWORD:-}@127.0.0.1:$REDIS_PORT/0"
    export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$pg"
    export AIRFLOW__CELERY__TASK_ACKS_LATE=True           # a dead worker's task is not lost
    export AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER=1  # a worker holds only what it runs
    export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="$VISIBILITY_TIMEOUT_S"
    export AIRFLOW__CORE__LOAD_EXAMPLES=False
    export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$api/execution/"
    export AIRFLOW__API__BASE_URL="$api"
    export AIRFLOW__API__HOST="$LISTEN_HOST"
    export AIRFLOW__API_AUTH__JWT_SECRET="${JWT_SECRET:-}"
    export AIRFLOW__API__SECRET_KEY="${API_SECRET_KEY:-}"   # signs the requests for task logs
    export AIRFLOW__CORE__FERNET_KEY="${FERNET_KEY:-}"
    export AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME="$TOKEN_LIFETIME_S"
    export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="$HEARTBEAT_TIMEOUT_S"
    export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="$HEARTBEAT_CHECK_S"
    export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1   # default 0.0.0.0
    export AIRFLOW__CORE__HOSTNAME_CALLABLE=socket.gethostname   # the worker's own name
    auth_env "$passwords_file"
    export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$LOG_PORT_BASE"
    export AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH="$1/dag-bundles"
    # The code comes from git, one commit per run (DAG versioning). The bundle is the
    # whole repository, not dags/: Airflow puts the bundle's root on sys.path, so a task
    # imports the `pipeline` package of its own run's commit (.airflowignore keeps the
    # DAG processor to dags/).
    export AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[{"name": "rnn-mnist",
      "classpath": "airflow.providers.git.bundles.git.GitDagBundle",
      "kwargs": {"git_conn_id": "rnn_mnist_git", "tracking_ref": "main",
                 "refresh_interval": 10}}]'
    export AIRFLOW_CONN_RNN_MNIST_GIT="{\"conn_type\": \"git\", \"host\": \"$GIT_ENDPOINT\"}"
    export RETRAIN_SCHEDULE RETRAIN_TRAIN_TIMEOUT_MIN RETRAIN_RETRY_DELAY_S
    export GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TF_CPP_MIN_LOG_LEVEL=2
    export PATH="$VENV/bin:$PATH"
}

worker_env() {
    # What a worker adds: its DVC remote (S3 protocol) and its own work folder; $1 = name.
    export PIPELINE_WORK_DIR="$CLUSTER_DIR/workers/$1/work"
    export PIPELINE_DVC_REMOTE_URL="s3://$S3_BUCKET/dvc"
    export PIPELINE_DVC_REMOTE_ENDPOINTURL="$S3_ENDPOINT"
    export AWS_ACCESS_KEY_ID="${S3_ACCESS_KEY:-}" AWS_SECRET_ACCESS_KEY="${S3_SECRET_KEY:-}"
    export AWS_DEFAULT_REGION=us-east-1
    # The dataset's mirror stands for the public internet, which every host reaches.
    [ -n "${DATA_MIRROR_DIR:-}" ] && export DATA_MIRROR_DIR
    return 0
}

start_daemon() {
    # start_daemon NAME CMD...: run CMD in its own session, log and pid in $CLUSTER_DIR.
    local name=$1; shift
    mkdir -p "$CLUSTER_DIR/logs" "$CLUSTER_DIR/run"
    setsid "$@" >"$CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$CLUSTER_DIR/run/$name.pid"
}

supervise() {
    # supervise NAME CMD...: start_daemon under cluster/supervise.sh, which starts CMD
    # again RESTART_DELAY_S after it dies (run/NAME.pid: the supervisor; run/NAME.child: CMD).
    local name=$1; shift
    start_daemon "$name" bash "$REPO_ROOT/cluster/supervise.sh" "$name" "$@"
}

wait_for() {
    # wait_for WHAT SECONDS CMD...: retry CMD until it succeeds or the time is up.
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$what did not come up in ${seconds}s${WAIT_HINT:+; $WAIT_HINT}" >&2
            return 1
        fi
        sleep 1
    done
}
