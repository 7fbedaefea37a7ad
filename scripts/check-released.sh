#!/usr/bin/env bash
# Released scripts are frozen: each must hash as recorded in
# sql/released.sha256 (run by `make lint`). The hash is of what PostgreSQL
# runs: CREATE and ALTER EXTENSION drop a script's `\echo` lines (the psql
# guard), so the guard is the one line a released script may gain.
#   scripts/check-released.sh           check every recorded script
#   scripts/check-released.sh --record F...  record scripts at a release
set -euo pipefail
cd "$(dirname "$0")/.."
executed() { sed '/^\\echo/d' "$1" | sha256sum | cut -d' ' -f1; }
if [ "${1:-}" = --record ]; then
    shift
    for f in "$@"; do echo "$(executed "$f")  $f"; done >> sql/released.sha256
    exit 0
fi
status=0
while read -r sum file; do
    if [ "$(executed "$file")" != "$sum" ]; then
        echo "$file was edited after its release (sql/released.sha256): write a new upgrade script instead" >&2
        status=1
    fi
done < sql/released.sha256
exit $status
