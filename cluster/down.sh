#!/usr/bin/env bash
# `make cluster-down`: stop every process of the cluster (TERM to each process
# group, supervise.sh's included, then KILL 3 s later). PURGE=1 also drops
# its PostgreSQL cluster and its state (git remote, logs, workers' files; the
# S3 data lives in the S3 server's memory and goes with it).
set -uo pipefail
# shellcheck source=cluster/env.sh
. "$(dirname "$0")/env.sh"
for pidfile in "$CLUSTER_DIR"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
done
sleep 3
for pidfile in "$CLUSTER_DIR"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null
    rm -f "$pidfile"
done
rm -f "$CLUSTER_DIR"/run/*.child   # supervise.sh's children: gone with their process groups
if [ -n "$PG_VERSION" ] && pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx "$CLUSTER_NAME"; then
    if [ "${PURGE:-0}" = 1 ]; then
        pg_dropcluster --stop "$PG_VERSION" "$CLUSTER_NAME"
    else
        pg_ctlcluster "$PG_VERSION" "$CLUSTER_NAME" stop 2>/dev/null
    fi
fi
if [ "${PURGE:-0}" = 1 ]; then   # the S3 server's environment stays: it is only software
    find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 ! -name moto-venv -exec rm -rf {} +
fi
echo "cluster: down${PURGE:+ (purged)}"
