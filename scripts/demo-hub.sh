#!/usr/bin/env bash
# make demo-hub: a hub and two lead stores on loopback (docs/guide/hub.md).
# Starts three clusters (hub 28830, store_a 28831, store_b 28832, wal_level
# logical), publishes the hub's configuration, joins the two stores, then:
# changes a rule on the hub and shows both stores use it; adds a shared DNPL
# entry; lets a lead on store_a put a number on the DNPL and store_b reject
# it; races a shared global cap from both stores; prints the cross-store
# report. `make stop` does not stop these: `scripts/demo-hub.sh stop` does.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CLUSTER=scripts/cluster.sh
declare -A PORT=([hub]=28830 [store_a]=28831 [store_b]=28832)
NAMES="hub store_a store_b"

on() { # name: run cluster.sh for that cluster
    local n=$1
    shift
    ICLEAR_CLUSTER="hub_$n" ICLEAR_PORT="${PORT[$n]}" $CLUSTER "$@"
}
q() { # name sql...: one value
    local n=$1
    shift
    on "$n" psql -d iclear -v ON_ERROR_STOP=1 -At "$@"
}
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} dbname=iclear user=postgres"; }

OUT=target/demo-hub
SANDBOX_ADDR=127.0.0.1:28833
mkdir -p "$OUT"
stop_sandbox() { [ -f "$OUT/sandbox.pid" ] && kill "$(cat "$OUT/sandbox.pid")" 2>/dev/null; rm -f "$OUT/sandbox.pid"; }
if [ "${1:-}" = stop ]; then
    for n in $NAMES; do on "$n" stop; done
    stop_sandbox || true
    exit 0
fi
# the sandbox provider answers the vendors' protocols on loopback
cargo build --release -q -p iclear-services --features sandbox --bin iclear-sandbox
stop_sandbox || true
nohup target/release/iclear-sandbox "$SANDBOX_ADDR" >"$OUT/sandbox.log" 2>&1 &
echo $! >"$OUT/sandbox.pid"

# fresh clusters every run: replication slots and subscriptions of a run
# before would hold on to the databases
for n in $NAMES; do
    on "$n" stop
    rm -rf "target/pg/hub_$n"
done
for n in $NAMES; do
    on "$n" start
    dir="target/pg/hub_$n"
    if ! sudo -u postgres grep -q '^wal_level = logical' "$dir/postgresql.conf" 2>/dev/null &&
        ! grep -q '^wal_level = logical' "$dir/postgresql.conf" 2>/dev/null; then
        echo "wal_level = logical" | sudo -u postgres tee -a "$dir/postgresql.conf" >/dev/null 2>&1 ||
            echo "wal_level = logical" >>"$dir/postgresql.conf"
        printf "iclear.database = 'iclear'\niclear.cap_lease_size = 10\niclear.worker_naptime = 200\n" |
            sudo -u postgres tee -a "$dir/postgresql.conf" >/dev/null 2>&1 ||
            printf "iclear.database = 'iclear'\niclear.cap_lease_size = 10\niclear.worker_naptime = 200\n" >>"$dir/postgresql.conf"
        on "$n" stop
        on "$n" start
    fi
done
for n in $NAMES; do
    on "$n" psql -d postgres -c "CREATE DATABASE iclear" >/dev/null
    q "$n" -c "CREATE EXTENSION iclear" >/dev/null
done

echo "== the hub: the demo's product, a shared DNPL of phones, a global cap of 40 IP lookups"
q hub -v sandbox="http://$SANDBOX_ADDR" -f examples/payday_us.sql >/dev/null 2>&1
q hub -c "INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'monthly', 40)" >/dev/null
q hub <<'SQL' >/dev/null
INSERT INTO iclear.list (name, kind, field) VALUES ('shared phone dnpl', 'dnpl', 'homePhone');
INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p
 WHERE l.name = 'shared phone dnpl' AND p.name = 'payday_us';
INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'Remember a complainer''s phone', 99
  FROM iclear.product WHERE name = 'payday_us';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
SELECT id, 'lead_body', 'note', 'equals', '"complained"' FROM iclear.rule WHERE name = 'Remember a complainer''s phone';
INSERT INTO iclear.rule_action (rule_id, action, config)
SELECT r.id, 'add_to_list', jsonb_build_object('list_ids', jsonb_build_array(l.id))
  FROM iclear.rule r, iclear.list l WHERE r.name = 'Remember a complainer''s phone' AND l.name = 'shared phone dnpl';
SQL
q hub -c "SELECT iclear.hub_publish()"
for n in store_a store_b; do
    q "$n" -c "SELECT iclear.join_hub('$n', '$(conninfo hub)')"
    q hub -c "SELECT iclear.hub_add_store('$n', '$(conninfo "$n")')"
done
wait_for() { # name sql expected
    for _ in $(seq 100); do
        [ "$(q "$1" -c "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    echo "demo-hub: $1 did not reach '$3' for: $2" >&2
    return 1
}
for n in store_a store_b; do
    wait_for "$n" "SELECT count(*) > 0 FROM iclear.product WHERE name = 'payday_us'" t
done
echo "   both stores have the hub's configuration"

lead() { # store id fields-json
    q "$1" -c "SELECT d->>'status' || coalesce(' (' || (d->>'reason') || ')', '')
                 FROM iclear_process(jsonb_build_object('product', 'payday_us', 'lead_id', '$2',
                      'fields', '$3'::jsonb)) d"
}
base='"firstName": "Ann", "email": "ann@x.com", "state": "CA", "age": 30, "monthlyIncome": 4000, "loanAmount": 500, "tcpaConsent": true'

echo "== a rule changed on the hub: both stores use it"
echo "   store_a, before: $(lead store_a age-before "{$base, \"email\": \"age-before@x.com\", \"age\": 19}")"
q hub -c "UPDATE iclear.rule_condition SET value = '21' WHERE rule_id = (SELECT id FROM iclear.rule WHERE name = 'Under 18')"
for n in store_a store_b; do
    wait_for "$n" "SELECT value::text FROM iclear.rule_condition WHERE rule_id = (SELECT id FROM iclear.rule WHERE name = 'Under 18')" 21
    echo "   $n, after: $(lead "$n" "age-$n" "{$base, \"email\": \"age-$n@x.com\", \"age\": 19}")"
done

echo "== a DNPL entry added on the hub rejects on both stores"
q hub -c "INSERT INTO iclear.list_entry (list_id, value) SELECT id, '(310) 867-0101' FROM iclear.list WHERE name = 'shared phone dnpl'" >/dev/null
for n in store_a store_b; do
    wait_for "$n" "SELECT count(*) FROM iclear.list_entry WHERE value = '3108670101'" 1
    echo "   $n: $(lead "$n" "dnpl-$n" "{$base, \"email\": \"d-$n@x.com\", \"homePhone\": \"+1 310 867 0101\"}")"
done

echo "== a lead on store_a puts its phone on the DNPL; store_b rejects the next one"
echo "   store_a: $(lead store_a complainer "{$base, \"email\": \"c@x.com\", \"homePhone\": \"(310) 867-0202\", \"note\": \"complained\"}")"
wait_for store_b "SELECT count(*) FROM iclear.list_entry WHERE value = '3108670202'" 1
echo "   store_b: $(lead store_b next "{$base, \"email\": \"n@x.com\", \"homePhone\": \"310.867.0202\"}")"

echo "== both stores race the shared IP-lookup cap of 40 (4 sessions each, 25 leads per session)"
for n in store_a store_b; do
    wait_for "$n" "SELECT count(*) > 0 FROM iclear.cap_grant WHERE granted > 0" t
done
racers=()
for n in store_a store_b; do
    for s in 1 2 3 4; do
        (for i in $(seq 25); do
            lead "$n" "race-$n-$s-$i" "{$base, \"email\": \"race-$n-$s-$i@x.com\", \"userIp\": \"10.$s.$i.7\"}" >/dev/null
        done) &
        racers+=($!)
    done
done
# (not a bare wait: the sandbox runs in the background too)
wait "${racers[@]}"
wait_for hub "SELECT count(*) FROM iclear.store_decision WHERE lead_id LIKE 'race-%'" 200
q hub -c "SELECT '   ' || store || ': ' || lookups || ' IP lookups' FROM iclear.store_service_usage WHERE service = 'ip_analysis' ORDER BY store"
q hub -c "SELECT '   in all: ' || sum(lookups) || ' of the cap of 40' FROM iclear.store_service_usage WHERE service = 'ip_analysis'"
q hub -c "SELECT '   ip_analysis leases: ' || string_agg(store || ' ' || granted || ' granted, ' || used || ' spent', '; ' ORDER BY store) FROM iclear.cap_lease_status WHERE service = 'ip_analysis'"

echo "== every store's decisions, on the hub"
wait_for hub "SELECT count(DISTINCT store) FROM iclear.store_decision" 2
q hub -c "SELECT store || ': ' || string_agg(status || ' ' || n, ', ' ORDER BY status)
            FROM (SELECT store, status, count(*) n FROM iclear.store_decision GROUP BY 1, 2) x GROUP BY store ORDER BY store"
q hub -c "SELECT store || ' ' || coalesce(receiving::text, '?') || ' ' || coalesce(seconds_since_contact::text, '?') || ' s' FROM iclear.store_status ORDER BY store"
echo "demo-hub: a hub on ${PORT[hub]}, stores on ${PORT[store_a]} and ${PORT[store_b]} (database iclear); scripts/demo-hub.sh stop"
