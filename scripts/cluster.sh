#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the demo and the benchmark: run as the
# postgres user, loopback only, its own port, data under target/, iclear
# preloaded. Usage: cluster.sh start|stop|psql [args]|url
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=${ICLEAR_CLUSTER:-demo}
PGDATA=${PGDATA_DIR:-$ROOT/target/pg/$NAME}
PORT=${ICLEAR_PORT:-28815}
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi; }

case "${1:-}" in
start)
    if as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then exit 0; fi
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        mkdir -p "$PGDATA"
        chown postgres "$PGDATA" 2>/dev/null || sudo chown postgres "$PGDATA"
        chmod 700 "$PGDATA" 2>/dev/null || sudo chmod 700 "$PGDATA"
        # postgres must be able to reach its data directory
        if ! as_pg test -w "$PGDATA"; then
            echo "cluster: the postgres user cannot write $PGDATA; set PGDATA_DIR" >&2; exit 1
        fi
        as_pg "$BIN/initdb" --no-sync -D "$PGDATA" -U postgres --auth=trust --locale=C.UTF-8 >/dev/null
        cat <<CONF | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '/tmp'
shared_preload_libraries = 'iclear'
max_connections = 50
shared_buffers = 256MB
CONF
    fi
    # the sandbox provider answers on loopback: the egress policy must list it
    if ! as_pg grep -q '^iclear.allowed_endpoints' "$PGDATA/postgresql.conf"; then
        echo "iclear.allowed_endpoints = '127.0.0.1'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
    fi
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w start >/dev/null
    ;;
stop)
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    ;;
psql)
    shift
    exec "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres "$@"
    ;;
url)
    echo "postgresql://postgres@127.0.0.1:$PORT"
    ;;
*)
    echo "usage: $0 start|stop|psql|url" >&2; exit 2
    ;;
esac
