#!/usr/bin/env bash
# Where a lead's CPU goes with 8 clients (issue 30 item 6): `perf record` of
# the whole machine while pgbench sends single-lead INSERTs into the bench's
# attached table (`leads`, the bench configuration: 25 active rules, a DNPL
# of 100,000 entries), then the shares by process and library and the top
# symbols, in target/bench/profile.txt. Uses the bench cluster and database
# if `make bench` left them (BENCH_KEEP_CLUSTER=1), else sets them up with a
# one-round bench. PROFILE_TABLE (leads), PROFILE_CLIENTS (8),
# PROFILE_SECONDS (15).
set -euo pipefail
cd "$(dirname "$0")/.."
export ICLEAR_CLUSTER=bench ICLEAR_PORT=${BENCH_PORT:-28816}
TABLE=${PROFILE_TABLE:-leads}
CLIENTS=${PROFILE_CLIENTS:-8}
SECS=${PROFILE_SECONDS:-15}
OUT=target/bench
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "profile: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
scripts/cluster.sh start
has_db=$(scripts/cluster.sh psql -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = 'iclear_bench'")
if [ "$has_db" = 0 ]; then
    echo "profile: setting up the bench database (a one-round bench of the attached table)"
    BENCH_VARIANTS=attached BENCH_ROUNDS=1 BENCH_SECONDS=2 BENCH_WARMUP=1 BENCH_LOAD_CLIENTS=0 \
        BENCH_STMT_LEADS=10 BENCH_KEEP_CLUSTER=1 bench/run.sh >/dev/null
    scripts/cluster.sh start
fi
# warm: the first seconds of a table pay its caches
/usr/lib/postgresql/15/bin/pgbench -n -h 127.0.0.1 -p "$ICLEAR_PORT" -U postgres -c "$CLIENTS" -j "$CLIENTS" \
    -T 3 -D table="$TABLE" -f bench/insert.sql iclear_bench >/dev/null
/usr/lib/postgresql/15/bin/pgbench -n -h 127.0.0.1 -p "$ICLEAR_PORT" -U postgres -c "$CLIENTS" -j "$CLIENTS" \
    -T "$SECS" -D table="$TABLE" -f bench/insert.sql iclear_bench >"$OUT/profile-pgbench.log" 2>&1 &
bench=$!
sleep 1
perf record -a -F 999 -o "$OUT/perf.data" -- sleep $((SECS - 2)) 2>/dev/null
wait "$bench"
perf report -i "$OUT/perf.data" --stdio --no-children --sort comm,dso -q 2>/dev/null >"$OUT/profile-dso.txt"
perf report -i "$OUT/perf.data" --stdio --no-children --comm postgres --sort dso,sym -q 2>/dev/null >"$OUT/profile-sym.txt"
{
    printf 'profile: %s clients, %s s of single-lead INSERTs into %s (%s)\n\n' "$CLIENTS" "$SECS" "$TABLE" \
        "$(awk '/^tps/ {print $3 " tps"; exit}' "$OUT/profile-pgbench.log")"
    echo "== by process and library (share of all samples of the machine)"
    grep -v '^$' "$OUT/profile-dso.txt" | sed -n 1,20p
    echo
    echo "== postgres processes: top symbols"
    grep -v '^$' "$OUT/profile-sym.txt" | sed -n 1,50p
} >"$OUT/profile.txt"
cat "$OUT/profile.txt"
echo "profile: perf data in $OUT/perf.data (perf report -i $OUT/perf.data)"
