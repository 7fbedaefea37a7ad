// Duplicate and velocity checks over the lead history (issue 27): the
// window slides, statuses and scope choose what counts, composite keys,
// rollback, pruning, rebuilding, and the backtest.

/// A rule of payday_us rejecting when `count` earlier leads share `key`.
fn history_rule(name: &str, key: &str, value: Value) -> i64 {
    let r = rule("processing", name, 1);
    condition(r, "history", key, "greater_or_equal", value);
    action(r, "stop_processing", json!({"message": format!("{name}")}));
    r
}

fn post(id: &str, fields: Value) -> Value {
    process(json!({"product": "payday_us", "lead_id": id, "fields": fields}))
}

/// Age every history row by `seconds` (the engine reads the wall clock).
fn age(seconds: i64) {
    run(&format!(
        "UPDATE iclear.lead_history SET at = at - make_interval(secs => {seconds})"
    ));
}

#[pg_test]
fn a_duplicate_within_the_window_is_rejected_and_the_window_slides() {
    setup();
    history_rule(
        "duplicate email",
        "email",
        json!({"count": 1, "seconds": 3600, "statuses": ["accepted"]}),
    );
    assert_eq!(post("H-1", json!({"email": "Ann@Example.com"}))["status"], "accepted");
    let d = post("H-2", json!({"email": " ann@example.COM "}));
    assert_eq!(d["status"], "rejected", "the same email, normalised");
    assert_eq!(d["reason"], "duplicate email");
    // the trace shows the count found
    let t = &d["trace"][0]["conditions"][0];
    assert_eq!(t["actual"], json!(1), "{d}");
    // a rejected lead does not count (statuses: accepted); another email passes
    assert_eq!(post("H-3", json!({"email": "bo@example.com"}))["status"], "accepted");
    // past the window the email is new again
    age(3601);
    assert_eq!(post("H-4", json!({"email": "ann@example.com"}))["status"], "accepted");
    // the history holds digests (64 bits), never the values: one per
    // email, ann's three leads under one
    assert_eq!(
        text("SELECT string_agg(DISTINCT pg_typeof(key)::text, ',') FROM iclear.lead_history").unwrap(),
        "bigint"
    );
    assert_eq!(int("SELECT count(DISTINCT key) FROM iclear.lead_history"), 2);
}

#[pg_test]
fn velocity_composite_keys_and_scope_across_products() {
    setup();
    run("INSERT INTO iclear.product (name) VALUES ('payday_ca')");
    // 3 leads per IP in 5 minutes, whatever their outcome
    history_rule(
        "ip velocity",
        "userIp",
        json!({"count": 3, "seconds": 300, "statuses": ["accepted", "rejected"]}),
    );
    let statuses: Vec<Value> = (1..=5)
        .map(|i| post(&format!("V-{i}"), json!({"userIp": "10.1.1.1"}))["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("accepted"), json!("accepted"), json!("accepted"), json!("rejected"), json!("rejected")]
    );
    // the same person (email and phone) in any product: a lead of payday_ca
    // counts for payday_us
    history_rule(
        "same person anywhere",
        "email+homePhone",
        json!({"count": 1, "seconds": 86400, "scope": "all"}),
    );
    let ca = process(json!({"product": "payday_ca", "lead_id": "X-1",
                            "fields": {"email": "c@x.com", "homePhone": "(555) 010-0199"}}));
    assert_eq!(ca["status"], "accepted");
    let us = post("X-2", json!({"homePhone": "+1 555 010 0199", "email": "C@X.com"}));
    assert_eq!(us["reason"], "same person anywhere", "{us}");
    // only the email matching is not the same person
    let other = post("X-3", json!({"email": "c@x.com", "homePhone": "5550100100"}));
    assert_eq!(other["status"], "accepted");
    // scope product: payday_ca's leads do not count
    run("UPDATE iclear.rule_condition SET value = '{\"count\": 1, \"seconds\": 86400, \"scope\": \"product\"}'
          WHERE parameter = 'email+homePhone'");
    run("DELETE FROM iclear.lead_history WHERE product_id = (SELECT id FROM iclear.product WHERE name = 'payday_us')");
    let us = post("X-4", json!({"homePhone": "5550100199", "email": "c@x.com"}));
    assert_eq!(us["status"], "accepted", "{us}");
    // a named list of products
    run("UPDATE iclear.rule_condition SET value = '{\"count\": 1, \"seconds\": 86400, \"scope\": [\"payday_ca\"]}'
          WHERE parameter = 'email+homePhone'");
    let us = post("X-5", json!({"homePhone": "5550100199", "email": "c@x.com"}));
    assert_eq!(us["reason"], "same person anywhere", "{us}");
}

#[pg_test]
fn a_rolled_back_lead_is_not_in_the_history() {
    setup();
    history_rule("dup", "email", json!({"count": 1, "seconds": 3600}));
    run("CREATE TABLE hleads (id bigserial PRIMARY KEY, email text, age int,
                              iclear_status text, iclear_decision jsonb)");
    run("SELECT iclear.attach('hleads', 'payday_us')");
    // a lead whose row refuses the decision rolls back its subtransaction
    let bad = rule("processing", "breaks the row", 0);
    condition(bad, "lead_body", "age", "equals", json!(1));
    action(bad, "change_lead_body_fields", json!({"fields": {"age": "not a number"}}));
    run("INSERT INTO hleads (email, age) VALUES ('r@x.com', 1)");
    assert_eq!(text("SELECT iclear_status FROM hleads WHERE age = 1").as_deref(), Some("error"));
    assert_eq!(int("SELECT count(*) FROM iclear.lead_history"), 0);
    run("INSERT INTO hleads (email, age) VALUES ('r@x.com', 30)");
    assert_eq!(text("SELECT iclear_status FROM hleads WHERE age = 30").as_deref(), Some("accepted"));
    // (a transaction rolled back by the client: tests/history.rs)
}

#[pg_test]
fn the_history_is_pruned_to_the_longest_window_and_rebuilt() {
    setup();
    let short = history_rule("short", "userIp", json!({"count": 5, "seconds": 300}));
    for i in 0..3 {
        post(&format!("P-{i}"), json!({"userIp": "10.2.2.2", "email": format!("p{i}@x.com")}));
    }
    assert_eq!(int("SELECT count(*) FROM iclear.lead_history"), 3);
    age(600);
    assert_eq!(int("SELECT iclear.prune_history()"), 3, "past the only window");
    // a new, longer rule: rebuilt from the decisions since a time
    history_rule("long", "email", json!({"count": 1, "seconds": 2592000}));
    run(&format!("DELETE FROM iclear.rule WHERE id = {short}"));
    let n = int("SELECT iclear.rebuild_history('payday_us', now() - interval '1 day')");
    assert_eq!(n, 3, "one row per decided lead for the email key");
    assert_eq!(post("P-9", json!({"email": "p1@x.com"}))["reason"], "long");
    let e = err("SELECT iclear.rebuild_history('nope', now())").unwrap();
    assert!(e.contains("\"nope\""), "{e}");
    // maintain() prunes too
    let m = json("SELECT iclear.maintain()");
    assert!(m.get("history_pruned").is_some(), "{m}");
}

#[pg_test]
fn a_history_condition_is_checked_when_saved() {
    setup();
    let r = rule("processing", "bad", 1);
    for (param, op, value, names) in [
        ("email", "greater_or_equal", json!({"seconds": 60}), "value.count"),
        ("email", "greater_or_equal", json!({"count": 1, "seconds": 0}), "value.seconds"),
        ("email", "greater_or_equal", json!({"count": 1, "seconds": 60, "scope": 3}), "value.scope"),
        ("email", "greater_or_equal", json!({"count": 1, "seconds": 60, "statuses": ["sold"]}), "value.statuses"),
        ("email", "greater_or_equal", json!({"count": 1, "seconds": 60, "days": 1}), "value.days"),
        ("email", "contains", json!({"count": 1, "seconds": 60}), "operator"),
        ("email++phone", "greater_or_equal", json!({"count": 1, "seconds": 60}), "parameter"),
    ] {
        let e = err(&format!(
            "INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
             VALUES ({r}, 'history', '{param}', '{op}', '{value}')"
        ))
        .unwrap_or_default();
        assert!(e.contains(names), "{param} {op} {value}: {e}");
    }
}

#[pg_test]
fn the_backtest_replays_the_history() {
    setup();
    for i in 0..4 {
        // two leads of each email
        post(&format!("B-{i}"), json!({"email": format!("b{}@x.com", i / 2)}));
    }
    let b = json(
        "SELECT iclear.backtest('payday_us', now() - interval '1 hour', now() + interval '1 minute',
                '{\"rules\": [{\"name\": \"dup\", \"conditions\": [{\"category\": \"history\", \"parameter\": \"email\",
                   \"operator\": \"greater_or_equal\", \"value\": {\"count\": 1, \"seconds\": 3600}}],
                   \"actions\": [{\"action\": \"stop_processing\", \"config\": {\"message\": \"dup\"}}]}]}')",
    );
    assert_eq!(b["leads"], json!(4), "{b}");
    assert_eq!(b["accepted_to_rejected"], json!(2), "the second of each email: {b}");
}
