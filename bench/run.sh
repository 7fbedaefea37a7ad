#!/usr/bin/env bash
# make bench: pgbench on loopback, in one run, against one throwaway cluster,
# the same one-lead INSERT (bench/insert.sql) into tables of one shape:
#   plain     leads_plain: no trigger
#   plpgsql   leads_plpgsql: the hand-written PL/pgSQL trigger
#             (bench/plpgsql.sql: the same rules and DNPL as `leads`, a caps
#             UPDATE, a decision row with a trace)
#   plpgsqlnocap leads_plpgsql_nocap: the same trigger with no caps UPDATE
#             (no hot row: compare with `attached`, which has no cap either)
#   attached  leads: attached to iclear (payday_us: 24 active rules, a DNPL of
#             100,000 entries), default settings (configuration cache on,
#             iclear.trace = matched)
#   alerts    leads, while another session runs the alert checks every
#             BENCH_ALERT_EVERY s (10: six times the worker's once a minute),
#             every seeded alert rule enabled
#   full      leads, with iclear.trace = full (trace every rule)
#   nocache   leads, with iclear.config_cache = off (every lead re-reads the
#             configuration tables)
#   tag       leads_tag: payday_us + a rule that tags every lead
#   tagcap    leads_tagcap: the same rule with a never-reached daily_limit
#   nodup     leads_nodup: payday_us without its 30-day duplicate check on
#             email (a history condition): what the check costs
#   ip        leads_ip: payday_us + a sync IP Analysis global rule (no cache)
#             against the sandbox provider answering in BENCH_SANDBOX_DELAY_MS
#   ipcap     leads_ipcap: the same, with a never-reached global_cap
#             (bench/products.sql has the iclear variants' configuration)
# The service variants are latency-bound and run BENCH_SERVICE_CLIENTS
# clients (8); the others are CPU-bound and run BENCH_CLIENTS (2).
# Rounds alternate the variants so that drift on a noisy machine hits all
# alike, each round starting one variant later. Before them: VACUUM ANALYZE and CHECKPOINT after the bulk load, and
# an unrecorded warm-up of each table, so that no variant's first round pays
# for the setup (autovacuum, cold caches, the checkpoint after loading).
#
# Settings (environment): BENCH_SECONDS (10 per run), BENCH_ROUNDS (2),
# BENCH_WARMUP (5 s per table), BENCH_CLIENTS (2), BENCH_SERVICE_CLIENTS (8),
# BENCH_VARIANTS (all of the above, in that order; e.g. "plain attached" for
# a quick run), BENCH_SANDBOX_DELAY_MS (100, or MIN-MAX), BENCH_SANDBOX_PORT
# (28818), BENCH_SANDBOX_BIN (default: build target/release/iclear-sandbox),
# BENCH_PLPGSQL_CAP (1; 0 drops the PL/pgSQL trigger's caps row), BENCH_CPU_LEADS (2000
# leads per timed INSERT of "CPU per lead"), BENCH_PORT (28816),
# BENCH_KEEP_CLUSTER (0; 1 leaves the cluster running at the end),
# BENCH_LOAD_CLIENTS (8: the rounds again for plain, plpgsql, plpgsqlnocap, attached, alerts,
# nodup, tag and tagcap with that many clients, and the 8-client wait events; 0 skips them),
# BENCH_ALERT_EVERY (10), BENCH_STMT_LEADS (3000 single-row INSERTs, then one of as many,
# for "Per statement and transaction"), BENCH_SYNC_LEADS (500 leads for a sync lookup's
# overhead against the sandbox answering at once).
# Each round also reports the WAL written per lead (pg_current_wal_insert_lsn
# before and after; background work during the round included).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
export ICLEAR_CLUSTER=bench ICLEAR_PORT=${BENCH_PORT:-28816}
CLUSTER=scripts/cluster.sh
DB=iclear_bench
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
WARMUP=${BENCH_WARMUP:-5}
CPU_LEADS=${BENCH_CPU_LEADS:-2000}
CLIENTS=${BENCH_CLIENTS:-2}
SERVICE_CLIENTS=${BENCH_SERVICE_CLIENTS:-8}
ALL_VARIANTS="plain plpgsql plpgsqlnocap attached alerts nodup full nocache tag tagcap ip ipcap"
VARIANTS=${BENCH_VARIANTS:-$ALL_VARIANTS}
SANDBOX_PORT=${BENCH_SANDBOX_PORT:-28818}
SANDBOX_DELAY_MS=${BENCH_SANDBOX_DELAY_MS:-100}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
OUT=target/bench
mkdir -p "$OUT"

for v in $VARIANTS; do
    case " $ALL_VARIANTS " in *" $v "*) ;; *) echo "bench: unknown variant $v (BENCH_VARIANTS; known: $ALL_VARIANTS)" >&2; exit 2 ;; esac
done
wants() { case " $VARIANTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

table_of() {
    case $1 in
        plain) echo leads_plain ;;
        plpgsql) echo leads_plpgsql ;;
        plpgsqlnocap) echo leads_plpgsql_nocap ;;
        attached | alerts | full | nocache) echo leads ;;
        *) echo "leads_$1" ;;
    esac
}
clients_of() { case $1 in ip | ipcap) echo "$SERVICE_CLIENTS" ;; *) echo "$CLIENTS" ;; esac; }

# ------------------------------------------------------------ the sandbox
sandbox_pid=
cleanup() {
    if [ -n "$sandbox_pid" ]; then
        kill "$sandbox_pid" 2>/dev/null || true
        wait "$sandbox_pid" 2>/dev/null || true
        rm -f "$OUT/sandbox.pid"
    fi
    [ "${BENCH_KEEP_CLUSTER:-0}" = 1 ] || $CLUSTER stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if wants ip || wants ipcap; then
    # a sandbox left by a run that was killed (its pid file names it)
    if [ -f "$OUT/sandbox.pid" ]; then
        old=$(cat "$OUT/sandbox.pid")
        if grep -q iclear-sandbox "/proc/$old/cmdline" 2>/dev/null; then kill "$old" || true; fi
        rm -f "$OUT/sandbox.pid"
    fi
    SANDBOX_BIN=${BENCH_SANDBOX_BIN:-}
    if [ -z "$SANDBOX_BIN" ]; then
        cargo build --release -q -p iclear-services --features sandbox --bin iclear-sandbox
        SANDBOX_BIN=target/release/iclear-sandbox
    fi
fi
start_sandbox() { # delay_ms
    if [ -n "$sandbox_pid" ]; then
        kill "$sandbox_pid" 2>/dev/null || true
        wait "$sandbox_pid" 2>/dev/null || true
    fi
    "$SANDBOX_BIN" "127.0.0.1:$SANDBOX_PORT" --delay-ms "$1" >"$OUT/sandbox.log" 2>&1 &
    sandbox_pid=$!
    echo "$sandbox_pid" >"$OUT/sandbox.pid"
    for _ in $(seq 50); do
        grep -q "listening on" "$OUT/sandbox.log" && break
        kill -0 "$sandbox_pid" 2>/dev/null || break
        sleep 0.1
    done
    # a binary older than --delay-ms would listen and ignore it
    if ! grep -q "listening on.*delay" "$OUT/sandbox.log"; then
        echo "bench: the sandbox provider did not start with --delay-ms $1:" >&2
        cat "$OUT/sandbox.log" >&2
        exit 1
    fi
}
if wants ip || wants ipcap; then
    start_sandbox "$SANDBOX_DELAY_MS"
fi

# ------------------------------------------------------------- the setup
q() { $CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -At "$@"; }
# restarted: a cluster kept from a run before would still run the library
# it loaded then, not the one just installed
$CLUSTER stop
$CLUSTER start
PGOPTIONS='-c client_min_messages=warning' \
    $CLUSTER psql -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
q -f examples/payday_us.sql >/dev/null 2>"$OUT/setup.log" || { cat "$OUT/setup.log" >&2; exit 1; }
q -f bench/setup.sql >/dev/null
q -f bench/plpgsql.sql >/dev/null
[ "${BENCH_PLPGSQL_CAP:-1}" = 1 ] || q -c "DELETE FROM plpgsql_bench.caps" >/dev/null
q -v sandbox="http://127.0.0.1:$SANDBOX_PORT" -f bench/products.sql >/dev/null
rules=$(q -c "SELECT count(*) FROM iclear.rule r JOIN iclear.product p ON p.id = r.product_id
               WHERE p.name = 'payday_us' AND r.status = 'active'")
dnpl=$(q -c "SELECT max(n) FROM (SELECT count(*) n FROM iclear.list_entry GROUP BY list_id) s")
pl_rules=$(q -c "SELECT count(*) FROM plpgsql_bench.rules")
pl_dnpl=$(q -c "SELECT count(*) FROM plpgsql_bench.dnpl WHERE list = 'email'")
pl_cap=$(q -c "SELECT CASE WHEN count(*) > 0 THEN 'a caps row' ELSE 'no caps row' END FROM plpgsql_bench.caps")

# The global cap applies to every product's ip_analysis rules: it exists only
# while the ipcap variant runs.
cap_on() { q -c "INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'monthly', 100000000)" >/dev/null; }
cap_off() { q -c "DELETE FROM iclear.global_cap WHERE service = 'ip_analysis'" >/dev/null; }

# The alert checks the worker runs once a minute, every BENCH_ALERT_EVERY
# seconds here (10: six times as often), in their own session, with every
# seeded alert rule enabled: the alerts variant against attached.
ALERT_EVERY=${BENCH_ALERT_EVERY:-10}
alert_checks() {
    while :; do
        sleep "$ALERT_EVERY"
        q -c "SELECT iclear.check_alerts()" || true
    done
}

tps() { # table clients [PGOPTIONS [script]]
    local log=$OUT/pgbench-$1.log
    if ! PGOPTIONS="${3:-}" $PGBENCH -n -h 127.0.0.1 -p "$ICLEAR_PORT" -U postgres -c "$2" -j "$2" \
        -T "$SECONDS_PER_RUN" -D table="$1" -f "${4:-bench/insert.sql}" "$DB" >"$log" 2>&1 ||
        ! grep -q '^tps' "$log"; then
        echo "bench: pgbench failed on $1 ($log):" >&2
        tail -20 "$log" >&2
        return 1
    fi
    awk '/^tps/ {print $3; exit}' "$log"
}
measure() { # variant
    local t
    case $1 in
        full) tps leads "$CLIENTS" "-c iclear.trace=full" ;;
        nocache) tps leads "$CLIENTS" "-c iclear.config_cache=off" ;;
        alerts)
            alert_checks >/dev/null 2>&1 &
            local checker=$!
            t=$(tps leads "$CLIENTS")
            kill "$checker" 2>/dev/null || true
            wait "$checker" 2>/dev/null || true
            echo "$t"
            ;;
        ipcap)
            cap_on
            t=$(tps leads_ipcap "$SERVICE_CLIENTS")
            cap_off
            echo "$t"
            ;;
        *) tps "$(table_of "$1")" "$(clients_of "$1")" ;;
    esac
}

# One CHECKPOINT before the warm-ups and none during the rounds: a timed
# checkpoint landing in one variant's round makes it pay the full-page
# images of every page it touches next, which the others do not.
q -c "ALTER SYSTEM SET checkpoint_timeout = '1d'" -c "ALTER SYSTEM SET max_wal_size = '16GB'" \
  -c "SELECT pg_reload_conf()" >/dev/null
q -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
warmed=" "
for v in $VARIANTS; do
    t=$(table_of "$v")
    case $warmed in *" $t "*) continue ;; esac
    warmed="$warmed$t "
    SECONDS_PER_RUN=$WARMUP measure "$v" >/dev/null
done

# ------------------------------------------------------------ the rounds
# ROUNDS rounds of the variants $1, alternated; each round's tps and WAL per
# lead are printed and kept in $results.
rounds() {
    local r v lsn t wal n w order
    results=""
    read -ra order <<<"$1"
    for r in $(seq "$ROUNDS"); do
        # each round starts one variant later, so that none always follows
        # the same one (and pays for its autovacuum and dirty buffers)
        for v in "${order[@]:$(((r - 1) % ${#order[@]}))}" "${order[@]:0:$(((r - 1) % ${#order[@]}))}"; do
            lsn=$(q -c "SELECT pg_current_wal_insert_lsn()")
            t=$(measure "$v")
            # WAL per transaction (background work during the round included)
            wal=$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn')")
            n=$(awk '/number of transactions actually processed/ {print $NF}' "$OUT/pgbench-$(table_of "$v").log")
            w=$(awk -v w="$wal" -v n="$n" 'BEGIN { printf "%.0f", (n > 0 ? w / n : 0) }')
            printf '  round %s  %-8s %8.1f tps %7s B of WAL per lead\n' "$r" "$v" "$t" "$w"
            results="$results$v $t $w"$'\n'
        done
    done
}
# The table of $results (CPU-bound variants with $1 clients) and the ratios
# between the variants it has.
summary() {
    printf '%s' "$results" | awk -v clients="$1" -v sclients="$SERVICE_CLIENTS" '
        { sum[$1] += $2; wal[$1] += $3; n[$1]++ }
        function has(v) { return n[v] > 0 }
        function m(v) { return sum[v] / n[v] }
        function row(v, label, c) {
            if (!has(v)) return
            printf "  %-44s %3d  %8.1f  %10.0f", label, c, m(v), wal[v] / n[v]
            if (has("plain") && m("plain") > 0) printf "   %5.2fx", m(v) / m("plain")
            printf "\n"
        }
        function ratio(a, b, label) {
            if (has(a) && has(b) && m(b) > 0) printf "  %-58s %5.2fx\n", label, m(a) / m(b)
        }
        END {
            printf "\n  %-44s %3s  %8s  %10s   %s\n", "variant", "cl", "tps", "WAL B/lead", "vs plain"
            row("plain", "plain INSERT", clients)
            row("plpgsql", "PL/pgSQL trigger, same rules, caps row", clients)
            row("plpgsqlnocap", "PL/pgSQL trigger, same rules, no cap", clients)
            row("attached", "attached (defaults)", clients)
            row("alerts", "attached, alert checks (see ALERT_EVERY)", clients)
            row("nodup", "attached, without the duplicate check", clients)
            row("full", "attached, trace=full", clients)
            row("nocache", "attached, config_cache=off", clients)
            row("tag", "attached + tag rule", clients)
            row("tagcap", "attached + tag rule, daily_limit 1e8", clients)
            row("ip", "attached + sync IP lookup", sclients)
            row("ipcap", "attached + sync IP lookup, global_cap 1e8", sclients)
            printf "\n"
            ratio("attached", "plpgsqlnocap", "no cap: attached vs PL/pgSQL trigger (same rules)")
            ratio("tagcap", "plpgsql", "with a cap: attached + rule cap vs PL/pgSQL + caps row")
            ratio("attached", "plpgsql", "attached vs PL/pgSQL with its caps row (unfair to it)")
            ratio("full", "plpgsql", "attached, trace=full vs PL/pgSQL (both trace every rule)")
            ratio("nocache", "attached", "config_cache=off vs on")
            ratio("alerts", "attached", "alert checks at 6x the worker rate vs none")
            ratio("attached", "nodup", "30-day duplicate check vs without it")
            ratio("tagcap", "tag", "rule cap vs its uncapped twin")
            ratio("ipcap", "ip", "global_cap vs its uncapped twin")
        }'
}

rounds "$VARIANTS"
printf '\niclear bench: %s active rules, DNPL of %s entries (PL/pgSQL: %s rule rows, %s DNPL emails, %s), fsync on\n' \
    "$rules" "$dnpl" "$pl_rules" "$pl_dnpl" "$pl_cap"
printf '%s clients (%s for the service variants, sandbox delay %s ms) x %s s x %s rounds\n' \
    "$CLIENTS" "$SERVICE_CLIENTS" "$SANDBOX_DELAY_MS" "$SECONDS_PER_RUN" "$ROUNDS"
summary "$CLIENTS"
# --------------------------------------------------- under more clients
# The rounds above give the CPU-bound variants one client per core; a busy
# lead store (and an acceptance test) runs 8-16. Then plain INSERT is no
# longer bound by its commit's latency and the ratios change: the same
# rounds again for these variants with BENCH_LOAD_CLIENTS clients (8; 0 or
# BENCH_CLIENTS skips them).
LOAD_CLIENTS=${BENCH_LOAD_CLIENTS:-8}
load_variants=""
for v in plain plpgsql plpgsqlnocap attached alerts nodup tag tagcap; do wants "$v" && load_variants="$load_variants $v"; done
if [ "$LOAD_CLIENTS" -gt 0 ] && [ "$LOAD_CLIENTS" != "$CLIENTS" ] && [ -n "$load_variants" ]; then
    printf '\n'
    CLIENTS=$LOAD_CLIENTS rounds "$load_variants"
    printf '\nthe same with %s clients\n' "$LOAD_CLIENTS"
    summary "$LOAD_CLIENTS"
fi
# ------------------------------------------------------- CPU per lead
# One INSERT of CPU_LEADS leads in a rolled-back transaction per table, the
# fastest of 3: what a trigger costs per lead without the commit and the
# client round trip, which dominate the single-row rounds and their noise.
cpu_ms() { # table
    for _ in 1 2 3; do
        $CLUSTER psql -d $DB -v table="$1" -v n="$CPU_LEADS" -f bench/insert_many.sql | awk '/^Time:/ {print $2}'
    done | sort -n | head -1
}
cpu=""
for v in plain plpgsql attached; do
    wants "$v" || continue
    cpu="$cpu$v $(cpu_ms "$(table_of "$v")")"$'\n'
done
if [ -n "$cpu" ]; then
    printf '\n  CPU per lead (%s leads in one rolled-back INSERT, fastest of 3):\n' "$CPU_LEADS"
    printf '%s' "$cpu" | awk -v n="$CPU_LEADS" '
        { ms[$1] = $2 }
        END {
            split("plain plpgsql attached", order, " ")
            for (i = 1; i <= 3; i++)
                if (order[i] in ms) printf "    %-10s %8.1f us\n", order[i], 1000 * ms[order[i]] / n
            if (("plpgsql" in ms) && ("attached" in ms) && ms["attached"] > 0)
                printf "    the PL/pgSQL trigger costs %.2fx what iclear does per lead\n", ms["plpgsql"] / ms["attached"]
        }'
fi
# ------------------------------------------- per statement and transaction
# One session, the backend's CPU: single-row INSERTs each committed, then one
# INSERT of as many leads (bench/per_statement.sql), alternated, best of 3.
STMT_LEADS=${BENCH_STMT_LEADS:-3000}
stmt=""
for _ in 1 2 3; do
    for v in plain plpgsqlnocap attached; do
        wants "$v" || continue
        stmt="$stmt$v $($CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -v table="$(table_of "$v")" -v n="$STMT_LEADS" \
            -v file="$OUT/statements.sql" -f bench/per_statement.sql | tail -1)"$'\n'
    done
done
if [ -n "$stmt" ]; then
    printf '\n  Per statement and transaction (one session, backend CPU from /proc; %s single-row INSERTs each committed,\n' "$STMT_LEADS"
    printf '  then one INSERT of %s leads; best of 3 alternated):\n' "$STMT_LEADS"
    printf '%s' "$stmt" | awk '
        NF == 3 {
            if (!($1 in one) || $2 < one[$1]) one[$1] = $2
            if (!($1 in many) || $3 < many[$1]) many[$1] = $3
        }
        END {
            printf "    %-13s %14s %14s %18s %14s\n", "table", "single/lead", "multi/lead", "statement+txn", "beyond plain"
            split("plain plpgsqlnocap attached", order, " ")
            for (i = 1; i <= 3; i++) {
                v = order[i]
                if (!(v in one)) continue
                st = one[v] - many[v]
                printf "    %-13s %11.1f us %11.1f us %15.1f us", v, one[v], many[v], st
                if ("plain" in one) printf " %11.1f us", st - (one["plain"] - many["plain"])
                printf "\n"
            }
        }'
fi
# ------------------------------------------------- where 8 clients wait
WAIT_CLIENTS=${BENCH_LOAD_CLIENTS:-8}
if [ "$WAIT_CLIENTS" -gt 0 ]; then
    for v in plain plpgsqlnocap attached; do
        wants "$v" || continue
        $CLUSTER psql -d $DB -v seconds="$SECONDS_PER_RUN" -f bench/waits.sql >"$OUT/waits-$v.txt" &
        sampler=$!
        CLIENTS=$WAIT_CLIENTS measure "$v" >/dev/null
        wait "$sampler" || true
        printf '\n  Wait events, %s clients, %s (share of samples of active client backends):\n' "$WAIT_CLIENTS" "$v"
        awk '{ printf "    %-36s %5.1f%%\n", $1, $2 }' "$OUT/waits-$v.txt"
    done
fi
# ------------------------------------------------ a sync lookup's overhead
# Against the sandbox answering at once: N leads in one statement through
# the IP lookup product, against the same leads through payday_us (no
# lookup); the difference over the lookups made is what iclear spends per
# sync lookup around the vendor's own time (best of 3).
if wants ip; then
    start_sandbox 0
    SYNC_LEADS=${BENCH_SYNC_LEADS:-500}
    sync_ms() { # product
        $CLUSTER psql -d $DB -v ON_ERROR_STOP=1 -c '\timing on' -c "SELECT count(iclear_process(jsonb_build_object(
            'product', '$1', 'fields', jsonb_build_object('email', 'sync' || g || '.' || random() || '@gmail.com',
            'homePhone', (2000000000 + g)::text, 'state', 'CA', 'age', 30, 'monthlyIncome', 4000,
            'loanAmount', 500, 'military', false, 'tcpaConsent', true,
            'userIp', '10.1.' || (g % 256) || '.' || (g % 250)))))
            FROM generate_series(1, $SYNC_LEADS) g" | awk '/^Time:/ {print $2}'
    }
    looked=$(q -c "SELECT count(*) FROM iclear.filter_log WHERE kind = 'service'")
    best_ip="" best_none=""
    for _ in 1 2 3; do
        a=$(sync_ms payday_us_ip)
        b=$(sync_ms payday_us)
        best_ip=$(printf '%s\n%s\n' "$a" "$best_ip" | grep . | sort -n | head -1)
        best_none=$(printf '%s\n%s\n' "$b" "$best_none" | grep . | sort -n | head -1)
    done
    calls=$(q -c "SELECT (count(*) - $looked) / 3 FROM iclear.filter_log WHERE kind = 'service'")
    printf '\n  A sync lookup against the sandbox answering at once: %s leads in one statement %.0f ms with\n' "$SYNC_LEADS" "$best_ip"
    printf '  %s IP lookups, %.0f ms without: %s ms a lookup (iclear'"'"'s side: the request record and its fsync, the\n' \
        "$calls" "$best_none" "$(awk -v a="$best_ip" -v b="$best_none" -v n="$calls" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }')"
    printf '  call thread, HTTP on a kept-alive connection)\n'
fi
printf '\n  rows by iclear_status (warm-ups included):\n'
for t in $(for v in $VARIANTS; do table_of "$v"; done | awk '!seen[$0]++'); do
    case $t in
        *) col=iclear_status src=$t ;;
    esac
    printf '    %-14s %s\n' "$t" "$(q -c "SELECT string_agg(s || '=' || n, ', ' ORDER BY s)
        FROM (SELECT coalesce($col, '(none)') s, count(*) n FROM $src GROUP BY 1) x")"
done
if wants ip || wants ipcap; then
    printf '  IP lookups by outcome (warm-ups included): %s\n' "$(q -c "SELECT string_agg(outcome || '=' || n, ', ' ORDER BY outcome)
        FROM (SELECT outcome, count(*) n FROM iclear.filter_log WHERE kind = 'service' GROUP BY 1) x" || echo '?')"
fi
printf '  runtime %d s\n' "$SECONDS"
