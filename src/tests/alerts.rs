// Alerts and metrics (issue 29): each alert kind raised once per period,
// rules checked when saved, the metrics view read by iclear_reader, and the
// postgres_exporter queries file matched against the view.

fn alerts(kind: &str) -> i64 {
    int(&format!("SELECT count(*) FROM iclear.alert WHERE kind = '{kind}'"))
}

#[pg_test]
fn every_alert_kind_is_raised_once_per_period() {
    setup();
    // a rule cap at its limit (and so past 80% of it)
    let r = rule("processing", "capped tag", 1);
    run(&format!(
        "UPDATE iclear.rule SET daily_limit = 2, cap_counts = 'matches' WHERE id = {r}"
    ));
    action(r, "lead_tags", json!({"mode": "add", "tags": ["t"]}));
    for i in 0..3 {
        process(json!({"product": "payday_us", "lead_id": format!("A{i}")}));
    }
    // publisher 7's leads rejected in the last hour, against a quiet week
    let stop = rule("processing", "stop publisher 7", 0);
    condition(stop, "lead_param", "publisher_id", "equals", json!(7));
    action(stop, "stop_processing", json!({"message": "no"}));
    run("INSERT INTO iclear.lead_hourly (hour, product_id, publisher_id, status, leads)
         SELECT date_trunc('hour', now()) - make_interval(hours => 3 + g), p.id, 7, s, n
           FROM iclear.product p, generate_series(0, 100) g, (VALUES ('accepted', 99), ('rejected', 1)) x(s, n)");
    for i in 0..60 {
        process(json!({"product": "payday_us", "lead_id": format!("S{i}"), "publisher_id": 7}));
    }
    // publisher 9, as rejected but new (no week behind it): no rate of its
    // own to spike from, no alert
    let stop9 = rule("processing", "stop publisher 9", 0);
    condition(stop9, "lead_param", "publisher_id", "equals", json!(9));
    action(stop9, "stop_processing", json!({"message": "no"}));
    for i in 0..60 {
        process(json!({"product": "payday_us", "lead_id": format!("N{i}"), "publisher_id": 9}));
    }
    // a vendor that does not answer, a stalled queue, a failed job, a stale list
    run("INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, name, outcome, detail)
         SELECT 'V' || g, p.id, 'global_before', 'sync', 'service', 'ip_analysis',
                CASE WHEN g % 4 = 0 THEN 'pass' ELSE 'no_response' END, '{}'
           FROM iclear.product p, generate_series(1, 40) g");
    run("INSERT INTO iclear.job (kind, payload, run_after) VALUES ('lookup', '{}', now() - interval '1 hour')");
    run("INSERT INTO iclear.job (kind, payload, status, last_error) VALUES ('lookup', '{}', 'failed', 'HTTP 500')");
    run("INSERT INTO iclear.list (name, kind, field, refreshed_at) VALUES ('old dnc', 'dnpl', 'homePhone', now() - interval '45 days')");
    let raised = int("SELECT iclear.check_alerts()::int8");
    for kind in [
        "cap_reached",
        "cap_warning",
        "reject_spike",
        "vendor_failing",
        "queue_stalled",
        "jobs_failing",
        "list_stale",
    ] {
        assert_eq!(alerts(kind), 1, "{kind}");
    }
    assert_eq!(raised, 7);
    // once per period: checking again raises nothing
    assert_eq!(int("SELECT iclear.check_alerts()::int8"), 0);
    let spike = json("SELECT to_jsonb(a) FROM iclear.alert a WHERE kind = 'reject_spike'");
    assert_eq!(spike["product"], "payday_us");
    assert_eq!(spike["subject"], "publisher 7");
    let vendor = json("SELECT to_jsonb(a) FROM iclear.alert a WHERE kind = 'vendor_failing'");
    assert_eq!(vendor["subject"], "ip_analysis");
    assert_eq!(vendor["value"], json!(0.75));
    // a rule is checked when saved, naming the setting
    let e = err("INSERT INTO iclear.alert_rule (kind, threshold) VALUES ('solar_flare', 1)").unwrap();
    assert!(e.contains("alert_rule.kind"), "{e}");
    let e = err("INSERT INTO iclear.alert_rule (kind, product, threshold) VALUES ('cap_warning', 'payday_us', -1)").unwrap();
    assert!(e.contains("alert_rule.threshold"), "{e}");
    let e = err("INSERT INTO iclear.alert_rule (kind, threshold, window_s) VALUES ('queue_stalled', 1, 5)").unwrap();
    assert!(e.contains("alert_rule.window_s"), "{e}");
    // disabled: nothing raised
    run("UPDATE iclear.alert_rule SET enabled = false");
    run("DELETE FROM iclear.alert");
    assert_eq!(int("SELECT iclear.check_alerts()::int8"), 0);
}

/// The metrics view as iclear_reader, and every query of
/// docs/postgres_exporter.yml runs and returns the columns it declares.
#[pg_test]
fn the_metrics_view_and_the_exporter_queries() {
    setup();
    for i in 0..3 {
        process(json!({"product": "payday_us", "lead_id": format!("M{i}")}));
    }
    run("SELECT iclear.check_alerts()");
    run("CREATE ROLE metrics_reader IN ROLE iclear_reader");
    run("SET ROLE metrics_reader");
    assert_eq!(
        int("SELECT value::int8 FROM iclear.metrics WHERE name = 'iclear_leads_24h' AND labels ->> 'status' = 'accepted'"),
        3
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.metrics WHERE name = 'iclear_worker_alive'"),
        1
    );
    let file = include_str!("../../docs/postgres_exporter.yml");
    let mut queries = 0;
    let mut lines = file.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(q) = line.trim().strip_prefix("query: ") else {
            continue;
        };
        let q = q.trim_matches('"');
        // the columns declared under `metrics:`, up to the next family
        let mut declared = Vec::new();
        while let Some(next) = lines.peek() {
            if !next.starts_with(' ') {
                break;
            }
            let t = lines.next().unwrap().trim();
            if let Some(name) = t.strip_prefix("- ").and_then(|n| n.strip_suffix(':')) {
                declared.push(name.to_string());
            }
        }
        let columns: Vec<String> = Spi::connect(|c| {
            let t = c.select(q, None, &[]).unwrap_or_else(|e| panic!("{q}: {e}"));
            (1..=t.columns().unwrap())
                .map(|i| t.column_name(i).unwrap())
                .collect()
        });
        assert_eq!(columns, declared, "{q}");
        queries += 1;
    }
    assert!(queries >= 8, "{queries} queries");
    run("RESET ROLE");
}

/// The hourly aggregates grow by what came since the last check (a check
/// reads its own interval, not the last hours again), count nothing twice,
/// and count a late transaction's rows when its hour is counted again.
#[pg_test]
fn the_hourly_aggregates_add_what_is_new_and_count_late_rows() {
    setup();
    let leads = || int("SELECT coalesce(sum(leads), 0)::int8 FROM iclear.lead_hourly");
    for i in 0..3 {
        process(json!({"product": "payday_us", "lead_id": format!("H{i}")}));
    }
    let minutes = || int("SELECT coalesce(sum(leads), 0)::int8 FROM iclear.lead_minutely");
    run("SELECT iclear.refresh_hourly()");
    assert_eq!(leads(), 3);
    assert_eq!(minutes(), 3, "the alert windows' minutes too");
    // again: nothing new, nothing added
    run("SELECT iclear.refresh_hourly()");
    assert_eq!(leads(), 3);
    assert_eq!(minutes(), 3);
    // a decision dated after the last check (a later transaction's) is added
    run("INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision, created_at)
         SELECT 'H3', id, 'final', 'accepted', '{}', '{}', clock_timestamp()
           FROM iclear.product WHERE name = 'payday_us'");
    run("SELECT iclear.refresh_hourly()");
    assert_eq!(leads(), 4, "what came since the last check is added, once");
    // a row that committed after the check that passed its date (a long
    // transaction): counted when its hour is counted again, whole
    run("INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision, created_at)
         SELECT 'H4', id, 'final', 'rejected', '{}', '{}', date_trunc('hour', now()) - interval '150 minutes'
           FROM iclear.product WHERE name = 'payday_us'");
    run("SELECT iclear.refresh_hourly()");
    assert_eq!(leads(), 4, "not yet: its hour is not counted again yet");
    run("UPDATE iclear.hourly_rollup SET exact_through = date_trunc('hour', now()) - interval '3 hours'");
    run("SELECT iclear.refresh_hourly()");
    assert_eq!(leads(), 5);
    assert_eq!(
        int("SELECT leads FROM iclear.lead_hourly WHERE status = 'rejected'
              AND hour = date_trunc('hour', now()) - interval '3 hours'"),
        1
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.hourly_rollup
              WHERE exact_through = date_trunc('hour', now()) - interval '1 hour'"),
        1
    );
}
