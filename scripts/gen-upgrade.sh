#!/usr/bin/env bash
# Writes the latest upgrade script, sql/iclear--0.5.0--0.6.0.sql, from its
# head and the "since-0.5.0" regions of sql/bootstrap.sql and sql/finalize.sql,
# so that an upgrade runs exactly what a fresh install runs for those objects.
# Older upgrade scripts (and the "since-0.2.0" regions they were made from)
# are frozen. --check: fail when the committed file is not what the parts
# make (run by `make lint`).
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=0.5.0 TO=0.6.0
region() { sed -n "/^-- BEGIN $2/,/^-- END $2/p" "$1"; }
make_script() {
    cat "sql/upgrade/$FROM--$TO.head.sql"
    region sql/bootstrap.sql "since-$FROM"
    echo
    region sql/finalize.sql "since-$FROM"
}
out="sql/iclear--$FROM--$TO.sql"
if [ "${1:-}" = --check ]; then
    if ! diff -q <(make_script) "$out" >/dev/null; then
        echo "$out is stale: run scripts/gen-upgrade.sh" >&2
        exit 1
    fi
else
    make_script > "$out"
fi
