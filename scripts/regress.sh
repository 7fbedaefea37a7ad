#!/usr/bin/env bash
# Golden SQL tests (tests/pg_regress/sql, one file per feature after a shared
# setup) with pg_regress on a temporary instance with iclear preloaded; run
# as postgres (Postgres refuses root). Expected outputs are in
# tests/pg_regress/expected.
set -euo pipefail
cd "$(dirname "$0")/.."
PGXS=$(dirname "$(pg_config --pgxs)")/..
REGRESS=$PGXS/test/regress/pg_regress
OUT=$(mktemp -d /tmp/iclear-regress.XXXXXX)
cp -r tests/pg_regress/. "$OUT/"
chown -R postgres "$OUT" 2>/dev/null || true
run() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
if ! run "$REGRESS" --temp-instance="$OUT/instance" --temp-config="$OUT/iclear.conf" \
        --bindir="$(pg_config --bindir)" --inputdir="$OUT" --outputdir="$OUT" \
        --schedule="$OUT/schedule"; then
    cat "$OUT/regression.diffs" 2>/dev/null || true
    echo "regress: results kept in $OUT/results" >&2
    exit 1
fi
rm -rf "$OUT"
