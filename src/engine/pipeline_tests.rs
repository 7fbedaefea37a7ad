//! Pipeline tests with in-memory facts: no Postgres.

use crate::config::ProductConfig;
use crate::envelope::Envelope;
use crate::facts::Facts;
use crate::pipeline::{process, Effect, Status};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

#[derive(Default)]
struct Mem {
    lists: HashSet<(i64, String)>,
    counters: HashMap<(String, String), i64>,
    source_created_at: Option<DateTime<Utc>>,
    random: i64,
    cap_room: HashMap<i64, i64>,
}

impl Facts for Mem {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        probes
            .iter()
            .filter(|p| self.lists.contains(p))
            .map(|p| p.0)
            .collect()
    }
    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        *self.counters.get(&(name.into(), key.into())).unwrap_or(&0)
    }
    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        self.source_created_at
    }
    fn random_0_1000(&mut self) -> i64 {
        self.random
    }
    fn take_rule_cap(&mut self, rule: &crate::config::Rule, _source: Option<i64>) -> bool {
        let room = self
            .cap_room
            .entry(rule.id)
            .or_insert(rule.caps.daily.unwrap_or(i64::MAX));
        if *room > 0 {
            *room -= 1;
            true
        } else {
            false
        }
    }
}

fn rule(id: i64, stage: &str, conds: Value, acts: Value) -> Value {
    json!({"id": id, "stage": stage, "name": format!("r{id}"), "conditions": conds, "actions": acts})
}

fn cfg(rules: Vec<Value>, lists: Value) -> ProductConfig {
    ProductConfig::from_json(
        json!({"id": 1, "name": "p", "kind": "post", "rules": rules, "lists": lists}),
    )
    .unwrap()
}

fn lead(v: Value) -> Envelope {
    let mut v = v;
    v["product"] = "p".into();
    Envelope::parse(&v).unwrap()
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

#[test]
fn every_action_shows_in_the_decision() {
    let c = cfg(
        vec![
            rule(
                1,
                "pre_validation",
                json!([]),
                json!([
                {"id": 1, "action": "change_input_data", "config": {"params": {"sub": "{%productField_email%}"}}},
                {"id": 2, "action": "stop_pre_validation_rules", "config": {}}]),
            ),
            rule(
                2,
                "pre_validation",
                json!([]),
                json!([
                {"id": 3, "action": "stop_processing", "config": {}}]),
            ),
            rule(
                3,
                "processing",
                json!([]),
                json!([
                {"id": 4, "action": "block_monetization"},
                {"id": 5, "action": "route_lead_to", "config": {"campaign_id": 9}},
                {"id": 6, "action": "trigger_silent_campaign", "config": {"campaign_id": 4}},
                {"id": 7, "action": "change_lead_body_fields", "config": {"fields": {"src": "{%sourceId%}-{%date%}"}}},
                {"id": 8, "action": "lead_tags", "config": {"mode": "add", "tags": ["a", "b"]}},
                {"id": 9, "action": "lead_tags", "config": {"mode": "remove", "tags": ["a"]}},
                {"id": 10, "action": "add_to_list", "config": {"list_ids": [7]}},
                {"id": 11, "action": "mark_ping_tree", "config": {"ping_tree_id": 5}},
                {"id": 12, "action": "increment_counter", "config": {"counter": "c", "key": "{%productField_email%}", "by": 2}},
                {"id": 13, "action": "find_and_replace", "config": {"field": "phone", "find": "-", "replace": ""}},
                {"id": 14, "action": "run_tracking_action", "config": {"event": "seen", "payload": {"x": 1}}},
                {"id": 15, "action": "change_response_parameter", "config": {"name": "ref", "value": "{%leadId%}"}}]),
            ),
            rule(
                4,
                "processing",
                json!([{"id": 1, "category": "counter", "parameter": "c:{%productField_email%}",
                                           "operator": "equals", "value": 2}]),
                json!([{"id": 16, "action": "stop_processing_rules", "config": {}}]),
            ),
            rule(
                5,
                "processing",
                json!([]),
                json!([{"id": 17, "action": "lead_tags", "config": {"mode": "add", "tags": ["never"]}}]),
            ),
        ],
        json!([{"id": 7, "name": "seen", "kind": "dnpl", "field": "email", "product_level": false}]),
    );
    let mut m = Mem::default();
    let out = process(
        &c,
        &lead(json!({"source_id": 77, "fields": {"email": "A@x.com", "phone": "555-12-34"}})),
        "L9",
        &mut m,
    );
    let d = &out.decision;
    assert_eq!(
        out.status,
        Status::Accepted,
        "rule 2 is after stop_pre_validation_rules"
    );
    assert_eq!(d["params"]["sub"], "A@x.com");
    assert_eq!(d["block_monetization"], true);
    assert_eq!(d["route"], json!({"campaign_id": 9}));
    assert_eq!(d["silent_campaigns"], json!([4]));
    assert_eq!(d["fields"]["src"], "77-2026-11-21");
    assert_eq!(d["tags"], json!(["b"]));
    assert_eq!(d["ping_tree_mark"], 5);
    assert_eq!(d["fields"]["phone"], "5551234");
    assert_eq!(d["response"]["ref"], "L9");
    assert!(out.effects.contains(&Effect::AddToList {
        list_id: 7,
        value: "a@x.com".into()
    }));
    assert!(out.effects.contains(&Effect::IncrementCounter {
        name: "c".into(),
        key: "A@x.com".into(),
        by: 2
    }));
    assert!(out
        .log
        .iter()
        .any(|l| l.kind == "tracking" && l.name.as_deref() == Some("seen")));
    // rule 4 saw the pending increment and ended the stage before rule 5
    assert!(!d["tags"].as_array().unwrap().contains(&json!("never")));
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

#[test]
fn email_domain_corrector_action() {
    let c = cfg(
        vec![rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "email_domain_corrector", "config": {}}]),
        )],
        json!([]),
    );
    let fixed = |email: &str| {
        process(
            &c,
            &lead(json!({"fields": {"email": email}})),
            "L",
            &mut Mem::default(),
        )
        .decision["fields"]["email"]
            .clone()
    };
    assert_eq!(fixed("Jo@gmial.con"), "Jo@gmail.com");
    assert_eq!(fixed("jo@gmx.com"), "jo@gmx.com", "valid as written");
    assert_eq!(fixed("jo@acme-widgets.com"), "jo@acme-widgets.com");
}

#[test]
fn redirect_rules_read_and_change_redirect_parameters() {
    use crate::pipeline::{process_redirect, TraceLevel};
    let c = cfg(
        vec![
            rule(
                1,
                "redirect",
                json!([{"id": 1, "category": "redirect", "parameter": "aff_id", "operator": "not_equals", "value": "{expected}"},
                        {"id": 2, "category": "redirect", "parameter": "url", "operator": "contains", "value": "utm_source=x"}]),
                json!([{"id": 1, "action": "find_and_replace", "config": {"field": "url", "find": "utm_source=x", "replace": "utm_source=clean"}},
                        {"id": 2, "action": "increment_counter", "config": {"counter": "redirect_tamper", "key": "{%publisherId%}"}},
                        {"id": 3, "action": "add_to_list", "config": {"list_ids": [4]}},
                        {"id": 4, "action": "run_tracking_action", "config": {"event": "tamper"}},
                        {"id": 5, "action": "stop_processing_rules", "config": {}}]),
            ),
            rule(
                2,
                "redirect",
                json!([]),
                json!([{"id": 6, "action": "run_tracking_action", "config": {"event": "never"}}]),
            ),
            rule(
                3,
                "processing",
                json!([]),
                json!([{"id": 7, "action": "lead_tags", "config": {"mode": "add", "tags": ["p"]}}]),
            ),
        ],
        json!([{"id": 4, "name": "tamperers", "kind": "dnpl", "field": "email", "product_level": false}]),
    );
    let env = lead(json!({"publisher_id": 12, "fields": {"email": "a@b.com"}}));
    let redirect = json!({"aff_id": "999", "url": "https://x.test/?utm_source=x"})
        .as_object()
        .unwrap()
        .clone();
    let out = process_redirect(
        &c,
        &env,
        "L1",
        redirect,
        &mut Mem::default(),
        TraceLevel::Full,
    );
    let d = &out.decision;
    assert_eq!(d["redirect"]["url"], "https://x.test/?utm_source=clean");
    assert_eq!(
        d["matched_rules"],
        json!([1]),
        "processing rules do not run; rule 2 is after the stop"
    );
    assert!(out.effects.contains(&Effect::IncrementCounter {
        name: "redirect_tamper".into(),
        key: "12".into(),
        by: 1
    }));
    assert!(out.effects.contains(&Effect::AddToList {
        list_id: 4,
        value: "a@b.com".into()
    }));
    assert!(out
        .log
        .iter()
        .all(|l| l.origin == "redirect" && l.stage == "redirect"));
    assert!(out
        .log
        .iter()
        .any(|l| l.kind == "tracking" && l.name.as_deref() == Some("tamper")));
    // conditions unmet: nothing changes
    let redirect = json!({"aff_id": "{expected}", "url": "https://x.test/?utm_source=x"})
        .as_object()
        .unwrap()
        .clone();
    let out = process_redirect(
        &c,
        &env,
        "L1",
        redirect,
        &mut Mem::default(),
        TraceLevel::Full,
    );
    assert_eq!(
        out.decision["redirect"]["url"],
        "https://x.test/?utm_source=x"
    );
    assert_eq!(out.decision["matched_rules"], json!([2]));
}
