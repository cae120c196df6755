#!/usr/bin/env bash
# `make airflow-standalone`: Airflow on this machine with SQLite and the
# LocalExecutor - the components `airflow standalone` starts (API server and UI,
# scheduler, DAG processor, triggerer), started here so that their addresses are
# ours to choose: `airflow standalone` gives no way to keep the scheduler's and
# the triggerer's log servers off other interfaces. Tasks run on this host, so
# the API server reads their logs from $AIRFLOW_HOME/logs and no log server runs.
#   LISTEN_HOST   where the API server listens (default 127.0.0.1)
#   AIRFLOW_AUTH  on (default): log in as admin, password generated once into
#                 $AIRFLOW_HOME/passwords.json (root only); off: no login, 127.0.0.1 only
#   AIRFLOW_PORT  the API server's port (default 8080)
# Each component logs to $AIRFLOW_HOME/run/<component>.log. Ctrl-C (or TERM)
# stops every component; so does any one of them dying.
set -euo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"          # check_listen, generate_secrets, auth_env
: "${AIRFLOW_HOME:=$REPO_ROOT/.airflow}"
: "${AIRFLOW_PORT:=8080}"
: "${TRAINING_SLOTS:=2}"
check_listen airflow-standalone
generate_secrets "$AIRFLOW_HOME"
# shellcheck disable=SC1091
. "$AIRFLOW_HOME/secrets.env"
api="http://$(api_host_for_clients):$AIRFLOW_PORT"
export AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER="$REPO_ROOT/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__API__HOST="$LISTEN_HOST" AIRFLOW__API__PORT="$AIRFLOW_PORT" AIRFLOW__API__BASE_URL="$api"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$api/execution/"
export AIRFLOW__API_AUTH__JWT_SECRET="$JWT_SECRET" AIRFLOW__API__SECRET_KEY="$API_SECRET_KEY"
export AIRFLOW__CORE__FERNET_KEY="$FERNET_KEY"
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1   # if turned on; default 0.0.0.0
auth_env "$AIRFLOW_HOME/passwords.json"
export PATH="$VENV/bin:$PATH"

airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 \
    || { echo "airflow-standalone: airflow db migrate failed: $(tail -n 1 "$AIRFLOW_HOME/db-migrate.log")" >&2; exit 1; }
airflow pools set training "$TRAINING_SLOTS" "models that train at once" >/dev/null

pids=()
# shellcheck disable=SC2317  # called by stop
running() { for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && return 0; done; return 1; }
# shellcheck disable=SC2317  # called by the EXIT trap
stop() {   # TERM to every component; what still runs after 20 s is killed
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for _ in $(seq 20); do running || return 0; sleep 1; done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 130' INT TERM
mkdir -p "$AIRFLOW_HOME/run"
for component in api-server scheduler dag-processor triggerer; do
    args=()
    case $component in
        api-server) args=(--host "$LISTEN_HOST" --port "$AIRFLOW_PORT" --workers 1) ;;
        scheduler|triggerer) args=(--skip-serve-logs) ;;
    esac
    setsid airflow "$component" "${args[@]}" >"$AIRFLOW_HOME/run/$component.log" 2>&1 < /dev/null &
    pids+=($!)
    echo "$!" > "$AIRFLOW_HOME/run/$component.pid"
done
wait_for "API server" 120 curl -sf "$api/api/v2/monitor/health" \
    || { echo "airflow-standalone: see $AIRFLOW_HOME/run/api-server.log" >&2; exit 1; }
if [ "$AIRFLOW_AUTH" = on ]; then
    echo "airflow-standalone: UI $api - user admin, password: $AIRFLOW_HOME/passwords.json"
else
    echo "airflow-standalone: UI $api - no login (AIRFLOW_AUTH=off)"
fi
wait -n
echo "airflow-standalone: a component stopped (logs: $AIRFLOW_HOME/run/*.log); stopping the others" >&2
exit 1
