//! Rules: validation, targeting, lists, conditions, traces, shadow rules and the decision's keys.

use super::*;

/// Product fields are validated after pre-validation (which may repair the
/// lead body) and before the lists; a failing lead is rejected with
/// rejected_by.kind = validation, logged in the pre-validation stage.
#[test]
fn fields_are_validated_after_pre_validation_repairs_them() {
    let c = ProductConfig::from_json(json!({"id": 1, "name": "p", "kind": "post",
        "rules": [rule(1, "pre_validation",
                       json!([{"id": 1, "category": "lead_body", "parameter": "state", "operator": "is_empty", "value": null}]),
                       json!([{"id": 1, "action": "change_input_data", "config": {"fields": {"state": "{%tPar_st%}"}}}]))],
        "lists": [{"id": 9, "name": "bad", "kind": "dnpl", "field": "email", "product_level": true}],
        "fields": [{"id": 5, "name": "state", "type": "state", "required": true},
                   {"id": 6, "name": "email", "type": "email", "required": true}]}))
    .unwrap();
    let run = |env: Value| {
        let mut m = Mem::default();
        m.lists.insert((9, "bad@x.co".into()));
        process(&c, &lead(env), "L", &mut m)
    };
    let out = run(json!({"params": {"st": "NY"}, "fields": {"email": "a@x.co"}}));
    assert_eq!(
        out.status,
        Status::Accepted,
        "the state was repaired: {}",
        out.decision
    );
    assert_eq!(out.decision["fields"]["state"], "NY");
    let out = run(json!({"fields": {"email": "a@x.co"}}));
    assert_eq!(
        out.decision["rejected_by"],
        json!({"kind": "validation", "id": 5, "name": "state"})
    );
    assert_eq!(out.decision["reason"], "field state: is required");
    let v = out.log.iter().find(|l| l.kind == "validation").unwrap();
    assert_eq!((v.stage, v.outcome.as_str()), ("pre_validation", "reject"));
    let out = run(json!({"fields": {"state": "CA", "email": "not-an-email"}}));
    assert_eq!(out.decision["rejected_by"]["name"], "email");
    // validation runs before the lists
    let out = run(json!({"fields": {"state": "XX", "email": "bad@x.co"}}));
    assert_eq!(out.decision["rejected_by"]["kind"], "validation");
    let out = run(json!({"fields": {"state": "CA", "email": "bad@x.co"}}));
    assert_eq!(out.decision["rejected_by"]["kind"], "list");
}

/// Targeting by a single publisher, channel or source id, and by every
/// include and exclude list (issue 13 item 14).
#[test]
fn targeting_by_single_ids_and_every_list() {
    let tagged = |targeting: Value, env: Value| {
        let mut r = rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["t"]}}]),
        );
        for (k, v) in targeting.as_object().unwrap() {
            r[k] = v.clone();
        }
        let c = cfg(vec![r], json!([]));
        process(&c, &lead(env), "L", &mut Mem::default()).decision["tags"] == json!(["t"])
    };
    let env = json!({"publisher_id": 11, "channel_id": 3, "source_id": 1103});
    for (targeting, hit) in [
        (json!({"publisher_id": 11}), true),
        (json!({"publisher_id": 12}), false),
        (json!({"channel_id": 3}), true),
        (json!({"channel_id": 4}), false),
        (json!({"source_id": 1103}), true),
        (json!({"source_id": 1104}), false),
        (json!({"publisher_ids": [10, 11]}), true),
        (json!({"publisher_ids": [10]}), false),
        (json!({"exclude_publisher_ids": [11]}), false),
        (json!({"exclude_publisher_ids": [12]}), true),
        (json!({"channel_ids": [3]}), true),
        (json!({"channel_ids": [4, 5]}), false),
        (json!({"exclude_channel_ids": [3]}), false),
        (json!({"source_ids": [1103]}), true),
        (json!({"source_ids": [7]}), false),
        (json!({"exclude_source_ids": [1103]}), false),
        (
            json!({"publisher_ids": [11], "exclude_channel_ids": [3]}),
            false,
        ),
    ] {
        assert_eq!(tagged(targeting.clone(), env.clone()), hit, "{targeting}");
    }
    // a lead without the id is not targeted by a list that needs it
    assert!(!tagged(json!({"publisher_ids": [11]}), json!({})));
    assert!(tagged(json!({"exclude_publisher_ids": [11]}), json!({})));
}

#[test]
fn lists_reject_in_order_and_pl_needs_the_value() {
    let c = cfg(
        vec![],
        json!([{"id": 1, "name": "dn", "kind": "dnpl", "field": "email", "product_level": true},
               {"id": 2, "name": "pl", "kind": "pl", "field": "state", "product_level": true},
               {"id": 3, "name": "other", "kind": "dnpl", "field": "email", "product_level": false}]),
    );
    let mut m = Mem::default();
    m.lists.insert((1, "bad@x.com".into()));
    m.lists.insert((2, "ca".into()));
    m.lists.insert((3, "ok@x.com".into()));
    let out = process(
        &c,
        &lead(json!({"fields": {"email": " BAD@x.com", "state": "CA"}})),
        "L",
        &mut m,
    );
    assert_eq!(out.decision["rejected_by"]["id"], 1);
    let out = process(
        &c,
        &lead(json!({"fields": {"email": "ok@x.com", "state": "ca"}})),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Accepted, "list 3 is not product-level");
    let out = process(
        &c,
        &lead(json!({"fields": {"email": "ok@x.com"}})),
        "L",
        &mut m,
    );
    assert_eq!(out.decision["rejected_by"]["id"], 2);
    assert_eq!(out.log.iter().filter(|l| l.kind == "list").count(), 1);
}

/// Placeholders in condition values are rendered for the lead before
/// comparing (the seeds' redirect case: the affiliate parameter no longer
/// equals the lead's publisher), numeric operators and lists included.
#[test]
fn condition_values_render_placeholders() {
    let c = cfg(
        vec![
            rule(
                1,
                "processing",
                json!([{"id": 1, "category": "lead_param", "parameter": "tpar.aff", "operator": "not_equals",
                        "value": "{%publisherId%}"}]),
                json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["tampered"]}}]),
            ),
            rule(
                2,
                "processing",
                json!([{"id": 2, "category": "lead_body", "parameter": "loan", "operator": "greater",
                        "value": "{%productField_income%}"}]),
                json!([{"id": 2, "action": "lead_tags", "config": {"mode": "add", "tags": ["over"]}}]),
            ),
            rule(
                3,
                "processing",
                json!([{"id": 3, "category": "lead_body", "parameter": "state", "operator": "in",
                        "value": ["{%tPar_home%}", "CA"]}]),
                json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["home"]}}]),
            ),
        ],
        json!([]),
    );
    let tags =
        |env: Value| process(&c, &lead(env), "L", &mut Mem::default()).decision["tags"].clone();
    assert_eq!(
        tags(
            json!({"publisher_id": 14, "params": {"aff": "14", "home": "NY"},
                    "fields": {"loan": 500, "income": 900, "state": "NY"}})
        ),
        json!(["home"])
    );
    assert_eq!(
        tags(json!({"publisher_id": 14, "params": {"aff": "15"},
                    "fields": {"loan": 1000, "income": 900, "state": "TX"}})),
        json!(["tampered", "over"])
    );
    // an unknown placeholder is refused when the condition is saved
    let e = crate::conditions::Condition::new(1, "lead_body", "x", "equals", json!("{%nope%}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("value") && e.contains("unknown placeholder"),
        "{e}"
    );
}

#[test]
fn trace_explains_conditions_and_notes_non_numbers() {
    let c = cfg(
        vec![rule(
            1,
            "processing",
            json!([{"id": 1, "category": "lead_body", "parameter": "age", "operator": "greater", "value": 17},
                   {"id": 2, "category": "random", "operator": "less", "value": 500}]),
            json!([{"id": 1, "action": "stop_processing", "config": {"message": "r {%productField_age%}"}}]),
        )],
        json!([]),
    );
    let mut m = Mem {
        random: 100,
        ..Mem::default()
    };
    let out = process(&c, &lead(json!({"fields": {"age": "30"}})), "L", &mut m);
    assert_eq!(out.decision["reason"], "r 30");
    let t = &out.decision["trace"][0];
    assert_eq!(t["matched"], true);
    assert_eq!(
        t["conditions"][0],
        json!({"parameter": "age", "category": "lead_body", "operator": "greater",
                                          "expected": 17, "actual": "30", "result": true})
    );
    assert_eq!(t["conditions"][1]["actual"], 100);
    assert_eq!(t["actions"], json!(["stop_processing"]));
    let out = process(&c, &lead(json!({"fields": {"age": "thirty"}})), "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    let cond = &out.decision["trace"][0]["conditions"][0];
    assert_eq!(cond["result"], false);
    assert!(cond["note"].as_str().unwrap().contains("not a number"));
}

#[test]
fn targeting_all_new_and_caps() {
    let mut r = rule(
        1,
        "processing",
        json!([]),
        json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["t"]}}]),
    );
    r["all_new_since"] = "2026-11-01T00:00:00+00:00".into();
    r["exclude_source_ids"] = json!([5]);
    r["daily_limit"] = 1.into();
    r["cap_counts"] = "matches".into();
    let c = cfg(vec![r], json!([]));
    let tags = |m: &mut Mem, src: i64| {
        process(&c, &lead(json!({"source_id": src})), "L", m).decision["tags"].clone()
    };
    let mut m = Mem {
        source_created_at: Some(Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap()),
        ..Mem::default()
    };
    assert_eq!(tags(&mut m, 1), json!([]), "an old source is not new");
    m.source_created_at = Some(Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap());
    assert_eq!(tags(&mut m, 5), json!([]), "source 5 is excluded");
    assert_eq!(tags(&mut m, 1), json!(["t"]));
    let out = process(&c, &lead(json!({"source_id": 1})), "L", &mut m);
    assert_eq!(
        out.decision["tags"],
        json!([]),
        "the daily cap of 1 is used"
    );
    assert_eq!(out.decision["trace"][0]["skipped"], "cap_reached");
}

/// "All New" (rule.all_new): sources created after the rule's created_at,
/// or after all_new_since when it is set.
#[test]
fn all_new_counts_from_the_rule_creation() {
    let mut r = rule(
        1,
        "processing",
        json!([]),
        json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["t"]}}]),
    );
    r["all_new"] = true.into();
    r["created_at"] = "2026-11-10T00:00:00+00:00".into();
    let tags = |r: &Value, created: (u32, u32)| {
        let c = cfg(vec![r.clone()], json!([]));
        let mut m = Mem {
            source_created_at: Some(
                Utc.with_ymd_and_hms(2026, created.0, created.1, 0, 0, 0)
                    .unwrap(),
            ),
            ..Mem::default()
        };
        process(&c, &lead(json!({"source_id": 1})), "L", &mut m).decision["tags"].clone()
    };
    assert_eq!(tags(&r, (11, 2)), json!([]), "created before the rule");
    assert_eq!(tags(&r, (11, 15)), json!(["t"]));
    r["all_new_since"] = "2026-11-01T00:00:00+00:00".into();
    assert_eq!(tags(&r, (11, 2)), json!(["t"]), "all_new_since wins");
    r["all_new"] = false.into();
    r["all_new_since"] = Value::Null;
    assert_eq!(tags(&r, (1, 1)), json!(["t"]), "not All New: every source");
    // the envelope carries the lead store's date of the source
    let env =
        Envelope::parse(&json!({"product": "p", "source_created_at": "2026-11-21T12:00:00Z"}))
            .unwrap();
    assert_eq!(
        env.source_created_at,
        Some(Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap())
    );
    let e =
        Envelope::parse(&json!({"product": "p", "source_created_at": "yesterday"})).unwrap_err();
    assert!(e.to_string().contains("source_created_at"), "{e}");
}

#[test]
fn trace_levels() {
    use crate::pipeline::{process_traced, TraceLevel};
    let c = cfg(
        vec![
            rule(
                1,
                "processing",
                json!([{"id": 1, "category": "lead_body", "parameter": "a", "operator": "equals", "value": 1}]),
                json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["one"]}}]),
            ),
            rule(
                2,
                "processing",
                json!([]),
                json!([{"id": 2, "action": "lead_tags", "config": {"mode": "add", "tags": ["two"]}}]),
            ),
        ],
        json!([]),
    );
    let env = lead(json!({"fields": {"a": 2}}));
    let n = |level| {
        process_traced(&c, &env, "L", &mut Mem::default(), level).decision["trace"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(n(TraceLevel::Full), 2);
    assert_eq!(n(TraceLevel::Matched), 1);
    assert_eq!(n(TraceLevel::Off), 0);
    let out = process_traced(&c, &env, "L", &mut Mem::default(), TraceLevel::Off);
    assert_eq!(
        out.decision["tags"],
        json!(["two"]),
        "the trace level changes no outcome"
    );
    assert_eq!(
        out.log.iter().filter(|l| l.kind == "rule").count(),
        1,
        "the filter log still records matches"
    );
}

/// A shadow rule leaves the decision exactly as if it did not exist (no
/// action, no cap slot, no trace entry) and logs its match with what it
/// would have done and its trace.
#[test]
fn shadow_rules_change_nothing_and_log_what_they_would_do() {
    let always = json!([{"id": 1, "category": "lead_body", "parameter": "state", "operator": "equals", "value": "NY"}]);
    let live = rule(
        1,
        "processing",
        always.clone(),
        json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["ny"]}}]),
    );
    let mut shadow = rule(
        2,
        "processing",
        always.clone(),
        json!([{"id": 2, "action": "lead_tags", "config": {"mode": "add", "tags": ["draft"]}},
               {"id": 3, "action": "stop_processing", "config": {"message": "no"}}]),
    );
    shadow["status"] = "shadow".into();
    shadow["daily_limit"] = 0.into();
    let with = cfg(vec![live.clone(), shadow], json!([]));
    let without = cfg(vec![live], json!([]));
    let e = lead(json!({"fields": {"state": "NY"}}));
    let (mut m1, mut m2) = (Mem::default(), Mem::default());
    let a = process(&with, &e, "L", &mut m1);
    let b = process(&without, &e, "L", &mut m2);
    assert_eq!(a.decision, b.decision, "as if it did not exist");
    assert!(m1.cap_room.is_empty(), "no cap slot taken");
    let log: Vec<_> = a.log.iter().filter(|l| l.outcome == "shadow").collect();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].ref_id, Some(2));
    assert_eq!(log[0].detail["would"], "reject");
    assert_eq!(log[0].detail["trace"]["conditions"][0]["actual"], "NY");
    // not matched: nothing logged
    let out = process(
        &with,
        &lead(json!({"fields": {"state": "CA"}})),
        "L",
        &mut m1,
    );
    assert!(out.log.iter().all(|l| l.outcome != "shadow"));
}

/// One shape of decision: the processed one and the error one have exactly
/// the documented keys, in one order.
#[test]
fn every_decision_has_the_documented_keys() {
    use crate::pipeline::{error_decision, DECISION_KEYS};
    let keys = |d: &Value| -> Vec<String> { d.as_object().unwrap().keys().cloned().collect() };
    let mut want: Vec<String> = DECISION_KEYS.iter().map(|k| k.to_string()).collect();
    want.sort();
    let c = cfg(vec![], json!([]));
    let mut processed = keys(&process(&c, &lead(json!({})), "L", &mut Mem::default()).decision);
    processed.sort();
    assert_eq!(processed, want);
    let mut error = keys(&error_decision(
        "L",
        "p",
        "post",
        "why",
        json!({}),
        json!({}),
    ));
    error.sort();
    assert_eq!(error, want);
}

/// A `history` condition reads the count of earlier leads with the lead's
/// normalised values, and every decided lead is recorded under each key of
/// the database with its final status (an `error` lead is not).
#[test]
fn history_conditions_count_and_every_decided_lead_is_recorded() {
    let dup = rule(
        1,
        "processing",
        json!([{"id": 1, "category": "history", "parameter": "email", "operator": "greater_or_equal",
                "value": {"count": 1, "seconds": 3600}}]),
        json!([{"id": 1, "action": "stop_processing", "config": {"message": "dup"}}]),
    );
    let c = ProductConfig::from_json(json!({"id": 1, "name": "p", "kind": "post", "rules": [dup],
        "history_keys": ["email", "homePhone+email", "email+homePhone"]}))
    .unwrap();
    assert_eq!(c.history_keys.len(), 2, "one key for both spellings");
    let mut m = Mem::default();
    let out = process(
        &c,
        &lead(json!({"fields": {"email": "A@x.com"}})),
        "L1",
        &mut m,
    );
    assert_eq!(out.status, Status::Accepted);
    let recorded: Vec<&Effect> = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::RecordHistory { .. }))
        .collect();
    assert_eq!(
        recorded,
        vec![&Effect::RecordHistory {
            key: "email".into(),
            values: vec!["a@x.com".into()],
            status: "accepted"
        }],
        "no phone: not recorded under email+homePhone"
    );
    m.history.push((
        "email".into(),
        vec!["a@x.com".into()],
        1,
        "accepted".into(),
        10,
    ));
    let out = process(
        &c,
        &lead(json!({"fields": {"email": " a@X.com"}})),
        "L2",
        &mut m,
    );
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(
        out.decision["trace"][0]["conditions"][0]["actual"],
        json!(1)
    );
    assert!(out.effects.contains(&Effect::RecordHistory {
        key: "email".into(),
        values: vec!["a@x.com".into()],
        status: "rejected"
    }));
    // past the window, or another product's lead with scope product: none
    m.history[0].4 = 4000;
    assert_eq!(
        process(
            &c,
            &lead(json!({"fields": {"email": "a@x.com"}})),
            "L3",
            &mut m
        )
        .status,
        Status::Accepted
    );
    // no email: nothing to count
    let out = process(&c, &lead(json!({"fields": {}})), "L4", &mut m);
    assert_eq!(
        out.decision["trace"][0]["conditions"][0]["actual"],
        json!(0)
    );
}
