#!/usr/bin/env bash
# supervise.sh NAME CMD...: keep one component of the one-machine cluster running.
# It does what systemd's `Restart=always` (RestartSec=RESTART_DELAY_S) or a
# Kubernetes Deployment does on real hosts: run CMD and, whenever it dies (a
# crash, `kill -9`, a lost database), start it again RESTART_DELAY_S later. up.sh
# starts the API server, scheduler, DAG processor, both workers, Redis and the git
# daemon under it. TERM (make cluster-down) stops CMD and then the supervisor.
# run/NAME.child holds CMD's pid; every start and death is logged to NAME's log
# and to logs/supervise.log.
set -uo pipefail
name=$1; shift
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
note() { echo "$(date -u +%FT%TZ) supervise: $name $*" | tee -a "$CLUSTER_DIR/logs/supervise.log"; }
child="" stopping=""
trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
life=0
while [ -z "$stopping" ]; do
    life=$((life + 1))
    "$@" &
    child=$!
    echo "$child" > "$CLUSTER_DIR/run/$name.child"
    note "started (pid $child, life $life)"
    wait "$child"
    status=$?
    [ -n "$stopping" ] && break
    note "died (exit $status); starting it again in ${RESTART_DELAY_S}s"
    sleep "$RESTART_DELAY_S" &
    wait $!
done
wait "$child" 2>/dev/null
rm -f "$CLUSTER_DIR/run/$name.child"
