#!/usr/bin/env bash
# make demo: a throwaway cluster with iclear preloaded, the example product of
# examples/payday_us.sql, a generated batch of leads pushed through the
# attached table, and a summary. Safe to run again (the database is rebuilt).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${DEMO_LEADS:-1200}
DB=iclear_demo
CLUSTER=scripts/cluster.sh

SANDBOX_ADDR=${ICLEAR_SANDBOX:-127.0.0.1:28817}
OUT=$(pwd)/target/demo
mkdir -p "$OUT"

# The sandbox provider answers the vendors' protocols on loopback (no internet).
cargo build --release -q -p iclear-services --features sandbox --bin iclear-sandbox
[ -f "$OUT/sandbox.pid" ] && kill "$(cat "$OUT/sandbox.pid")" 2>/dev/null || true
nohup target/release/iclear-sandbox "$SANDBOX_ADDR" >"$OUT/sandbox.log" 2>&1 &
echo $! >"$OUT/sandbox.pid"
for _ in $(seq 50); do (exec 3<>"/dev/tcp/${SANDBOX_ADDR%:*}/${SANDBOX_ADDR#*:}") 2>/dev/null && break; sleep 0.1; done

$CLUSTER start
# the async worker serves the demo database (read when it starts)
$CLUSTER psql -d postgres -c "ALTER SYSTEM SET iclear.database = '$DB'" -c "SELECT pg_reload_conf()" >/dev/null
$CLUSTER psql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
$CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -v sandbox="http://$SANDBOX_ADDR" -f examples/payday_us.sql >/dev/null
rules=$($CLUSTER psql -d $DB -At -c "SELECT count(*) FROM iclear.rule WHERE status = 'active'")
entries=$($CLUSTER psql -d $DB -At -c "SELECT count(*) FROM iclear.list_entry")
echo "iclear demo: product payday_us with $rules active rules and $entries list entries"

# the lead store's own role, not a superuser: INSERT on its table is all it needs
$CLUSTER psql -d $DB -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lead_store') THEN CREATE ROLE lead_store LOGIN; END IF;
END $$;
GRANT INSERT ON leads TO lead_store;
GRANT USAGE ON SEQUENCE leads_id_seq TO lead_store;
SQL
start=$(date +%s%N)
$CLUSTER psql -d $DB -U lead_store -v ON_ERROR_STOP=1 -v n="$N" -f examples/leads.sql >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "pushed $N generated leads through the attached table \"leads\", as role lead_store, in ${ms} ms" \
     "($(( N * 1000 / (ms > 0 ? ms : 1) )) leads/s, one INSERT statement)"

# async lookups: the preloaded worker drains the queue
for _ in $(seq 120); do
    left=$($CLUSTER psql -d $DB -At -c "SELECT queue_depth FROM iclear.health")
    [ "$left" = 0 ] && break
    sleep 0.5
done
if [ "$left" != 0 ]; then
    echo "demo: the worker did not drain the queue ($left left); draining it in this session"
    $CLUSTER psql -d $DB -At -c "SELECT iclear.run_worker_once(100000)" >/dev/null
fi
echo "async lookups completed by the background worker: $($CLUSTER psql -d $DB -At -c \
     "SELECT count(*) FROM iclear.job WHERE status IN ('done', 'failed')")"
$CLUSTER psql -d $DB -At -c "SELECT iclear.maintain()" >/dev/null   # daily job: monthly partitions
$CLUSTER psql -d $DB -f examples/summary.sql

# Changing rules safely: a draft rule backtested on the leads just stored
# (nothing written, nothing sent; docs/guide/changing-rules.md).
echo
echo "buyers' feedback recorded, then a draft rule (reject incomes under 1,500) backtested:"
$CLUSTER psql -d $DB -At -f examples/backtest.sql

# The alerts this run raised (the worker checks once a minute; checked
# here at once): a LISTEN iclear_alert session would have heard each.
echo
echo "alerts raised (NOTIFY iclear_alert, and iclear.alert):"
$CLUSTER psql -d $DB -At -c "SELECT iclear.check_alerts()" >/dev/null
$CLUSTER psql -d $DB -At -c "SELECT '  ' || kind || ': ' || subject || ' (' || value || ' of ' || threshold || ')'
                              FROM iclear.alert ORDER BY id"

# The chart, plotted from the views (gnuplot, installed when missing).
if ! command -v gnuplot >/dev/null; then
    echo "demo: installing gnuplot-nox for the chart"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq gnuplot-nox >/dev/null; }
fi
q() { $CLUSTER psql -d $DB -At -F $'\t' -c "$1" > "$OUT/$2"; }
q "SELECT count(*) FROM leads" leads.count
q "SELECT outcome, count(*) FROM iclear.full_log WHERE kind = 'decision' GROUP BY 1 ORDER BY 1" decisions.tsv
q "SELECT coalesce(d.decision -> 'rejected_by' ->> 'name', '?'), count(*) FROM iclear.decision d
    WHERE d.status = 'rejected' GROUP BY 1 ORDER BY 2 DESC LIMIT 12" rejects.tsv
q "SELECT name, count(*) FROM iclear.full_log WHERE kind = 'rule' GROUP BY 1 ORDER BY 2 DESC LIMIT 10" rules.tsv
q "SELECT service, sum(lookups) FROM iclear.service_usage GROUP BY 1 ORDER BY 1" services.tsv
sed -i 's/^\([0-9]*\).*/\1/' "$OUT/leads.count"
gnuplot -e "dir='$OUT'" examples/chart.gp
echo
echo "chart: $OUT/iclear-demo.png"
cat <<TXT

Look around:
  $(pwd)/$CLUSTER psql -d $DB
  (or: psql -h 127.0.0.1 -p ${ICLEAR_PORT:-28815} -U postgres $DB)
  e.g.  SELECT iclear_decision FROM leads WHERE iclear_status = 'rejected' LIMIT 1;
        SELECT * FROM iclear.full_log WHERE lead_id = '42';
        SELECT * FROM iclear.service_usage;
        SELECT * FROM iclear.metrics;       -- what postgres_exporter reads
        LISTEN iclear_alert;                -- alerts as they are raised
        -- a paused lead: its pending code, then confirm it (the lead is resumed)
        SELECT product, phone, code FROM iclear.sms_verification WHERE status = 'pending' LIMIT 1;
        SELECT iclear.confirm_sms('payday_us', '<phone>', '<code>');
Stop the cluster and the sandbox provider with: make stop
TXT
