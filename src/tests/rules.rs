// Advanced Rules at the SQL tier: lists, stages and the configuration
// cache, logic and targeting, counters, rule caps.

#[pg_test]
fn dnpl_and_pl_reject() {
    setup();
    run("INSERT INTO iclear.list (id, name, kind, field) VALUES (1, 'bad emails', 'dnpl', 'email'), (2, 'known states', 'pl', 'state')");
    run("INSERT INTO iclear.list_product SELECT l, p.id FROM iclear.product p, unnest(ARRAY[1, 2]) l");
    run("INSERT INTO iclear.list_entry (list_id, value) VALUES (1, '  Fraud@Example.com '), (2, 'ca'), (2, 'ny')");
    assert_eq!(
        text("SELECT value FROM iclear.list_entry WHERE list_id = 1").unwrap(),
        "fraud@example.com"
    );
    let d = process(
        json!({"product": "payday_us", "fields": {"email": "FRAUD@example.com", "state": "CA"}}),
    );
    assert_eq!(d["status"], "rejected");
    assert_eq!(
        d["rejected_by"],
        json!({"kind": "list", "id": 1, "name": "bad emails"})
    );
    let d = process(
        json!({"product": "payday_us", "fields": {"email": "ok@example.com", "state": "TX"}}),
    );
    assert_eq!(d["status"], "rejected");
    assert_eq!(d["rejected_by"]["id"], 2);
    let d = process(json!({"product": "payday_us", "fields": {"email": "ok@example.com"}}));
    assert_eq!(d["rejected_by"]["id"], 2, "absent PL field rejects");
    let d = process(
        json!({"product": "payday_us", "fields": {"email": "ok@example.com", "state": "ny"}}),
    );
    assert_eq!(d["status"], "accepted");

    // more lists than one probe statement holds (8): the 11th still counts
    run("INSERT INTO iclear.list (id, name, kind, field)
         SELECT 100 + g, 'dnpl ' || g, 'dnpl', 'f' || g FROM generate_series(1, 10) g");
    run("INSERT INTO iclear.list_product SELECT 100 + g, p.id FROM iclear.product p, generate_series(1, 10) g");
    run("INSERT INTO iclear.list_entry (list_id, value) VALUES (110, 'hit'), (101, 'other')");
    let mut fields = json!({"email": "ok@example.com", "state": "ny"});
    for g in 1..=10 {
        fields[format!("f{g}")] = json!(if g == 10 { "hit" } else { "miss" });
    }
    let d = process(json!({"product": "payday_us", "fields": fields}));
    assert_eq!(d["rejected_by"]["id"], 110, "{d}");
}

#[pg_test]
fn rules_run_by_stage_and_the_cache_follows_changes() {
    setup();
    let lead = json!({"product": "payday_us", "publisher_id": 5, "fields": {"email": "x@mailinator.com", "amount": "900"},
                      "params": {"sub1": "a"}});
    assert_eq!(
        process(lead.clone())["status"],
        "accepted",
        "no rules yet (and config now cached)"
    );

    let pre = rule("pre_validation", "normalise sub1", 1);
    action(
        pre,
        "change_input_data",
        json!({"params": {"sub1": "pub-{%publisherId%}"}}),
    );
    let tag = rule("processing", "tag big", 1);
    condition(tag, "lead_body", "amount", "greater_or_equal", json!(500));
    action(tag, "lead_tags", json!({"mode": "add", "tags": ["big"]}));
    action(
        tag,
        "change_lead_body_fields",
        json!({"fields": {"note": "{%tPar_sub1%}"}}),
    );
    let disposable = rule("processing", "disposable email", 2);
    condition(
        disposable,
        "lead_body",
        "email",
        "ends_with",
        json!("@mailinator.com"),
    );
    condition(disposable, "rule", &tag.to_string(), "equals", json!(true));
    action(
        disposable,
        "stop_processing",
        json!({"message": "disposable {%productField_email%}"}),
    );
    let never = rule("processing", "after the reject", 3);
    action(
        never,
        "lead_tags",
        json!({"mode": "add", "tags": ["never"]}),
    );
    let after = rule("after_processing", "mark rejects", 1);
    condition(after, "lead_param", "status", "equals", json!("rejected"));
    action(
        after,
        "change_response_parameter",
        json!({"name": "why", "value": "filtered"}),
    );

    let d = process(lead.clone());
    assert_eq!(d["status"], "rejected", "{d}");
    assert_eq!(d["reason"], "disposable x@mailinator.com");
    assert_eq!(
        d["rejected_by"],
        json!({"kind": "rule", "id": disposable, "name": "disposable email"})
    );
    assert_eq!(d["params"]["sub1"], "pub-5");
    assert_eq!(d["fields"]["note"], "pub-5");
    assert_eq!(d["tags"], json!(["big"]));
    assert_eq!(d["response"]["why"], "filtered");
    let trace = d["trace"].as_array().unwrap();
    assert!(
        trace.iter().all(|t| t["rule_id"] != never),
        "rules after a reject do not run"
    );
    let t = trace.iter().find(|t| t["rule_id"] == tag).unwrap();
    assert_eq!(t["conditions"][0]["actual"], "900");
    assert_eq!(t["conditions"][0]["result"], true);

    // pausing the rule is seen at once (configuration version moved)
    run(&format!(
        "UPDATE iclear.rule SET status = 'paused' WHERE id = {disposable}"
    ));
    assert_eq!(process(lead)["status"], "accepted");
    assert!(
        int("SELECT count(*) FROM iclear.filter_log_all WHERE kind = 'rule' AND outcome = 'reject'")
            == 1
    );
}

#[pg_test]
fn or_logic_targeting_counters_and_stop_rules() {
    setup();
    let r = rule("processing", "or rule", 1);
    run(&format!("UPDATE iclear.rule SET logical_operator = 'or', publisher_ids = '{{1,2}}', method = 'FORM' WHERE id = {r}"));
    condition(r, "lead_body", "state", "in", json!(["ca", "ny"]));
    condition(r, "lead_body", "age", "less", json!(21));
    action(
        r,
        "increment_counter",
        json!({"counter": "seen", "key": "{%productField_email%}"}),
    );
    action(r, "stop_processing_rules", json!({}));
    let later = rule("processing", "later", 2);
    action(
        later,
        "lead_tags",
        json!({"mode": "add", "tags": ["later"]}),
    );
    let check = rule("processing", "repeat", 0);
    condition(
        check,
        "counter",
        "seen:{%productField_email%}",
        "greater_or_equal",
        json!(2),
    );
    action(check, "stop_processing", json!({}));

    let lead = |publisher: i64, method: &str, state: &str| {
        process(
            json!({"product": "payday_us", "publisher_id": publisher, "method": method,
                       "fields": {"email": "a@b.c", "state": state, "age": 40}}),
        )
    };
    let d = lead(1, "FORM", "TX");
    assert_eq!(d["tags"], json!(["later"]), "neither OR condition holds");
    let d = lead(1, "FORM", "CA");
    assert_eq!(d["tags"], json!([]), "stop_processing_rules ends the stage");
    let d = lead(3, "FORM", "CA");
    assert_eq!(d["tags"], json!(["later"]), "publisher 3 is not targeted");
    let d = lead(2, "POST", "CA");
    assert_eq!(d["tags"], json!(["later"]), "method POST is not targeted");
    assert_eq!(
        int("SELECT value FROM iclear.counter WHERE name = 'seen' AND key = 'a@b.c'"),
        1
    );
    lead(2, "FORM", "NY");
    assert_eq!(
        lead(1, "FORM", "TX")["status"],
        "rejected",
        "the counter reached 2"
    );
}

#[pg_test]
fn rule_daily_cap_stops_matching_at_the_limit() {
    setup();
    let r = rule("processing", "capped", 1);
    run(&format!(
        "UPDATE iclear.rule SET daily_limit = 2, cap_counts = 'matches' WHERE id = {r}"
    ));
    action(r, "lead_tags", json!({"mode": "add", "tags": ["capped"]}));
    let tags: Vec<Value> = (0..4)
        .map(|_| process(json!({"product": "payday_us"}))["tags"].clone())
        .collect();
    assert_eq!(
        tags,
        vec![json!(["capped"]), json!(["capped"]), json!([]), json!([])]
    );
    assert_eq!(
        int("SELECT sum(used)::int8 FROM iclear.cap_use WHERE scope = 'rule' AND period = 'daily'"),
        2
    );
}

/// A lead whose processing is rolled back (here: its row refuses the
/// decision, so the trigger's subtransaction aborts and the row is kept
/// as `error`) gives its cap slot back.
#[pg_test]
fn a_rolled_back_subtransaction_returns_its_cap_slot() {
    setup();
    run(
        "CREATE TABLE capped_leads (id bigserial PRIMARY KEY, age int, email text,
                                     iclear_status text, iclear_decision jsonb)",
    );
    run("SELECT iclear.attach('capped_leads', 'payday_us')");
    let r = rule("processing", "once a day", 1);
    run(&format!(
        "UPDATE iclear.rule SET daily_limit = 1, cap_counts = 'matches' WHERE id = {r}"
    ));
    action(r, "lead_tags", json!({"mode": "add", "tags": ["slot"]}));
    let bad = rule("processing", "breaks the row", 2);
    condition(bad, "lead_body", "email", "equals", json!("bad@x.com"));
    action(
        bad,
        "change_lead_body_fields",
        json!({"fields": {"age": "not a number"}}),
    );
    run("INSERT INTO capped_leads (age, email) VALUES (30, 'bad@x.com')");
    assert_eq!(
        text("SELECT iclear_status FROM capped_leads WHERE email = 'bad@x.com'").as_deref(),
        Some("error")
    );
    run("INSERT INTO capped_leads (age, email) VALUES (30, 'good@x.com')");
    assert_eq!(
        text("SELECT coalesce(iclear_decision->'tags', '[]')::text FROM capped_leads WHERE email = 'good@x.com'")
            .as_deref(),
        Some(r#"["slot"]"#),
        "the slot the failed lead took came back"
    );
    run("INSERT INTO capped_leads (age, email) VALUES (30, 'late@x.com')");
    assert_eq!(
        text("SELECT coalesce(iclear_decision->'tags', '[]')::text FROM capped_leads WHERE email = 'late@x.com'")
            .as_deref(),
        Some("[]"),
        "and is gone now"
    );
}
