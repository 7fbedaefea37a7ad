#!/usr/bin/env bash
# PostgreSQL's own test drivers on a temporary instance with iclear
# preloaded, run as postgres (Postgres refuses root):
#   scripts/pg-tests.sh regress     golden SQL tests: tests/pg_regress/sql, one
#                                   file per feature after a shared setup
#   scripts/pg-tests.sh isolation   isolation specs: tests/isolation/specs
# Expected outputs are in tests/<dir>/expected; on a difference the results
# directory is kept and named.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    regress) DIR=tests/pg_regress DRIVER=test/regress/pg_regress ;;
    isolation) DIR=tests/isolation DRIVER=test/isolation/pg_isolation_regress ;;
    *) echo "usage: $0 regress|isolation" >&2; exit 2 ;;
esac
PGXS=$(dirname "$(pg_config --pgxs)")/..
# the golden tests of services run against the sandbox provider on a fixed
# loopback port (tests/pg_regress/sql/services.sql names it)
SANDBOX=${ICLEAR_SANDBOX_BIN:-target/debug/iclear-sandbox}
if [ "$1" = regress ]; then
    "$SANDBOX" 127.0.0.1:28819 >/dev/null 2>&1 &
    SANDBOX_PID=$!
    trap 'kill $SANDBOX_PID 2>/dev/null || true' EXIT
fi
OUT=$(mktemp -d "/tmp/iclear-$1.XXXXXX")
cp -r "$DIR/." "$OUT/"
chown -R postgres "$OUT" 2>/dev/null || true
run() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
if ! run "$PGXS/$DRIVER" --temp-instance="$OUT/instance" --temp-config="$OUT/iclear.conf" \
        --bindir="$(pg_config --bindir)" --inputdir="$OUT" --outputdir="$OUT" \
        --schedule="$OUT/schedule"; then
    cat "$OUT/regression.diffs" 2>/dev/null || true
    echo "$1: results kept in $OUT/results" >&2
    exit 1
fi
rm -rf "$OUT"
