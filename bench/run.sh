#!/usr/bin/env bash
# make bench: pgbench on loopback, in one run, against one throwaway cluster:
#   plain      INSERT into a table with no trigger
#   attached   the same INSERT into a table attached to iclear (25 active rules,
#              a DNPL of 100,000 entries), default settings (configuration
#              cache on, iclear.trace = matched)
#   full       the same, with iclear.trace = full (trace every rule)
#   no cache   the same, with iclear.config_cache = off (every lead re-reads
#              the configuration tables)
# Rounds alternate the variants so that drift on a noisy machine hits all
# alike. Before them: VACUUM ANALYZE and CHECKPOINT after the bulk load, and
# an unrecorded warm-up of each table, so that no variant's first round pays
# for the setup (autovacuum, cold caches, the checkpoint after loading).
set -euo pipefail
cd "$(dirname "$0")/.."
export ICLEAR_CLUSTER=bench ICLEAR_PORT=${BENCH_PORT:-28816}
CLUSTER=scripts/cluster.sh
DB=iclear_bench
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-2}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

$CLUSTER start
$CLUSTER psql -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
$CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -f examples/payday_us.sql >/dev/null 2>&1
$CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -f bench/setup.sql >/dev/null
rules=$($CLUSTER psql -d $DB -At -c "SELECT count(*) FROM iclear.rule WHERE status = 'active'")
dnpl=$($CLUSTER psql -d $DB -At -c "SELECT max(n) FROM (SELECT count(*) n FROM iclear.list_entry GROUP BY list_id) s")

tps() { # table [PGOPTIONS]
    PGOPTIONS="${2:-}" $PGBENCH -n -h 127.0.0.1 -p "$ICLEAR_PORT" -U postgres -c "$CLIENTS" -j "$CLIENTS" \
        -T "$SECONDS_PER_RUN" -D table="$1" -f bench/insert.sql "$DB" 2>&1 | awk '/^tps/ {print $3; exit}'
}
$CLUSTER psql -d $DB -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
WARMUP=${BENCH_WARMUP:-5}
SECONDS_PER_RUN=$WARMUP tps leads_plain >/dev/null
SECONDS_PER_RUN=$WARMUP tps leads >/dev/null
results=""
for r in $(seq "$ROUNDS"); do
    for kind in plain attached full nocache; do
        case $kind in
            plain) t=$(tps leads_plain) ;;
            attached) t=$(tps leads) ;;
            full) t=$(tps leads "-c iclear.trace=full") ;;
            nocache) t=$(tps leads "-c iclear.config_cache=off") ;;
        esac
        echo "  round $r  $kind: $t tps"
        results="$results$kind $t"$'\n'
    done
done
statuses=$($CLUSTER psql -d $DB -At -F ' ' -c "SELECT string_agg(iclear_status || '=' || n, ', ') FROM (SELECT iclear_status, count(*) n FROM leads GROUP BY 1 ORDER BY 1) s")
printf '\niclear bench: %s active rules, DNPL of %s entries, %s clients x %s s x %s rounds, fsync on\n' \
    "$rules" "$dnpl" "$CLIENTS" "$SECONDS_PER_RUN" "$ROUNDS"
printf '%s' "$results" | awk '
    { sum[$1] += $2; n[$1]++ }
    END {
        p = sum["plain"] / n["plain"]; a = sum["attached"] / n["attached"]; c = sum["nocache"] / n["nocache"]
        m = sum["full"] / n["full"]
        printf "  plain INSERT               %8.0f tps\n", p
        printf "  attached INSERT (defaults) %8.0f tps   ratio %.2fx plain\n", a, a / p
        printf "  attached, trace=full       %8.0f tps   ratio %.2fx plain\n", m, m / p
        printf "  attached INSERT (no cache) %8.0f tps   ratio %.2fx plain; the cache is worth %.2fx\n", c, c / p, a / c
    }'
printf '  attached leads by status: %s\n' "$statuses"
$CLUSTER stop
