#!/usr/bin/env bash
# Isolation specs (tests/isolation/specs) with pg_isolation_regress on a
# temporary instance with iclear preloaded; run as postgres (Postgres
# refuses root). Expected outputs are in tests/isolation/expected.
set -euo pipefail
cd "$(dirname "$0")/.."
PGXS=$(dirname "$(pg_config --pgxs)")/..
ISO=$PGXS/test/isolation/pg_isolation_regress
OUT=$(mktemp -d /tmp/iclear-isolation.XXXXXX)
cp -r tests/isolation/. "$OUT/"
chown -R postgres "$OUT" 2>/dev/null || true
run() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
if ! run "$ISO" --temp-instance="$OUT/instance" --temp-config="$OUT/iclear.conf" \
        --bindir="$(pg_config --bindir)" --inputdir="$OUT" --outputdir="$OUT" \
        --schedule="$OUT/schedule"; then
    cat "$OUT/regression.diffs" 2>/dev/null || true
    echo "isolation: results kept in $OUT/results" >&2
    exit 1
fi
rm -rf "$OUT"
