// Changing rules safely (issue 14): shadow rules, outcome feedback, the
// audit trail, configuration as code and backtests.

/// A shadow rule is evaluated on live leads and logged with its trace;
/// its actions never apply, the decision is as if it did not exist, and
/// shadow_report counts what it would have done. Promoting it is an
/// UPDATE (issue 14 item 2).
#[pg_test]
fn shadow_rules_are_logged_never_applied_and_promoted_by_update() {
    setup();
    let live = rule("processing", "tag ny", 1);
    condition(live, "lead_body", "state", "equals", json!("NY"));
    action(live, "lead_tags", json!({"mode": "add", "tags": ["ny"]}));
    let draft = rule("processing", "draft: no ny", 2);
    condition(draft, "lead_body", "state", "equals", json!("NY"));
    action(
        draft,
        "increment_counter",
        json!({"counter": "drafts", "key": "x"}),
    );
    action(draft, "stop_processing", json!({"message": "no NY"}));
    run(&format!(
        "UPDATE iclear.rule SET status = 'shadow', daily_limit = 0 WHERE id = {draft}"
    ));
    let lead = |id: &str, state: &str| {
        process(json!({"product": "payday_us", "lead_id": id, "fields": {"state": state}}))
    };
    let d = lead("S1", "NY");
    assert_eq!(d["status"], "accepted", "{d}");
    assert_eq!(d["tags"], json!(["ny"]));
    assert!(
        !d["trace"].to_string().contains("draft"),
        "the decision is as if the shadow rule did not exist: {d}"
    );
    lead("S2", "CA");
    let log = json("SELECT to_jsonb(f) FROM iclear.filter_log_all f WHERE outcome = 'shadow'");
    assert_eq!(
        (log["lead_id"].as_str(), log["ref_id"].as_i64()),
        (Some("S1"), Some(draft))
    );
    assert_eq!(log["detail"]["would"], "reject");
    assert_eq!(log["detail"]["trace"]["conditions"][0]["actual"], "NY");
    assert_eq!(
        int("SELECT count(*) FROM iclear.counter"),
        0,
        "no action ran"
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.filter_log_all WHERE outcome = 'cap_reached'"),
        0
    );
    let report = json("SELECT to_jsonb(r) FROM iclear.shadow_report r");
    assert_eq!(
        (
            report["matched"].as_i64(),
            report["would_reject"].as_i64(),
            report["would_reject_accepted"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(report["status"], "shadow");
    // promoted: it rejects (its daily_limit of 0 now applies too)
    run(&format!(
        "UPDATE iclear.rule SET status = 'active', daily_limit = NULL WHERE id = {draft}"
    ));
    assert_eq!(lead("S3", "NY")["status"], "rejected");
    let e = err(&format!(
        "UPDATE iclear.rule SET status = 'draft' WHERE id = {draft}"
    ))
    .unwrap_or_default();
    assert!(
        e.contains("rule.status must be active, paused or shadow"),
        "{e}"
    );
}

/// Buyers' feedback is stored, shown by lead_info, refused with the
/// expected kinds for a bad kind, and rule_quality compares a rule's
/// feedback rates with the product's (issue 14 item 3).
#[pg_test]
fn feedback_and_rule_quality() {
    setup();
    let r = rule("processing", "tag ny", 1);
    condition(r, "lead_body", "state", "equals", json!("NY"));
    action(r, "lead_tags", json!({"mode": "add", "tags": ["ny"]}));
    for (i, state) in ["NY", "NY", "CA", "CA"].iter().enumerate() {
        process(
            json!({"product": "payday_us", "lead_id": format!("Q{i}"), "fields": {"state": state}}),
        );
    }
    run("CREATE ROLE iclear_test_ops LOGIN IN ROLE iclear_operator");
    run("SET LOCAL ROLE iclear_test_ops");
    run("SELECT iclear.feedback('Q0', 'return', 'bad phone')");
    run("SELECT iclear.feedback('Q2', 'conversion')");
    let e = err("SELECT iclear.feedback('Q1', 'refund')").unwrap_or_default();
    assert!(e.contains("kind 'refund' is not a feedback kind"), "{e}");
    let e = err("SELECT iclear.feedback('nope', 'return')").unwrap_or_default();
    assert!(e.contains("names no processed lead"), "{e}");
    let q = json("SELECT to_jsonb(q) FROM iclear.rule_quality q");
    run("RESET ROLE");
    let info = json("SELECT iclear.lead_info('Q0')");
    assert_eq!(info["feedback"][0]["kind"], "return");
    assert_eq!(info["feedback"][0]["reason"], "bad phone");
    assert_eq!(info["feedback"][0]["reported_by"], "iclear_test_ops");
    assert_eq!(
        (
            q["rule_id"].as_i64(),
            q["matched"].as_i64(),
            q["returns"].as_i64(),
            q["conversions"].as_i64()
        ),
        (Some(r), Some(2), Some(1), Some(0)),
        "{q}"
    );
    assert_eq!(q["return_rate"], json!(0.5));
    assert_eq!(q["baseline_return_rate"], json!(0.25));
    assert_eq!(q["baseline_conversion_rate"], json!(0.25));
}

/// Every change of a configuration table is in config_audit with the
/// login role, credentials masked; config_history lists a product's
/// changes in order, deleted rules included (issue 14 item 4).
#[pg_test]
fn configuration_changes_are_audited_with_credentials_masked() {
    setup();
    run("CREATE ROLE iclear_test_ops LOGIN IN ROLE iclear_operator");
    run("SET LOCAL ROLE iclear_test_ops");
    let r = rule("processing", "audited", 1);
    condition(r, "lead_body", "state", "equals", json!("NY"));
    run(&format!(
        "UPDATE iclear.rule SET name = 'audited twice' WHERE id = {r}"
    ));
    run(&format!(
        "UPDATE iclear.rule SET name = 'audited twice' WHERE id = {r}"
    ));
    run("RESET ROLE");
    global("ip_analysis", json!({"api_key": "secret-key-123"}), "");
    run(&format!("DELETE FROM iclear.rule WHERE id = {r}"));
    run("INSERT INTO iclear.product (name) VALUES ('other')");
    let all = text("SELECT string_agg(old::text || new::text, ' ') FROM iclear.config_audit")
        .unwrap_or_default();
    assert!(!all.contains("secret-key-123"), "{all}");
    assert_eq!(
        json("SELECT new FROM iclear.config_audit WHERE table_name = 'global_rule_credential'")
            ["credentials"],
        json!({"api_key": "***"})
    );
    let history = json(
        "SELECT jsonb_agg(jsonb_build_array(table_name, op, role, coalesce(new, old) ->> 'name')) FROM iclear.config_history('payday_us')",
    );
    let steps: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h[0].as_str().unwrap(),
                h[1].as_str().unwrap(),
                h[2].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            "product INSERT postgres",
            "rule INSERT iclear_test_ops",
            "rule_condition INSERT iclear_test_ops",
            "rule UPDATE iclear_test_ops",
            // the validation trigger moves the key before the rule is written
            "global_rule_credential INSERT postgres",
            "global_rule INSERT postgres",
            "rule DELETE postgres",
            "rule_condition DELETE postgres",
        ],
        "an UPDATE that changes nothing is not recorded; another product's changes are not listed"
    );
    assert_eq!(history[3][3], "audited twice");
    // nobody but the owner edits the trail
    run("SET LOCAL ROLE iclear_test_ops");
    let e = err("DELETE FROM iclear.config_audit").unwrap_or_default();
    run("RESET ROLE");
    assert!(e.contains("permission denied"), "{e}");
}
/// A product with every kind of object (categories, targeting, caps, a
/// rule condition on another rule, list and global-rule references, a
/// field, a global cap).
fn product_to_export() -> i64 {
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('bad emails', 'dnpl', 'email'), ('risky ips', 'dnpl', 'userIp')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE l.name = 'bad emails'");
    run("INSERT INTO iclear.rule_category (product_id, stage, name, position) SELECT id, 'processing', 'fraud', 1 FROM iclear.product");
    let risky = int("SELECT id FROM iclear.list WHERE name = 'risky ips'");
    let g = global(
        "ip_analysis",
        json!({"api_key": "secret-k", "add_to_list": {"fraud_score_gte": 90, "list_ids": [risky]}}),
        "",
    );
    run(&format!(
        "UPDATE iclear.global_rule SET execution = 'on_demand', lookup_percent = 0 WHERE id = {g}"
    ));
    let ny = rule("processing", "tag ny", 1);
    run(&format!(
        "UPDATE iclear.rule SET category_id = (SELECT id FROM iclear.rule_category), all_new = true,
                daily_limit = 5, publisher_ids = '{{1,2}}' WHERE id = {ny}"
    ));
    condition(ny, "lead_body", "state", "equals", json!("NY"));
    action(ny, "lead_tags", json!({"mode": "add", "tags": ["ny"]}));
    action(
        ny,
        "add_to_list",
        json!({"list_ids": [risky], "field": "userIp"}),
    );
    action(ny, "run_third_party_service", json!({"global_rule_id": g}));
    let after = rule("after_processing", "after ny", 1);
    condition(after, "rule", &ny.to_string(), "equals", json!(true));
    action(
        after,
        "lead_tags",
        json!({"mode": "add", "tags": ["seen ny"]}),
    );
    run("INSERT INTO iclear.product_field (product_id, name, type, required) SELECT id, 'email', 'email', true FROM iclear.product");
    run("INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'daily', 1000)");
    g
}

fn import(doc: &Value, dry_run: bool) -> Value {
    Spi::get_one_with_args::<JsonB>(
        "SELECT iclear.import_config($1, $2)",
        &[JsonB(doc.clone()).into(), dry_run.into()],
    )
    .unwrap()
    .unwrap()
    .0
}

/// Configuration as code: an export references objects by name and holds
/// no credential; a dry run plans and changes nothing; an import applies
/// the plan, keeps stored credentials, and round-trips into an empty
/// database; a bad document is refused naming the path (issue 14 item 5).
#[pg_test]
fn export_and_import_round_trip_with_a_plan() {
    setup();
    let g = product_to_export();
    let doc = json("SELECT iclear.export_config('payday_us')");
    let text_of = doc.to_string();
    assert!(
        !text_of.contains("secret-k") && !text_of.contains("\"id\""),
        "{doc:#}"
    );
    let ny = &doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tag ny")
        .unwrap()
        .clone();
    assert_eq!(ny["category"], "fraud");
    assert_eq!(ny["actions"][1]["config"]["lists"], json!(["risky ips"]));
    assert_eq!(ny["actions"][2]["config"]["global_rule"], "ip_analysis");
    assert!(
        ny["all_new_since"].is_string(),
        "All New keeps its date: {ny}"
    );
    let after = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "after ny")
        .unwrap();
    assert_eq!(after["conditions"][0]["parameter"], "tag ny");
    assert_eq!(
        doc["global_rules"][0]["settings"]["add_to_list"]["lists"],
        json!(["risky ips"])
    );
    assert_eq!(
        doc["lists"],
        json!([{"name": "bad emails", "kind": "dnpl", "field": "email", "product_level": true},
               {"name": "risky ips", "kind": "dnpl", "field": "userIp", "product_level": false}])
    );
    // the same document: nothing to do
    let plan = import(&doc, true);
    assert_eq!(
        (
            plan["added"].clone(),
            plan["changed"].clone(),
            plan["removed"].clone()
        ),
        (json!([]), json!([]), json!([])),
        "{plan}"
    );
    // a changed document: planned, not applied by a dry run
    let mut changed = doc.clone();
    let rules = changed["rules"].as_array_mut().unwrap();
    let at = rules.iter().position(|r| r["name"] == "tag ny").unwrap();
    rules[at]["status"] = "shadow".into();
    rules.retain(|r| r["name"] != "after ny");
    rules.push(json!({"name": "new one", "stage": "processing", "position": 9,
                      "conditions": [{"category": "random", "operator": "less", "value": 10}],
                      "actions": [{"action": "lead_tags", "config": {"mode": "add", "tags": ["sample"]}}]}));
    changed["fields"] = json!([]);
    let audit_before = int("SELECT count(*) FROM iclear.config_audit");
    let plan = import(&changed, true);
    assert_eq!(plan["added"], json!(["rules new one"]), "{plan}");
    assert_eq!(plan["changed"], json!(["rules tag ny"]), "{plan}");
    assert_eq!(
        plan["removed"],
        json!(["fields email", "rules after ny"]),
        "{plan}"
    );
    assert_eq!(
        json("SELECT iclear.export_config('payday_us')"),
        doc,
        "a dry run changes nothing"
    );
    assert_eq!(
        int("SELECT count(*) FROM iclear.config_audit"),
        audit_before
    );
    // applied, by an operator (not a superuser)
    run("CREATE ROLE iclear_test_ops LOGIN IN ROLE iclear_operator");
    run("SET LOCAL ROLE iclear_test_ops");
    let applied = import(&changed, false);
    run("RESET ROLE");
    assert_eq!(applied["dry_run"], false);
    let now = json("SELECT iclear.export_config('payday_us')");
    let new_one = now["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "new one")
        .unwrap()
        .clone();
    assert_eq!(new_one["actions"][0]["config"]["tags"], json!(["sample"]));
    assert_eq!(
        import(&now, true)["changed"],
        json!([]),
        "applying again changes nothing"
    );
    assert_eq!(
        text(&format!("SELECT credentials ->> 'api_key' FROM iclear.global_rule_credential WHERE global_rule_id = {g}")).unwrap(),
        "secret-k",
        "the stored credential is kept"
    );
    // into an empty database: the same document back
    run("DELETE FROM iclear.product; DELETE FROM iclear.list; DELETE FROM iclear.global_cap");
    import(&doc, false);
    assert_eq!(json("SELECT iclear.export_config('payday_us')"), doc);
    // bad documents: the path of the offending key
    for (bad, want) in [
        (
            json!({"product": {"name": "payday_us"}, "rules": [{"name": "x", "colour": "red"}]}),
            "rules[0].colour is not a key of this object",
        ),
        (
            json!({"product": {"name": "payday_us"}, "rules": [{"name": "x", "actions": [{"action": "lead_tags", "config": {"mode": "sideways"}}]}]}),
            "rules[0].actions[0]: ",
        ),
        (
            json!({"product": {"name": "payday_us"}, "rules": [{"name": "x", "actions": [{"action": "add_to_list", "config": {"lists": ["nope"]}}]}]}),
            "rules[0].actions[0].config.lists: no list is named 'nope'",
        ),
        (
            json!({"product": {"name": "payday_us"}, "rules": [{"name": "x", "conditions": [{"category": "rule", "parameter": "ghost", "operator": "equals", "value": true}]}]}),
            "rules[0].conditions[0].parameter: no rule of 'payday_us' is named 'ghost'",
        ),
        (json!({"product": {}}), "product.name is required"),
        (
            json!({"product": {"name": "payday_us"}, "fields": {}}),
            "fields must be an array",
        ),
    ] {
        let e = err(&format!(
            "SELECT iclear.import_config('{}', false)",
            bad.to_string().replace('\'', "''")
        ))
        .unwrap_or_default();
        assert!(e.contains(want), "{bad}: {e}");
    }
    assert_eq!(
        json("SELECT iclear.export_config('payday_us')"),
        doc,
        "a refused import changes nothing"
    );
}
/// A backtest replays the window's stored leads against the
/// configuration with changes: each lead's recorded answers stand in for
/// lookups, and nothing is written or sent. Without changes, the replay
/// agrees with every recorded decision (issue 14 item 1).
#[pg_test]
fn backtest_replays_stored_leads_without_side_effects() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "ip_analysis", "ip", 0.005);
    global(
        "ip_analysis",
        json!({"api_key": "k", "reject_fraud_score_gte": 90}),
        "",
    );
    let ny = rule("processing", "tag ny", 1);
    condition(ny, "lead_body", "state", "equals", json!("NY"));
    action(ny, "lead_tags", json!({"mode": "add", "tags": ["ny"]}));
    action(
        ny,
        "increment_counter",
        json!({"counter": "ny", "key": "{%date%}"}),
    );
    let second = rule("processing", "second ny of the day", 2);
    condition(second, "lead_body", "state", "equals", json!("NY"));
    condition(second, "counter", "ny:{%date%}", "greater", json!(1));
    action(
        second,
        "stop_processing",
        json!({"message": "enough NY today"}),
    );
    // .95 scores 95: rejected by the lookup; B4 is the second NY lead
    for (id, state, ip) in [
        ("B1", "CA", "10.0.0.1"),
        ("B2", "CA", "10.0.0.2"),
        ("B3", "NY", "10.0.0.3"),
        ("B4", "NY", "10.0.0.4"),
        ("B5", "TX", "10.0.0.95"),
        ("B6", "TX", "10.0.0.6"),
    ] {
        process(json!({"product": "payday_us", "lead_id": id,
                   "fields": {"state": state, "userIp": ip, "homePhone": "5550100123"}}));
    }
    assert_eq!(
        text("SELECT string_agg(status, ',' ORDER BY lead_id) FROM iclear.decision").unwrap(),
        "accepted,accepted,accepted,rejected,rejected,accepted"
    );
    run("SELECT iclear.feedback('B1', 'return'), iclear.feedback('B2', 'conversion')");
    let state = || {
        text("SELECT concat_ws(',', (SELECT count(*) FROM iclear.decision), (SELECT count(*) FROM iclear.filter_log),
                                    (SELECT count(*) FROM iclear.job), (SELECT count(*) FROM iclear.counter_delta),
                                    (SELECT count(*) FROM iclear.lookup_cache), (SELECT count(*) FROM iclear.cap_use),
                                    (SELECT count(*) FROM iclear.config_audit), (SELECT count(*) FROM iclear.rule),
                                    (SELECT version FROM iclear.config_version))").unwrap()
    };
    sandbox_service(&sb, "phone_analysis", "phone", 0.004);
    // a list entry added after the leads came does not reject them in a replay
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('late', 'dnpl', 'state')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE l.name = 'late'");
    run("INSERT INTO iclear.list_entry (list_id, value) SELECT id, 'CA' FROM iclear.list WHERE name = 'late'");
    let before = (state(), sb.count("ip") + sb.count("phone"));
    let bt = |changes: Value| {
        run("SET LOCAL ROLE iclear_test_ops");
        let r = Spi::get_one_with_args::<JsonB>(
            "SELECT iclear.backtest('payday_us', now() - interval '1 hour', now() + interval '1 minute', $1)",
            &[JsonB(changes).into()],
        );
        run("RESET ROLE");
        r.unwrap().unwrap().0
    };
    run("CREATE ROLE iclear_test_ops LOGIN IN ROLE iclear_operator");
    // the configuration as it is: every recorded decision again
    let same = bt(json!({}));
    assert_eq!(
        (same["leads"].as_i64(), same["changed"].as_i64()),
        (Some(6), Some(0)),
        "{same}"
    );
    assert_eq!(same["without_recorded_answer"], 0);
    // a draft that rejects CA, and the daily NY limit paused
    let draft = bt(json!({"rules": [
        {"name": "no CA", "stage": "processing", "position": 0,
         "conditions": [{"category": "lead_body", "parameter": "state", "operator": "equals", "value": "CA"}],
         "actions": [{"action": "stop_processing", "config": {"message": "no CA"}}]},
        {"name": "second ny of the day", "status": "paused"}]}));
    assert_eq!(draft["leads"], 6, "{draft}");
    assert_eq!(draft["accepted_to_rejected"], 2, "B1 and B2: {draft}");
    assert_eq!(draft["rejected_to_accepted"], 1, "B4: {draft}");
    assert_eq!(draft["changed"], 3);
    let mut sample: Vec<String> = draft["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    sample.sort();
    assert_eq!(sample, vec!["B1", "B2", "B4"]);
    let no_ca = draft["by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "no CA")
        .unwrap()
        .clone();
    assert_eq!(
        (no_ca["matched"].as_i64(), no_ca["rejected"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        draft["feedback"],
        json!({"returns": 1, "conversions": 1, "returns_caught": 1, "conversions_lost": 1})
    );
    // a lookup nobody recorded: its rule's no-response action, counted
    let phone = bt(
        json!({"global_rules": [{"service": "phone_analysis", "no_response": "reject",
                                            "settings": {"reject_voip": true}}]}),
    );
    assert_eq!(
        phone["without_recorded_answer"], 5,
        "B5 is rejected by the IP lookup before it: {phone}"
    );
    assert_eq!(phone["accepted_to_rejected"], 4, "{phone}");
    // nothing written, nothing sent
    assert_eq!((state(), sb.count("ip") + sb.count("phone")), before);
    // refusals name what is wrong
    let e = err("SELECT iclear.backtest('nope', now())").unwrap_or_default();
    assert!(e.contains("product \"nope\" does not exist"), "{e}");
    let e = err("SELECT iclear.backtest('payday_us', now(), now(), '{\"product\": {}}')")
        .unwrap_or_default();
    assert!(e.contains("changes.product is not a section"), "{e}");
    let e = err(r#"SELECT iclear.backtest('payday_us', now(), now(), '{"rules": [{"name": "x", "actions": [{"action": "lead_tags", "config": {"mode": "sideways"}}]}]}')"#).unwrap_or_default();
    assert!(
        e.contains("the changes are refused") && e.contains("actions[0]"),
        "{e}"
    );
}

/// Review 0.5 finding 5: importing product `evil` redefined `p1`'s shared
/// DNPL and the global cap, with `"changed": []` in the plan, and nothing
/// in `config_history('p1')`. Shared objects are listed apart in the plan,
/// change only with `change_shared => true`, and show in the history of
/// the products that use them.
#[pg_test]
fn an_import_changes_what_other_products_share_only_when_told_to() {
    run("INSERT INTO iclear.product (name) VALUES ('p1')");
    run("INSERT INTO iclear.global_rule (product_id, service, settings)
         SELECT id, 'ip_analysis', '{\"api_key\": \"k\"}' FROM iclear.product WHERE name = 'p1'");
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('p1 complainers', 'dnpl', 'email')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE p.name = 'p1'");
    let evil = json!({"product": {"name": "evil"},
        "lists": [{"name": "p1 complainers", "kind": "pl", "field": "phone"}],
        "global_caps": [{"service": "ip_analysis", "period": "daily", "cap_limit": 1}]});
    let plan = import(&evil, true);
    assert_eq!(
        plan["shared"],
        json!(["global_caps ip_analysis/daily", "lists p1 complainers"]),
        "{plan}"
    );
    let unchanged = "SELECT (SELECT kind || '/' || field FROM iclear.list WHERE name = 'p1 complainers')
                        || ' ' || (SELECT count(*) FROM iclear.global_cap)";
    assert_eq!(text(unchanged).unwrap(), "dnpl/email 0", "a dry run changes nothing");
    let e = err(&format!(
        "SELECT iclear.import_config('{}', false)",
        evil.to_string().replace('\'', "''")
    ))
    .expect("refused without change_shared");
    assert!(
        e.contains("lists p1 complainers") && e.contains("global_caps ip_analysis/daily"),
        "{e}"
    );
    assert_eq!(text(unchanged).unwrap(), "dnpl/email 0");
    // told to, it changes them, and p1's history shows it
    Spi::run_with_args(
        "SELECT iclear.import_config($1, false, change_shared => true)",
        &[JsonB(evil.clone()).into()],
    )
    .unwrap();
    assert_eq!(text(unchanged).unwrap(), "pl/phone 1");
    assert_eq!(
        int("SELECT count(*) FROM iclear.config_history('p1') WHERE table_name = 'list' AND op = 'UPDATE'"),
        1
    );
    // a document that adds its own list shares nothing
    let own = json!({"product": {"name": "evil"},
        "lists": [{"name": "evil's own", "kind": "dnpl", "field": "email"}],
        "global_caps": [{"service": "ip_analysis", "period": "daily", "cap_limit": 1}]});
    assert_eq!(import(&own, false)["shared"], json!([]));
}
