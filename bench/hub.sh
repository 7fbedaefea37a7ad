#!/usr/bin/env bash
# make bench-hub: a store's insert throughput as a hub member against a
# standalone database, the lag of a configuration change, and the lease
# refill of a shared global cap under 8 clients (docs/guide/hub.md).
# Two clusters on loopback (hub 28840, store 28841, wal_level logical); the
# store cluster holds the member database `member` and a standalone one,
# `alone`, with the same product (examples/payday_us.sql) and table. Rounds
# alternate the two. BENCH_SECONDS (15), BENCH_ROUNDS (2), BENCH_CLIENTS (8),
# BENCH_LEASE (iclear.cap_lease_size, 100).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CLUSTER=scripts/cluster.sh
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-8}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
OUT=target/bench-hub
SANDBOX_ADDR=127.0.0.1:28842
mkdir -p "$OUT"
declare -A PORT=([hub]=28840 [store]=28841)
on() { local n=$1; shift; ICLEAR_CLUSTER="hubbench_$n" ICLEAR_PORT="${PORT[$n]}" $CLUSTER "$@"; }
q() { local n=$1 db=$2; shift 2; on "$n" psql -d "$db" -v ON_ERROR_STOP=1 -At "$@"; }
sandbox_pid=
cleanup() {
    [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null || true
    for n in hub store; do on "$n" stop; done
}
trap cleanup EXIT
cargo build --release -q -p iclear-services --features sandbox --bin iclear-sandbox
target/release/iclear-sandbox "$SANDBOX_ADDR" >"$OUT/sandbox.log" 2>&1 &
sandbox_pid=$!

for n in hub store; do
    on "$n" stop
    rm -rf "target/pg/hubbench_$n"
    on "$n" start
    dir="target/pg/hubbench_$n"
    printf "wal_level = logical\niclear.database = 'member'\niclear.cap_lease_size = ${BENCH_LEASE:-100}\niclear.worker_naptime = 100\ncheckpoint_timeout = '1d'\nmax_wal_size = '16GB'\n" |
        sudo -u postgres tee -a "$dir/postgresql.conf" >/dev/null
    on "$n" stop
    on "$n" start
done
q hub postgres -c "CREATE DATABASE member" >/dev/null
q store postgres -c "CREATE DATABASE member" -c "CREATE DATABASE alone" >/dev/null
for db in member alone; do q store "$db" -c "CREATE EXTENSION iclear" >/dev/null; done
q hub member -c "CREATE EXTENSION iclear" >/dev/null
# the same product on the hub and in the standalone database, no services
q hub member -f examples/payday_us.sql >/dev/null 2>&1
q store alone -f examples/payday_us.sql >/dev/null 2>&1
q hub member -c "SELECT iclear.hub_publish()" >/dev/null
q store member -c "SELECT iclear.join_hub('store', 'host=127.0.0.1 port=${PORT[hub]} dbname=member user=postgres')" >/dev/null
if [ "${BENCH_HUB_NO_PUSH:-0}" = 1 ]; then
    q store member -c "DROP PUBLICATION iclear_store_lists, iclear_store_decisions" >/dev/null
else
    q hub member -c "SELECT iclear.hub_add_store('store', 'host=127.0.0.1 port=${PORT[store]} dbname=member user=postgres')" >/dev/null
fi
for _ in $(seq 100); do
    [ "$(q store member -c "SELECT count(*) FROM iclear.rule")" -gt 10 ] && break
    sleep 0.1
done
# the member's lead table: the standalone one's, attached the same way
/usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -p "${PORT[store]}" -U postgres -s -t leads alone |
    q store member >/dev/null
q store member -c "SELECT iclear.attach('leads', 'payday_us', (SELECT options FROM iclear.attachment WHERE lead_table = 'leads'::regclass))" \
    >/dev/null 2>&1 || q store member -c "SELECT iclear.attach('leads', 'payday_us')" >/dev/null
q store alone -c "SELECT options FROM iclear.attachment" >"$OUT/options"
q store member -c "SELECT iclear.attach('leads', 'payday_us', '$(cat "$OUT/options")'::jsonb)" >/dev/null
q store postgres -c "CHECKPOINT" >/dev/null

tps() { # db
    $PGBENCH -n -h 127.0.0.1 -p "${PORT[store]}" -U postgres -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" \
        -D table=leads -f bench/insert.sql "$1" >"$OUT/pgbench-$1.log" 2>&1
    awk '/^tps/ {print $3; exit}' "$OUT/pgbench-$1.log"
}
results=""
for db in member alone; do tps "$db" >/dev/null; done   # warm-up
for r in $(seq "$ROUNDS"); do
    for db in member alone; do
        t=$(tps "$db")
        printf '  round %s  %-7s %8.1f tps\n' "$r" "$db" "$t"
        results="$results$db $t"$'\n'
    done
done
printf '%s' "$results" | awk -v c="$CLIENTS" '{ s[$1] += $2; n[$1]++ }
    END { printf "\n  %d clients: a hub member %.1f tps, standalone %.1f tps: %.2fx\n", c,
                 s["member"] / n["member"], s["alone"] / n["alone"], (s["member"] / n["member"]) / (s["alone"] / n["alone"]) }'

# the lag of a configuration change, hub commit to the store's copy
lags=""
for i in 1 2 3 4 5; do
    q hub member -c "UPDATE iclear.rule SET position = position WHERE name = 'Under 18'" >/dev/null
    v=$(q hub member -c "SELECT version FROM iclear.config_version")
    start=$(date +%s%N)
    until [ "$(q store member -c "SELECT version FROM iclear.config_version")" = "$v" ]; do sleep 0.005; done
    lags="$lags $(( ($(date +%s%N) - start) / 1000000 ))"
done
echo "  a configuration change reached the store in (ms):$lags"

# the lease refill: every lead an IP lookup (the sandbox answers at once)
# under a shared cap that is never reached, 8 clients
q hub member -c "UPDATE iclear.service SET subscription = 'enabled', endpoint = 'http://$SANDBOX_ADDR/ip' WHERE name = 'ip_analysis'" >/dev/null
q hub member -c "INSERT INTO iclear.global_rule (product_id, service, settings) SELECT id, 'ip_analysis', '{\"api_key\": \"k\", \"sync_timeout_s\": 2}' FROM iclear.product WHERE name = 'payday_us'" >/dev/null
q hub member -c "INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'monthly', 100000000)" >/dev/null
sleep 2
since=$(q store member -c "SELECT clock_timestamp()")
t=$(tps member)
q store member -c "SELECT '  lease refill, ' || '$CLIENTS clients, $t tps: ' || count(*) FILTER (WHERE outcome = 'cap_reached') || ' of ' || count(*) || ' lookups found the lease spent (' || round(100.0 * count(*) FILTER (WHERE outcome = 'cap_reached') / greatest(count(*), 1), 1) || '%); lease size ' || current_setting('iclear.cap_lease_size')
                     FROM iclear.filter_log WHERE kind = 'service' AND at >= '$since'"
