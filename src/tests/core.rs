// Processing a lead through the SQL functions: what is persisted, bad
// envelopes and settings refused naming the key, bounded inputs.

#[pg_test]
fn accepts_and_persists_a_lead() {
    setup();
    let d = process(
        json!({"product": "payday_us", "lead_id": "L-1", "publisher_id": 12, "source_id": 77,
                           "fields": {"email": "a@b.com"}}),
    );
    assert_eq!(d["status"], "accepted");
    assert_eq!(d["lead_id"], "L-1");
    assert_eq!(d["fields"]["email"], "a@b.com");
    for key in iclear_engine::pipeline::DECISION_KEYS {
        assert!(d.get(key).is_some(), "decision lacks {key}");
    }
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision WHERE lead_id = 'L-1' AND status = 'accepted'"),
        1
    );
    assert_eq!(int("SELECT count(*) FROM iclear.full_log WHERE lead_id = 'L-1' AND kind = 'decision' AND outcome = 'accepted'"), 1);
    // the source was registered on first sight, with its publisher
    assert_eq!(
        int("SELECT publisher_id FROM iclear.source WHERE id = 77"),
        12
    );
    // the decision names the configuration it was made with (issue 25 item 10)
    assert_eq!(
        d["config_version"].as_i64(),
        Some(int("SELECT version FROM iclear.config_version"))
    );
    // iclear.process is the same function
    let d2 = json("SELECT iclear.process('{\"product\": \"payday_us\"}')");
    assert_eq!(
        d2["lead_id"].as_str().unwrap().len(),
        36,
        "a uuid is generated"
    );
}

#[pg_test]
fn bad_envelopes_are_errors_naming_the_key() {
    setup();
    let cases = [
        (
            r#"{"product": "nope"}"#,
            "\"product\" names unknown product",
        ),
        (
            r#"{"product": "payday_us", "fields": "x"}"#,
            "\"fields\" must be a JSON object",
        ),
        (
            r#"{"product": "payday_us", "publisher_id": "twelve"}"#,
            "\"publisher_id\" must be an integer",
        ),
        (r#"{"product": "payday_us", "stage": "final"}"#, "\"stage\""),
        (r#"{"fields": {}}"#, "\"product\" is required"),
    ];
    for (lead, msg) in cases {
        let e = err(&format!("SELECT iclear_process('{lead}')")).unwrap_or_default();
        assert!(e.contains(msg), "{lead}: got {e:?}");
    }
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision"),
        0,
        "nothing persisted for a refused lead"
    );
}

/// SQLSTATE and message of a statement that must fail.
fn refusal(sql: &str) -> (String, String) {
    run(
        "CREATE OR REPLACE FUNCTION pg_temp.refusal(q text) RETURNS text[] LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN ARRAY[SQLSTATE, SQLERRM]; END $$",
    );
    let r = Spi::get_one_with_args::<Vec<String>>("SELECT pg_temp.refusal($1)", &[sql.into()])
        .unwrap()
        .unwrap_or_else(|| panic!("{sql}: not refused"));
    (r[0].clone(), r[1].clone())
}

/// Review finding 10: a lead past a limit is refused with SQLSTATE 22023
/// and an error naming the limit; an attached row past one is kept with
/// status `error`; long values are stored by their digest, so no index
/// refuses them; nothing crashes.
#[pg_test]
fn bounded_inputs_are_refused_naming_the_limit() {
    setup();
    let cases = [
        (
            "jsonb_build_object('product', 'payday_us', 'fields', jsonb_build_object('note', repeat('x', 2 << 20)))",
            "over the limit of 1048576 bytes",
        ),
        (
            "jsonb_build_object('product', 'payday_us', 'fields', jsonb_build_object('note', repeat('x', 100 << 10)))",
            "\"fields.note\" is 102400 bytes, over the limit of 65536 bytes per value",
        ),
        (
            "(SELECT jsonb_build_object('product', 'payday_us', 'fields', jsonb_object_agg('f' || g, g))
                FROM generate_series(1, 10000) g)",
            "\"fields\" has 10000 keys, over the limit of 1000",
        ),
        (
            "jsonb_build_object('product', 'payday_us', 'params', (repeat('[', 1000) || repeat(']', 1000))::jsonb)",
            "nested deeper than the limit of 128 levels",
        ),
        (
            "jsonb_build_object('product', 'payday_us', 'lead_id', repeat('7', 1000))",
            "\"lead_id\" is longer than the limit of 256 bytes",
        ),
    ];
    for (lead, msg) in cases {
        let (code, e) = refusal(&format!("SELECT iclear_process({lead})"));
        assert_eq!(code, "22023", "{e}");
        assert!(e.contains(msg), "{msg}: got {e:?}");
    }
    assert_eq!(int("SELECT count(*) FROM iclear.decision"), 0);

    // long values: a DNPL, a counter and a list addition keyed by a
    // 3,000-character email (btree refuses keys past about 2,700 bytes)
    let long = format!("{}@example.com", "a".repeat(3000));
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('seen', 'dnpl', 'email')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p");
    let r = rule("processing", "remember", 1);
    condition(
        r,
        "counter",
        "per_email:{%productField_email%}",
        "greater",
        json!(0),
    );
    action(r, "stop_processing", json!({"message": "seen before"}));
    let r2 = rule("processing", "count", 2);
    action(
        r2,
        "increment_counter",
        json!({"counter": "per_email", "key": "{%productField_email%}"}),
    );
    let d = process(json!({"product": "payday_us", "fields": {"email": long}}));
    assert_eq!(d["status"], "accepted", "{d}");
    let d = process(json!({"product": "payday_us", "fields": {"email": long}}));
    assert_eq!(
        d["reason"], "seen before",
        "the counter counted the long key: {d}"
    );
    run(&format!(
        "INSERT INTO iclear.list_entry (list_id, value) SELECT id, ' {} ' FROM iclear.list WHERE name = 'seen'",
        long.to_uppercase()
    ));
    assert!(text("SELECT value FROM iclear.list_entry")
        .unwrap()
        .starts_with("sha256:"));
    run("DELETE FROM iclear.rule");
    let d = process(json!({"product": "payday_us", "fields": {"email": long}}));
    assert_eq!(
        d["rejected_by"]["kind"], "list",
        "the stored digest matches: {d}"
    );
    // a value with a trailing tab, saved in SQL, matches as the engine trims it
    run("INSERT INTO iclear.list_entry (list_id, value) SELECT id, E'tab@example.com\t' FROM iclear.list");
    let d = process(json!({"product": "payday_us", "fields": {"email": "tab@example.com"}}));
    assert_eq!(d["rejected_by"]["kind"], "list", "{d}");

    // an attached row past a limit is kept, with an error naming it
    run(
        "CREATE TABLE big_leads (id bigserial PRIMARY KEY, note text, tpar jsonb,
                                 iclear_status text, iclear_decision jsonb)",
    );
    run(r#"SELECT iclear.attach('big_leads', 'payday_us', '{"params_column": "tpar"}')"#);
    run(
        "INSERT INTO big_leads (note, tpar) VALUES (repeat('x', 100 << 10), NULL), ('fine', NULL),
                (NULL, (repeat('{\"a\": ', 1000) || '1' || repeat('}', 1000))::jsonb)",
    );
    assert_eq!(
        text("SELECT string_agg(iclear_status, ',' ORDER BY id) FROM big_leads").unwrap(),
        "error,accepted,error"
    );
    let reason = text("SELECT iclear_decision->>'reason' FROM big_leads WHERE id = 1").unwrap();
    assert!(reason.contains("limit of 65536 bytes"), "{reason}");
    let reason = text("SELECT iclear_decision->>'reason' FROM big_leads WHERE id = 3").unwrap();
    assert!(reason.contains("limit of 128 levels"), "{reason}");
}

#[pg_test]
fn invalid_settings_are_refused_naming_the_setting() {
    setup();
    let r = rule("processing", "r1", 1);
    let pre = rule("pre_validation", "p1", 1);
    let cases = [
        (format!("INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value) VALUES ({r}, 'lead_body', 'email', 'like', '\"x\"')"), "rule_condition.operator"),
        (format!("INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value) VALUES ({r}, 'lead_body', 'email', 'regex', '\"(\"')"), "rule_condition.value: bad regex"),
        (format!("INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value) VALUES ({r}, 'planet', 'x', 'equals', '1')"), "rule_condition.category"),
        (format!("INSERT INTO iclear.rule_action (rule_id, action, config) VALUES ({r}, 'lead_tags', '{{\"mode\": \"add\", \"tag\": [\"x\"]}}')"), "rule_action.config"),
        (format!("INSERT INTO iclear.rule_action (rule_id, action, config) VALUES ({pre}, 'lead_tags', '{{\"mode\": \"add\", \"tags\": [\"x\"]}}')"), "not allowed in pre_validation"),
        (format!("INSERT INTO iclear.rule_action (rule_id, action, config) VALUES ({r}, 'add_to_list', '{{\"list_ids\": [999]}}')"), "unknown list id 999"),
        (format!("UPDATE iclear.rule SET logical_operator = 'xor' WHERE id = {r}"), "rule.logical_operator"),
        ("INSERT INTO iclear.product (name, kind) VALUES ('x', 'auction')".to_string(), "product.kind"),
        ("INSERT INTO iclear.list (name, kind, field) VALUES ('l', 'maybe', 'email')".to_string(), "list.kind"),
        ("INSERT INTO iclear.service (name, endpoint) VALUES ('ip_analysis', 'ftp://x')".to_string(), "service.endpoint"),
    ];
    for (sql, msg) in &cases {
        let e = err(sql).unwrap_or_default();
        assert!(e.contains(msg), "{sql}: got {e:?}");
    }
    run("INSERT INTO iclear.service (name) VALUES ('ip_analysis')");
    let e = err("INSERT INTO iclear.global_rule (product_id, service, settings)
                 SELECT id, 'ip_analysis', '{\"api_key\": \"k\", \"sync_timeout_s\": 9}' FROM iclear.product").unwrap();
    assert!(e.contains("global_rule.settings.sync_timeout_s"), "{e}");
    assert_eq!(
        text("SELECT endpoint FROM iclear.service WHERE name = 'ip_analysis'").unwrap(),
        "https://ipqualityscore.com/api/json/ip"
    );
    // moving a rule to a stage that does not allow its actions is refused
    action(r, "lead_tags", json!({"mode": "add", "tags": ["t"]}));
    let e = err(&format!(
        "UPDATE iclear.rule SET stage = 'redirect' WHERE id = {r}"
    ))
    .unwrap();
    assert!(e.contains("not allowed in redirect"), "{e}");
}

#[pg_test]
fn the_stored_decision_leaves_out_what_the_envelope_holds() {
    setup();
    let r = rule("processing", "fix state", 1);
    condition(r, "lead_body", "state", "equals", json!("ca"));
    action(
        r,
        "change_lead_body_fields",
        json!({"fields": {"state": "CA"}}),
    );
    let same = process(json!({"product": "payday_us", "lead_id": "S1", "fields": {"state": "NY"}}));
    assert_eq!(
        same["fields"]["state"], "NY",
        "the caller gets the whole decision"
    );
    let changed =
        process(json!({"product": "payday_us", "lead_id": "S2", "fields": {"state": "ca"}}));
    assert_eq!(changed["fields"]["state"], "CA");
    let stored = |id: &str| {
        json(&format!(
            "SELECT decision::jsonb FROM iclear.decision WHERE lead_id = '{id}'"
        ))
    };
    let s1 = stored("S1");
    assert!(
        s1.get("fields").is_none() && s1.get("queued").is_none() && s1.get("reason").is_none(),
        "{s1}"
    );
    assert_eq!(s1["status"], "accepted");
    assert_eq!(
        stored("S2")["fields"]["state"],
        "CA",
        "changed fields are kept"
    );
}
