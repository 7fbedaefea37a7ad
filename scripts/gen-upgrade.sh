#!/usr/bin/env bash
# Writes sql/iclear--0.1.0--0.2.0.sql from its parts, so that an upgrade
# creates exactly what a fresh install creates (the regions "results" and
# "since-0.1.0" are shared with sql/bootstrap.sql and sql/finalize.sql). --check: fail when the committed
# file is not what the parts make (run by `make lint`).
set -euo pipefail
cd "$(dirname "$0")/.."
region() { sed -n "/^-- BEGIN $2/,/^-- END $2/p" "$1"; }
make_script() {
    cat sql/upgrade/0.1.0--0.2.0.head.sql
    region sql/bootstrap.sql results
    cat sql/upgrade/0.1.0--0.2.0.move.sql
    region sql/finalize.sql since-0.1.0
}
out=sql/iclear--0.1.0--0.2.0.sql
if [ "${1:-}" = --check ]; then
    if ! diff -q <(make_script) "$out" >/dev/null; then
        echo "$out is stale: run scripts/gen-upgrade.sh" >&2
        exit 1
    fi
else
    make_script > "$out"
fi
