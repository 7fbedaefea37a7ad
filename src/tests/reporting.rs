// The reporting views, lead_info, retention and partitions, the trace
// setting, and the README documenting every object.

fn bool_(sql: &str) -> bool {
    Spi::get_one::<bool>(sql).unwrap().unwrap()
}

#[pg_test]
fn reporting_views_and_lead_info() {
    setup();
    // service rows as the services layer records them
    run("INSERT INTO iclear.filter_log (lead_id, product_id, at, stage, origin, kind, name, outcome, detail)
         SELECT 'S-' || g, p.id, '2026-11-20 10:00+00', 'global', 'sync', 'service', 'ip_analysis',
                CASE WHEN g = 1 THEN 'reject' ELSE 'pass' END,
                json_build_object('source', CASE WHEN g <= 3 THEN 'api' ELSE 'cache' END, 'cost', 0.01)
           FROM iclear.product p, generate_series(1, 5) g");
    let u = json("SELECT to_jsonb(u) FROM iclear.service_usage u");
    assert_eq!(u["day"], "2026-11-20");
    assert_eq!(
        (
            u["requests"].as_i64(),
            u["lookups"].as_i64(),
            u["cache_hits"].as_i64(),
            u["rejects"].as_i64()
        ),
        (Some(5), Some(3), Some(2), Some(1))
    );
    assert_eq!(
        u["cost"].as_f64(),
        Some(0.03),
        "only API lookups are charged"
    );
    assert_eq!(int("SELECT count(*) FROM iclear.lead_log WHERE service = 'ip_analysis' AND source = 'cache'"), 2);

    for (sql, expected) in [
        (
            "iclear.next_cap_reset('monthly', 15, '2026-11-21 12:00+00')",
            "2026-12-15 00:00+00",
        ),
        (
            "iclear.next_cap_reset('monthly', 15, '2026-11-14 12:00+00')",
            "2026-11-15 00:00+00",
        ),
        (
            "iclear.next_cap_reset('monthly', 31, '2026-02-10 00:00+00')",
            "2026-02-28 00:00+00",
        ),
        (
            "iclear.next_cap_reset('monthly', 1, '2026-12-31 23:00+00')",
            "2027-01-01 00:00+00",
        ),
        (
            "iclear.next_cap_reset('daily', 1, '2026-11-21 12:00+00')",
            "2026-11-22 00:00+00",
        ),
    ] {
        assert!(
            bool_(&format!("SELECT {sql} = '{expected}'::timestamptz")),
            "{sql}"
        );
    }

    run("INSERT INTO iclear.service (name) VALUES ('ip_analysis')");
    run("INSERT INTO iclear.global_cap (service, period, start_day, cap_limit) VALUES ('ip_analysis', 'monthly', 15, 1000)");
    run(
        "INSERT INTO iclear.cap_use (scope, ref_id, period, bucket, used)
         SELECT 'global', id, 'monthly',
                to_char(iclear.cap_period_start('monthly', 15) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 7
           FROM iclear.global_cap",
    );
    let r = rule("processing", "capped", 1);
    run(&format!(
        "UPDATE iclear.rule SET daily_limit = 2, per_source_limit = 5, cap_counts = 'matches', per_source_scope = 'all_sources' WHERE id = {r}"
    ));
    process(
        json!({"product": "payday_us", "lead_id": "I-1", "source_id": 3, "fields": {"email": "a@b.c"}}),
    );
    let caps =
        json("SELECT jsonb_agg(to_jsonb(c) ORDER BY scope, period) FROM iclear.cap_status c");
    let caps = caps.as_array().unwrap();
    assert_eq!(caps.len(), 3, "{caps:?}");
    assert_eq!(
        (
            caps[0]["scope"].as_str(),
            caps[0]["current_value"].as_i64(),
            caps[0]["cap_limit"].as_i64()
        ),
        (Some("global"), Some(7), Some(1000))
    );
    assert_eq!(
        (
            caps[1]["period"].as_str(),
            caps[1]["current_value"].as_i64(),
            caps[1]["cap_limit"].as_i64()
        ),
        (Some("daily"), Some(1), Some(2))
    );
    assert_eq!(
        (caps[2]["period"].as_str(), caps[2]["subject"].as_str()),
        (Some("source"), Some("capped / source 3"))
    );
    assert!(caps[1]["next_reset"].is_string());

    let info = json("SELECT iclear.lead_info('I-1')");
    assert_eq!(info["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(info["decisions"][0]["decision"]["status"], "accepted");
    assert!(info["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["kind"] == "decision"));
    assert!(info["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["kind"] == "rule" && l["name"] == "capped"));
    assert_eq!(info["trace"][0]["rule_id"], r);
    assert_eq!(
        json("SELECT iclear.lead_info('nope')")["decisions"],
        json!([])
    );

    let h = json("SELECT to_jsonb(h) FROM iclear.health h");
    assert_eq!(
        (
            h["worker_alive"].as_bool(),
            h["queue_depth"].as_i64(),
            h["failed_jobs"].as_i64()
        ),
        (Some(false), Some(0), Some(0))
    );
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
}

#[pg_test]
fn maintain_partitions_and_retention() {
    setup();
    process(json!({"product": "payday_us", "lead_id": "M-1"}));
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision_default"),
        1,
        "no monthly partition yet"
    );
    let out = json("SELECT iclear.maintain()");
    let month = text("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')").unwrap();
    let created: Vec<String> = serde_json::from_value(out["created"].clone()).unwrap();
    assert!(
        created.contains(&format!("decision_{month}"))
            && created.contains(&format!("filter_log_{month}")),
        "{out}"
    );
    assert_eq!(
        created.len(),
        6,
        "this month and two ahead, for both tables: {out}"
    );
    assert!(out["moved_from_default"].as_i64().unwrap() >= 1);
    assert_eq!(int("SELECT count(*) FROM iclear.decision_default"), 0);
    assert_eq!(
        int(&format!(
            "SELECT count(*) FROM iclear.decision_{month} WHERE lead_id = 'M-1'"
        )),
        1
    );
    process(json!({"product": "payday_us", "lead_id": "M-2"}));
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision_default"),
        0,
        "new leads land in the month's partition"
    );
    assert_eq!(
        json("SELECT iclear.maintain()")["created"],
        json!([]),
        "idempotent"
    );

    // an old row gets its own partition while retention covers it, and the
    // partition is dropped once retention no longer does
    run(
        "INSERT INTO iclear.filter_log (lead_id, at, stage, origin, kind, outcome)
         VALUES ('old', now() - interval '400 days', 'processing', 'sync', 'rule', 'matched')",
    );
    let old = text("SELECT 'filter_log_' || to_char((now() - interval '400 days') AT TIME ZONE 'UTC', 'YYYYMM')").unwrap();
    let out = json("SELECT iclear.maintain(retention_days => 1000)");
    assert!(
        out["created"].as_array().unwrap().contains(&json!(old)),
        "{out}"
    );
    let out = json("SELECT iclear.maintain(retention_days => 180)");
    assert!(
        out["dropped"].as_array().unwrap().contains(&json!(old)),
        "{out}"
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.filter_log WHERE lead_id = 'old'"),
        0
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision WHERE lead_id IN ('M-1', 'M-2')"),
        2,
        "recent rows stay"
    );

    // consent evidence is kept 5 years by default, whatever the log retention
    run("INSERT INTO iclear.consent_evidence (lead_id, at, outcome) VALUES
         ('e3', now() - interval '3 years', 'success'), ('e6', now() - interval '6 years', 'success')");
    let out = json("SELECT iclear.maintain(retention_days => 30)");
    assert_eq!(out["evidence_deleted"], 1);
    assert_eq!(out["evidence_retention_days"], 1827);
    assert_eq!(
        text("SELECT string_agg(lead_id, ',') FROM iclear.consent_evidence").unwrap(),
        "e3"
    );
    let e = err("SELECT iclear.maintain(retention_days => 0)").unwrap();
    assert!(e.contains("retention_days"), "{e}");
}

#[pg_test]
fn the_reference_documents_every_object_and_setting() {
    let functions = include_str!("../../docs/reference/functions.md");
    let relations = [
        include_str!("../../docs/reference/views.md"),
        include_str!("../../docs/reference/configuration.md"),
    ]
    .concat();
    let gucs = include_str!("../../docs/reference/gucs.md");
    let names = |sql: &str| -> Vec<String> {
        Spi::connect(|c| {
            c.select(sql, None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        })
    };
    let documented = |doc: &str, n: &String| {
        doc.contains(&format!("`{n}`")) || doc.contains(&format!("`{n}("))
    };
    let mut missing: Vec<String> = Vec::new();
    for (doc, which, sql) in [
        (
            functions,
            "docs/reference/functions.md",
            "SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'iclear' ORDER BY 1",
        ),
        (
            relations.as_str(),
            "docs/reference/views.md or configuration.md",
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'iclear' AND c.relkind IN ('r', 'v', 'p') AND NOT c.relispartition ORDER BY 1",
        ),
        (
            gucs,
            "docs/reference/gucs.md",
            "SELECT name FROM pg_settings WHERE name LIKE 'iclear.%' ORDER BY 1",
        ),
    ] {
        let all = names(sql);
        assert!(!all.is_empty(), "{sql}");
        missing.extend(
            all.iter()
                .filter(|n| !documented(doc, n))
                .map(|n| format!("{n} (in {which})")),
        );
    }
    assert!(missing.is_empty(), "not documented: {missing:?}");
    // the PGXN META.json names this version (distribution and extension)
    let meta: serde_json::Value = serde_json::from_str(include_str!("../../META.json")).unwrap();
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        meta["provides"]["iclear"]["version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[pg_test]
fn trace_setting_controls_the_trace_not_the_outcome() {
    setup();
    let hit = rule("processing", "hit", 1);
    action(hit, "lead_tags", json!({"mode": "add", "tags": ["t"]}));
    let miss = rule("processing", "miss", 2);
    condition(miss, "lead_body", "age", "less", json!(18));
    let lead = json!({"product": "payday_us", "fields": {"age": 30}});
    let trace_ids = |d: &Value| -> Vec<Value> {
        d["trace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["rule_id"].clone())
            .collect()
    };
    let d = process(lead.clone());
    assert_eq!(
        trace_ids(&d),
        vec![json!(hit)],
        "default: matched rules only"
    );
    run("SET LOCAL iclear.trace = 'full'");
    let d = process(lead.clone());
    assert_eq!(trace_ids(&d), vec![json!(hit), json!(miss)]);
    assert_eq!(d["trace"][1]["conditions"][0]["actual"], 30);
    run("SET LOCAL iclear.trace = 'off'");
    let d = process(lead.clone());
    assert_eq!(trace_ids(&d), Vec::<Value>::new());
    assert_eq!(d["tags"], json!(["t"]), "same outcome");
    assert!(err("SET LOCAL iclear.trace = 'verbose'")
        .unwrap()
        .contains("iclear.trace"));
}

// ------------------------------------------------------------ services
// A sandbox provider runs on a loopback port inside the test backend.
