//! Pipeline tests with in-memory facts: no Postgres.

use crate::config::ProductConfig;
use crate::envelope::Envelope;
use crate::facts::{CallResult, Facts, JobSpec, ServiceCall};
use crate::global::GlobalRule;
use crate::pipeline::{process, Effect, Status};
use crate::service::verification_history::SmsRecord;
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
    /// services: sampling rolls, cache, answers, queued jobs, calls made
    roll: u32,
    cache: HashMap<(String, String), Value>,
    answers: HashMap<String, CallResult>,
    service_room: HashMap<i64, i64>,
    jobs: Vec<JobSpec>,
    calls: Vec<(i64, String, u8)>,
    /// verification: recorded signatures, verified phones, started SMS,
    /// and whether the history is reachable
    signatures: HashMap<String, DateTime<Utc>>,
    sms: HashMap<String, SmsRecord>,
    started: Vec<String>,
    history_down: bool,
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
    fn roll_percent(&mut self) -> u32 {
        self.roll
    }
    fn cached(&mut self, service: &str, key: &str, _max_age: Option<u32>) -> Option<Value> {
        self.cache.get(&(service.into(), key.into())).cloned()
    }
    fn take_service_cap(&mut self, rule: &GlobalRule) -> Option<String> {
        let room = self.service_room.entry(rule.id).or_insert(i64::MAX);
        if *room > 0 {
            *room -= 1;
            None
        } else {
            Some("daily".into())
        }
    }
    fn call_service(&mut self, call: &ServiceCall) -> CallResult {
        self.calls
            .push((call.rule.id, call.value.to_string(), call.timeout_s));
        self.answers
            .get(call.value)
            .cloned()
            .unwrap_or(CallResult::NoResponse {
                reason: "connection refused".into(),
                timed_out: false,
                retryable: false,
                request: json!({}),
            })
    }
    fn enqueue(&mut self, job: &JobSpec) -> i64 {
        self.jobs.push(job.clone());
        self.jobs.len() as i64
    }
    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String> {
        if self.history_down {
            return Err("could not connect to server \"hub\"".into());
        }
        Ok(self.signatures.get(signature).copied())
    }
    fn sms_verified(&mut self, _product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
        if self.history_down {
            return Err("could not connect to server \"hub\"".into());
        }
        Ok(self.sms.get(phone).cloned())
    }
    fn start_sms_verification(
        &mut self,
        _product: &str,
        phone: &str,
        _lead_id: &str,
    ) -> Result<Option<i64>, String> {
        self.started.push(phone.to_string());
        Ok(Some(77))
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

/// set_fields_from_service with a JSON pointer into the answer.
#[test]
fn set_fields_from_service_reads_a_json_pointer() {
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"settings": {"api_key": "K"}}),
        )],
        vec![rule(
            2,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "set_fields_from_service",
                    "config": {"service": "ip_analysis",
                               "mapping": {"ipCity": "/location/city", "ipCountry": "country_code"}}}]),
        )],
    );
    let mut m = Mem::default();
    m.answers.insert(
        "1.1.1.1".into(),
        CallResult::Response {
            data: json!({"success": true, "fraud_score": 1, "country_code": "US",
                         "location": {"city": "Denver"}}),
            request: json!({}),
        },
    );
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.decision["fields"]["ipCity"], "Denver");
    assert_eq!(out.decision["fields"]["ipCountry"], "US");
}

/// iClaim reads its session id from a non-default field.
#[test]
fn iclaim_reads_a_non_default_session_field() {
    let mut g = global(1, "iclaim", json!({}));
    g["settings"] = json!({"account_id": "a", "api_token": "t", "session_id_field": "certId"});
    let c = gcfg("post", vec![g], vec![]);
    let mut m = Mem::default();
    m.answers.insert(
        "cert-9".into(),
        CallResult::Response {
            data: json!({"outcome": "success"}),
            request: json!({}),
        },
    );
    let out = process(
        &c,
        &lead(json!({"fields": {"certId": "cert-9", "iClaimSessionId": "x"}})),
        "L",
        &mut m,
    );
    assert_eq!(m.calls.len(), 1);
    assert_eq!(m.calls[0].1, "cert-9");
    assert_eq!(out.status, Status::Accepted);
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
    assert_eq!(
        d["silent_campaigns"],
        json!([]),
        "Block Monetization blocks the silent campaign"
    );
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
fn block_monetization_blocks_a_silent_campaign_triggered_before_it() {
    let c = cfg(
        vec![
            rule(
                1,
                "processing",
                json!([]),
                json!([{"id": 1, "action": "trigger_silent_campaign", "config": {"campaign_id": 4}}]),
            ),
            rule(
                2,
                "processing",
                json!([]),
                json!([{"id": 2, "action": "block_monetization"}]),
            ),
        ],
        json!([]),
    );
    let out = process(&c, &lead(json!({"fields": {}})), "L1", &mut Mem::default());
    assert_eq!(out.decision["block_monetization"], true);
    assert_eq!(out.decision["silent_campaigns"], json!([]));
    // without the block, the campaign stays
    let c = cfg(
        vec![rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "trigger_silent_campaign", "config": {"campaign_id": 4}}]),
        )],
        json!([]),
    );
    let out = process(&c, &lead(json!({"fields": {}})), "L2", &mut Mem::default());
    assert_eq!(out.decision["silent_campaigns"], json!([4]));
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

/// Redirect rules start from the lead as processing left it: its status,
/// the rules that matched, its service answers.
#[test]
fn redirect_rules_see_the_processed_lead() {
    use crate::pipeline::{process_redirect, Processed, TraceLevel};
    let c = cfg(
        vec![
            rule(
                1,
                "redirect",
                json!([{"id": 1, "category": "lead_param", "parameter": "status", "operator": "equals", "value": "rejected"}]),
                json!([{"id": 1, "action": "run_tracking_action", "config": {"event": "rejected"}}]),
            ),
            rule(
                2,
                "redirect",
                json!([{"id": 2, "category": "rule", "parameter": "7", "operator": "equals", "value": true}]),
                json!([{"id": 2, "action": "run_tracking_action", "config": {"event": "rule 7"}}]),
            ),
            rule(
                3,
                "redirect",
                json!([{"id": 3, "category": "service", "parameter": "ip_analysis.fraud_score",
                        "operator": "greater_or_equal", "value": 50}]),
                json!([{"id": 3, "action": "run_tracking_action", "config": {"event": "risky"}}]),
            ),
        ],
        json!([]),
    );
    let env = lead(json!({"fields": {"email": "a@b.com"}}));
    let processed = Processed::from_json(
        &json!({"status": "rejected", "tags": ["t"]}),
        &json!({"matched": [7], "services": {"ip_analysis": {"fraud_score": 70}}}),
    );
    let run = |p: &Processed| {
        let out = process_redirect(
            &c,
            &env,
            "L1",
            serde_json::Map::new(),
            p,
            &mut Mem::default(),
            TraceLevel::Matched,
        );
        out.decision["matched_rules"].clone()
    };
    assert_eq!(run(&processed), json!([1, 2, 3]));
    assert_eq!(
        run(&Processed::default()),
        json!([]),
        "a fresh lead matches none"
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
        &crate::pipeline::Processed::default(),
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
        &crate::pipeline::Processed::default(),
        &mut Mem::default(),
        TraceLevel::Full,
    );
    assert_eq!(
        out.decision["redirect"]["url"],
        "https://x.test/?utm_source=x"
    );
    assert_eq!(out.decision["matched_rules"], json!([2]));
}

// ---------------------------------------------------------------- global rules

fn global(id: i64, service: &str, extra: Value) -> Value {
    let mut g = json!({"id": id, "service": service, "status": "active", "subscription": "enabled",
        "cost": 0.01, "endpoint": "http://127.0.0.1:9/x", "execution": "sync", "lookup_percent": 100,
        "run_time": "before_filtration", "run_on": "ping_and_post", "run_on_silent_ping": false,
        "no_response": "continue",
        "settings": {"api_key": "K", "reject_fraud_score_gte": 80}});
    if service == "phone_analysis" {
        g["settings"] = json!({"api_key": "K", "reject_voip": true});
    }
    for (k, v) in extra.as_object().unwrap() {
        g[k] = v.clone();
    }
    g
}

fn gcfg(kind: &str, globals: Vec<Value>, rules: Vec<Value>) -> ProductConfig {
    ProductConfig::from_json(json!({"id": 1, "name": "p", "kind": kind, "rules": rules,
        "lists": [{"id": 9, "name": "bad_ips", "kind": "dnpl", "field": "userIp", "product_level": false}],
        "global_rules": globals}))
    .unwrap()
}

fn answer(score: i64) -> CallResult {
    CallResult::Response {
        data: json!({"success": true, "fraud_score": score, "country_code": "US", "mobile": false}),
        request: json!({"url": "http://127.0.0.1:9/x/***/1.2.3.4"}),
    }
}

fn ip_lead(ip: &str) -> Envelope {
    lead(json!({"fields": {"userIp": ip, "homePhone": "5550100"}}))
}

#[test]
fn sync_lookup_rejects_and_stops_the_services_after_it() {
    let c = gcfg(
        "post",
        vec![
            global(1, "ip_analysis", json!({"position": 1})),
            global(2, "phone_analysis", json!({})),
        ],
        vec![],
    );
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(85));
    m.answers.insert("2.2.2.2".into(), answer(10));
    let out = process(&c, &ip_lead("1.1.1.1"), "L1", &mut m);
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(out.decision["rejected_by"]["kind"], "service");
    assert_eq!(out.decision["reason"], "ip_analysis: fraud score 85 >= 80");
    assert_eq!(
        m.calls.len(),
        1,
        "phone_analysis must not run after a reject"
    );
    let svc: Vec<_> = out.log.iter().filter(|l| l.kind == "service").collect();
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0].detail["source"], "api");
    assert_eq!(svc[0].detail["cost"], 0.01);
    assert!(out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::CacheResponse { key, .. } if key == "1.1.1.1|s0")));
    // a passing lead runs both, in order
    m.calls.clear();
    let out = process(&c, &ip_lead("2.2.2.2"), "L2", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(
        m.calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2],
        "position order"
    );
    assert_eq!(out.decision["services"][0]["outcome"], "pass");
    assert_eq!(out.decision["services"][0]["score"], 10);
}

#[test]
fn skips_paused_unsubscribed_stage_silent_and_on_demand() {
    let cases = [
        (json!({"status": "paused"}), "post", json!({})),
        (json!({"subscription": "disabled"}), "post", json!({})),
        (
            json!({"execution": "on_demand", "lookup_percent": 0}),
            "post",
            json!({}),
        ),
        (
            json!({"run_on": "ping"}),
            "pingpost",
            json!({"stage": "post"}),
        ),
        (
            json!({"run_on": "post"}),
            "pingpost",
            json!({"stage": "ping"}),
        ),
        (json!({}), "post", json!({"stage": "ping", "silent": true})),
    ];
    for (extra, kind, env) in cases {
        let c = gcfg(kind, vec![global(1, "ip_analysis", extra.clone())], vec![]);
        let mut m = Mem::default();
        let mut e = env.clone();
        e["fields"] = json!({"userIp": "1.1.1.1"});
        let out = process(&c, &lead(e), "L", &mut m);
        assert!(m.calls.is_empty(), "{extra} {kind} {env}: must not run");
        assert_eq!(out.status, Status::Accepted);
    }
    // run_on applies to pingpost products only; silent ping runs when asked
    for (extra, kind, env) in [
        (json!({"run_on": "ping"}), "post", json!({"stage": "post"})),
        (
            json!({"run_on_silent_ping": true}),
            "pingpost",
            json!({"stage": "ping", "silent": true}),
        ),
    ] {
        let c = gcfg(kind, vec![global(1, "ip_analysis", extra.clone())], vec![]);
        let mut m = Mem::default();
        let mut e = env.clone();
        e["fields"] = json!({"userIp": "1.1.1.1"});
        process(&c, &lead(e), "L", &mut m);
        assert_eq!(m.calls.len(), 1, "{extra} {kind} {env}: must run");
    }
}

#[test]
fn sampling_zero_hundred_and_thirty_percent() {
    for (pct, roll, runs) in [
        (0, 0, false),
        (100, 99, true),
        (30, 29, true),
        (30, 30, false),
    ] {
        let c = gcfg(
            "post",
            vec![global(1, "ip_analysis", json!({"lookup_percent": pct}))],
            vec![],
        );
        let mut m = Mem {
            roll,
            ..Mem::default()
        };
        let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
        assert_eq!(!m.calls.is_empty(), runs, "{pct}% roll {roll}");
        if !runs {
            assert_eq!(out.log[0].outcome, "not_sampled");
            assert_eq!(out.log[0].detail["cost"], 0);
        }
    }
}

#[test]
fn cache_local_only_and_async_fallbacks() {
    let key = ("ip_analysis".to_string(), "1.1.1.1|s0".to_string());
    let cached = json!({"success": true, "fraud_score": 90});
    // cache_days > 0: a cached answer is used, nothing paid
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"settings": {"api_key": "K", "reject_fraud_score_gte": 80, "cache_days": 7}}),
        )],
        vec![],
    );
    let mut m = Mem::default();
    m.cache.insert(key.clone(), cached.clone());
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert!(m.calls.is_empty());
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(out.log[0].detail["source"], "cache");
    assert_eq!(out.log[0].detail["cost"], 0.0);
    // cache_days 0: the cache is not read
    let c0 = gcfg("post", vec![global(1, "ip_analysis", json!({}))], vec![]);
    process(&c0, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(m.calls.len(), 1);
    // local only: hit -> "local"; miss -> no response, or async when asked
    let local = |fallback: bool| {
        gcfg(
            "post",
            vec![global(
                1,
                "ip_analysis",
                json!({"no_response": "reject",
            "settings": {"api_key": "K", "local_only": true, "local_fail_run_async": fallback}}),
            )],
            vec![],
        )
    };
    let mut m = Mem::default();
    m.cache.insert(key.clone(), cached);
    let out = process(&local(false), &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.log[0].detail["source"], "local");
    let out = process(&local(false), &ip_lead("9.9.9.9"), "L", &mut m);
    assert!(m.calls.is_empty(), "local only never calls the API");
    assert_eq!(out.log[0].outcome, "no_response");
    assert_eq!(out.status, Status::Rejected, "no_response = reject");
    let out = process(&local(true), &ip_lead("9.9.9.9"), "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(out.log[0].outcome, "queued");
    assert_eq!(m.jobs.len(), 1);
    assert_eq!(m.jobs[0].payload["value"], "9.9.9.9");
    assert_eq!(out.decision["queued"], json!([1]));
}

#[test]
fn timeouts_no_response_and_after_timeout_async() {
    let timeout = CallResult::NoResponse {
        reason: "timed out after 2 s".into(),
        timed_out: true,
        retryable: true,
        request: json!({}),
    };
    let cfg_with = |extra: Value| gcfg("post", vec![global(1, "ip_analysis", extra)], vec![]);
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), timeout.clone());
    let out = process(
        &cfg_with(json!({"settings": {"api_key": "K", "sync_timeout_s": 2}})),
        &ip_lead("1.1.1.1"),
        "L",
        &mut m,
    );
    assert_eq!(m.calls[0].2, 2, "sync timeout passed to the adapter");
    assert_eq!(out.status, Status::Accepted, "no_response = continue");
    assert_eq!(out.log[0].outcome, "no_response");
    let out = process(
        &cfg_with(json!({"no_response": "reject"})),
        &ip_lead("1.1.1.1"),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Rejected);
    assert!(out.decision["reason"]
        .as_str()
        .unwrap()
        .contains("did not respond"));
    let out = process(
        &cfg_with(json!({"no_response": "reject",
            "settings": {"api_key": "K", "after_timeout_run_async": true}})),
        &ip_lead("1.1.1.1"),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Accepted, "queued instead of rejected");
    assert_eq!(out.log[0].outcome, "queued");
    assert_eq!(out.log[0].detail["why"], "sync timeout");
    // a missing lead field is a lookup that cannot run: no_response
    let out = process(
        &cfg_with(json!({"no_response": "reject"})),
        &lead(json!({"fields": {}})),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Rejected);
}

#[test]
fn caps_async_after_filtration_and_add_to_list() {
    // cap full: skipped and logged, the lead goes on
    let c = gcfg("post", vec![global(1, "ip_analysis", json!({}))], vec![]);
    let mut m = Mem::default();
    m.service_room.insert(1, 0);
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert!(m.calls.is_empty());
    assert_eq!(out.log[0].outcome, "cap_reached");
    assert_eq!(out.status, Status::Accepted);
    // async: queued, the decision does not wait
    let c = gcfg(
        "post",
        vec![global(1, "ip_analysis", json!({"execution": "async"}))],
        vec![],
    );
    let mut m = Mem::default();
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert!(m.calls.is_empty());
    assert_eq!(m.jobs.len(), 1);
    assert_eq!(out.decision["queued"], json!([1]));
    // after filtration: skipped at no charge when no campaign remains or rejected
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"run_time": "after_filtration"}),
        )],
        vec![rule(
            5,
            "processing",
            json!([{"id": 1, "category": "lead_body", "parameter": "state", "operator": "equals", "value": "NY"}]),
            json!([{"id": 1, "action": "stop_processing", "config": {}}]),
        )],
    );
    let mut m = Mem::default();
    let e = lead(json!({"campaigns_remaining": 0, "fields": {"userIp": "1.1.1.1"}}));
    let out = process(&c, &e, "L", &mut m);
    assert!(m.calls.is_empty());
    assert_eq!(out.log[0].detail["why"], "no campaigns remaining");
    let e = lead(json!({"fields": {"userIp": "1.1.1.1", "state": "NY"}}));
    process(&c, &e, "L", &mut m);
    assert!(m.calls.is_empty(), "rejected leads are not looked up");
    let e = lead(json!({"campaigns_remaining": 2, "fields": {"userIp": "1.1.1.1"}}));
    process(&c, &e, "L", &mut m);
    assert_eq!(m.calls.len(), 1);
    // Add to PL/DNPL: the lead's value of the list's field
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"settings": {"api_key": "K", "add_to_list": {"fraud_score_gte": 50, "list_ids": [9]}}}),
        )],
        vec![],
    );
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(60));
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert!(out.effects.contains(&Effect::AddToList {
        list_id: 9,
        value: "1.1.1.1".into()
    }));
}

#[test]
fn run_service_action_conditions_and_set_fields() {
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"execution": "on_demand", "lookup_percent": 0, "status": "paused",
                   "settings": {"api_key": "K"}}),
        )],
        vec![
            rule(
                2,
                "processing",
                json!([]),
                json!([{"id": 1, "action": "run_third_party_service", "config": {"global_rule_id": 1}},
                       {"id": 2, "action": "set_fields_from_service",
                        "config": {"service": "ip_analysis", "mapping": {"ipCountry": "country_code"}}}]),
            ),
            rule(
                3,
                "processing",
                json!([{"id": 1, "category": "service", "parameter": "ip_analysis.fraud_score",
                        "operator": "greater_or_equal", "value": 50}]),
                json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["risky"]}}]),
            ),
        ],
    );
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(70));
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(m.calls.len(), 1, "on-demand and paused, run by the action");
    assert_eq!(out.decision["fields"]["ipCountry"], "US");
    assert_eq!(out.decision["tags"], json!(["risky"]));
    assert_eq!(
        out.log.iter().find(|l| l.kind == "service").unwrap().origin,
        "on_demand"
    );
}

/// Run third-party service honours its target's execution type, and from
/// after-processing never overturns the decision already made.
#[test]
fn run_service_action_honours_async_and_the_decision_after_processing() {
    let target = |execution: &str| {
        global(
            1,
            "ip_analysis",
            json!({"execution": execution, "lookup_percent": 0,
                   "settings": {"api_key": "K", "reject_fraud_score_gte": 80}}),
        )
    };
    let run_in = |stage: &str| {
        vec![rule(
            2,
            stage,
            json!([]),
            json!([{"id": 1, "action": "run_third_party_service", "config": {"global_rule_id": 1}}]),
        )]
    };
    // from processing, a sync (on-demand) target rejects ...
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(90));
    let c = gcfg("post", vec![target("on_demand")], run_in("processing"));
    assert_eq!(
        process(&c, &ip_lead("1.1.1.1"), "L", &mut m).status,
        Status::Rejected
    );
    // ... an async target queues, and the lead goes on
    let c = gcfg("post", vec![target("async")], run_in("processing"));
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(m.jobs.len(), 1);
    assert_eq!(m.calls.len(), 1, "the async target made no call");
    // from after processing, the answer flags and the decision stands
    let c = gcfg(
        "post",
        vec![target("on_demand")],
        run_in("after_processing"),
    );
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.status, Status::Accepted, "{}", out.decision);
    assert_eq!(out.decision["reason"], Value::Null);
    let svc = out.log.iter().find(|l| l.kind == "service").unwrap();
    assert_eq!(svc.outcome, "flagged");
    assert_eq!(out.decision["services"][0]["outcome"], "flagged");
    let c = gcfg("post", vec![target("async")], run_in("after_processing"));
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(m.jobs.len(), 2);
}

/// A global rule saved before an admin set its credential calls no vendor:
/// no response, naming the setting, and the rule's no-response action.
#[test]
fn a_rule_without_its_credential_calls_no_vendor() {
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"no_response": "reject", "settings": {"reject_fraud_score_gte": 80}}),
        )],
        vec![],
    );
    let mut m = Mem::default();
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert!(m.calls.is_empty());
    assert_eq!(out.log[0].outcome, "no_response");
    assert!(out.log[0].detail["reason"]
        .as_str()
        .unwrap()
        .contains("settings.api_key is not set"));
    assert_eq!(out.status, Status::Rejected, "no_response = reject");
}

#[test]
fn async_completion_flags_and_lists() {
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"execution": "async",
                   "settings": {"api_key": "K", "reject_fraud_score_gte": 80,
                                "add_to_list": {"fraud_score_gte": 80, "list_ids": [9]}}}),
        )],
        vec![],
    );
    // the job carries the field the list takes (userIp)
    let mut m = Mem::default();
    process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    let payload = m.jobs[0].payload.clone();
    assert_eq!(payload["fields"]["userIp"], "1.1.1.1");
    let (log, effects) = crate::pipeline::complete_async(&c, 1, &payload, answer(95));
    assert_eq!(log[0].outcome, "flagged");
    assert_eq!(log[0].origin, "async");
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::CacheResponse { .. })));
    assert!(effects.contains(&Effect::AddToList {
        list_id: 9,
        value: "1.1.1.1".into()
    }));
    let (log, _) = crate::pipeline::complete_async(
        &c,
        1,
        &payload,
        CallResult::NoResponse {
            reason: "HTTP 500".into(),
            timed_out: false,
            retryable: false,
            request: json!({}),
        },
    );
    assert_eq!(log[0].outcome, "no_response");
}

// ------------------------------------------------ verification history, pause

fn vh_rule(settings: Value, extra: Value) -> Value {
    let mut g = global(1, "verification_history", extra);
    g["settings"] = settings;
    g
}

#[test]
fn verification_history_rule_rejects_passes_and_no_response() {
    let tmpl = r#"{"email": "{%productField_email%}"}"#;
    let c = gcfg(
        "post",
        vec![vh_rule(
            json!({"signature_enabled": true, "signature_template": tmpl,
                   "reject_signature_missing": true, "signature_lifetime_s": 3600}),
            json!({}),
        )],
        vec![],
    );
    let e = lead(json!({"fields": {"email": "a@b.co"}}));
    let mut m = Mem::default();
    let out = process(&c, &e, "L", &mut m);
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(
        out.decision["reason"],
        "verification_history: signature missing"
    );
    let sig = out.log[0].detail["signature"].as_str().unwrap().to_string();
    m.signatures
        .insert(sig, m.now() - chrono::Duration::seconds(60));
    assert_eq!(process(&c, &e, "L", &mut m).status, Status::Accepted);
    // history unreachable: the no-response action (continue here)
    m.history_down = true;
    let out = process(&c, &e, "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(out.log[0].outcome, "no_response");
}

/// Seed 002: async services "do not impact the lead processing flow". An
/// async rule set to reject on no response neither rejects a lead without
/// the value (it is skipped, with the reason) nor one whose history is
/// unreachable; a fresh cached answer serves instead of a job and flags.
#[test]
fn async_rules_never_touch_the_lead() {
    let c = gcfg(
        "post",
        vec![global(
            1,
            "ip_analysis",
            json!({"execution": "async", "no_response": "reject",
                   "settings": {"api_key": "K", "reject_fraud_score_gte": 80, "cache_days": 7}}),
        )],
        vec![],
    );
    let mut m = Mem::default();
    let out = process(
        &c,
        &lead(json!({"fields": {"email": "a@b.co"}})),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Accepted, "no IP: nothing to queue");
    assert_eq!(out.log[0].outcome, "skipped");
    assert_eq!(out.log[0].detail["why"], "the lead has no value to look up");
    assert!(m.jobs.is_empty());
    // a fresh cached answer: no job, no charge, source cache; flagged, not rejected
    m.cache.insert(
        ("ip_analysis".to_string(), "1.1.1.1|s0".to_string()),
        json!({"success": true, "fraud_score": 95}),
    );
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert!(m.jobs.is_empty() && m.calls.is_empty());
    assert_eq!(out.log[0].outcome, "flagged");
    assert_eq!(out.log[0].detail["source"], "cache");
    assert_eq!(out.log[0].detail["cost"], 0.0);
    // no cached answer: queued
    process(&c, &ip_lead("2.2.2.2"), "L", &mut m);
    assert_eq!(m.jobs.len(), 1);
    // async Verification History with its history down: continue, whatever no_response says
    let tmpl = r#"{"email": "{%productField_email%}"}"#;
    let c = gcfg(
        "post",
        vec![vh_rule(
            json!({"signature_enabled": true, "signature_template": tmpl,
                   "reject_signature_missing": true, "signature_lifetime_s": 3600}),
            json!({"execution": "async", "no_response": "reject"}),
        )],
        vec![],
    );
    let mut m = Mem {
        history_down: true,
        ..Mem::default()
    };
    let out = process(
        &c,
        &lead(json!({"fields": {"email": "a@b.co"}})),
        "L",
        &mut m,
    );
    assert_eq!(out.status, Status::Accepted, "{}", out.decision);
    assert_eq!(out.log[0].outcome, "no_response");
}

#[test]
fn verification_history_caps_count_checks() {
    let tmpl = r#"{"email": "{%productField_email%}"}"#;
    let c = gcfg(
        "post",
        vec![vh_rule(
            json!({"signature_enabled": true, "signature_template": tmpl,
                   "reject_signature_missing": true, "signature_lifetime_s": 3600}),
            json!({"daily_limit": 1}),
        )],
        vec![],
    );
    let e = lead(json!({"fields": {"email": "a@b.co"}}));
    let mut m = Mem::default();
    m.service_room.insert(1, 1);
    assert_eq!(process(&c, &e, "L", &mut m).status, Status::Rejected);
    // the cap is full: the check is skipped (logged), the lead goes on
    let out = process(&c, &e, "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(out.log[0].outcome, "cap_reached");
    assert_eq!(m.service_room[&1], 0);
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

/// A paused lead is finished where it paused: confirmed, the processing
/// rules after the pause run and the ones before it do not run again (a
/// counter is not counted twice, a cap slot not taken twice); expired, it is
/// rejected. The after-processing rules run once, on the final outcome.
#[test]
fn a_paused_lead_resumes_after_its_pause_or_expires() {
    use crate::pipeline::{resume, PauseEnd, Processed, TraceLevel};
    let always = json!([{"id": 1, "category": "random", "parameter": "", "operator": "greater_or_equal", "value": 0}]);
    let tag =
        |t: &str| json!({"id": 9, "action": "lead_tags", "config": {"mode": "add", "tags": [t]}});
    let mut before = rule(
        1,
        "processing",
        always.clone(),
        json!([tag("before"), {"id": 8, "action": "increment_counter", "config": {"counter": "seen", "key": "{%leadId%}"}}]),
    );
    before["daily_limit"] = 1.into();
    let c = gcfg(
        "post",
        vec![],
        vec![
            before,
            rule(
                2,
                "processing",
                always.clone(),
                json!([{"id": 1, "action": "pause_for_verification", "config": {"phone_field": "homePhone"}}]),
            ),
            rule(3, "processing", always.clone(), json!([tag("after")])),
            rule(4, "after_processing", always.clone(), json!([tag("final")])),
        ],
    );
    let e = lead(json!({"fields": {"homePhone": "5550100199"}}));
    let mut m = Mem::default();
    let paused = process(&c, &e, "L", &mut m);
    assert_eq!(paused.status, Status::Paused);
    assert_eq!(
        paused.decision["tags"],
        json!(["before"]),
        "no outcome yet: after-processing waits"
    );
    let v = &paused.decision["verification"];
    assert_eq!(
        (
            v["rule_id"].clone(),
            v["reached"].clone(),
            v["phone"].clone()
        ),
        (json!(2), json!([1, 2]), json!("5550100199"))
    );
    assert!(paused
        .log
        .iter()
        .any(|l| l.ref_id == Some(2) && l.outcome == "paused"));
    let processed = Processed {
        status: "paused".into(),
        tags: vec!["before".into()],
        matched: vec![1, 2],
        results: Default::default(),
    };
    let finish = |end, m: &mut Mem| {
        resume(
            &c,
            &e,
            "L",
            &paused.decision,
            &processed,
            end,
            m,
            TraceLevel::Full,
        )
    };
    let out = finish(PauseEnd::Verified, &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(out.decision["tags"], json!(["before", "after", "final"]));
    assert_eq!(out.decision["verification"]["status"], "verified");
    assert_eq!(out.decision["reason"], Value::Null);
    assert!(
        !out.effects
            .iter()
            .any(|e| matches!(e, Effect::IncrementCounter { .. })),
        "the rule before the pause is not run again: {:?}",
        out.effects
    );
    assert!(
        !out.log.iter().any(|l| l.outcome == "cap_reached"),
        "{:?}",
        out.log
    );
    assert!(out
        .log
        .iter()
        .any(|l| l.kind == "verification" && l.outcome == "verified"));
    let out = finish(PauseEnd::Expired, &mut m);
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(out.decision["reason"], "verification expired");
    assert_eq!(out.decision["rejected_by"]["id"], 2);
    assert_eq!(
        out.decision["tags"],
        json!(["before", "final"]),
        "rejected: only after-processing runs"
    );
}

#[test]
fn pause_for_verification_then_verified_phone_passes() {
    let c = gcfg(
        "post",
        vec![],
        vec![rule(
            1,
            "processing",
            json!([{"id": 1, "category": "random", "parameter": "", "operator": "greater_or_equal", "value": 0}]),
            json!([{"id": 1, "action": "pause_for_verification",
                    "config": {"lead_status": "pre_screening", "phone_field": "homePhone", "message": "Pre-Screening"}},
                   {"id": 2, "action": "lead_tags", "config": {"mode": "add", "tags": ["sms_verification"]}}]),
        )],
    );
    let e = lead(json!({"fields": {"homePhone": "+1 (555) 010-0199"}}));
    let mut m = Mem::default();
    let out = process(&c, &e, "L", &mut m);
    assert_eq!(out.status, Status::Paused);
    assert_eq!(out.decision["status"], "paused");
    assert_eq!(out.decision["reason"], "Pre-Screening");
    assert_eq!(out.decision["verification"]["lead_status"], "pre_screening");
    assert_eq!(out.decision["queued"], json!([77]));
    assert_eq!(
        out.decision["tags"],
        json!(["sms_verification"]),
        "the rule's other actions run"
    );
    assert_eq!(m.started, vec!["5550100199".to_string()]);
    // confirmed: the re-posted lead passes
    m.sms.insert(
        "5550100199".into(),
        SmsRecord {
            verified_at: m.now() - chrono::Duration::seconds(30),
            code: "123456".into(),
        },
    );
    let out = process(&c, &e, "L", &mut m);
    assert_eq!(out.status, Status::Accepted);
    assert_eq!(m.started.len(), 1);
    // no phone: rejected, not paused
    let out = process(&c, &lead(json!({"fields": {}})), "L", &mut m);
    assert_eq!(out.status, Status::Rejected);
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

/// Review 0.5 finding 4: two chained placeholder actions on one 64 KiB
/// field made a 103 MB decision; a regex that matches the empty string
/// multiplies a value the same way. Each value stays within the posted
/// limit: past it the lead is decided `error`, naming the limit, and the
/// decision stays small.
#[test]
fn rendered_values_are_bounded_and_an_oversized_lead_is_an_error() {
    let big = "{%productField_big%}".repeat(40);
    let c = cfg(
        vec![
            rule(
                1,
                "processing",
                json!([]),
                json!([{"id": 1, "action": "change_lead_body_fields", "config": {"fields": {"f1": big}}},
                       {"id": 2, "action": "change_lead_body_fields",
                        "config": {"fields": {"f2": "{%productField_f1%}".repeat(40)}}}]),
            ),
            rule(
                2,
                "processing",
                json!([]),
                json!([{"id": 3, "action": "increment_counter", "config": {"counter": "c", "key": "k"}}]),
            ),
        ],
        json!([]),
    );
    let mut facts = Mem::default();
    let out = process(
        &c,
        &lead(json!({"fields": {"big": "x".repeat(60_000)}})),
        "L",
        &mut facts,
    );
    assert_eq!(out.status, crate::pipeline::Status::Error);
    assert_eq!(out.decision["status"], "error");
    let reason = out.decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("fields.f1") && reason.contains("65536"),
        "{reason}"
    );
    assert!(
        out.decision.to_string().len() < 70_000,
        "the decision stays small"
    );
    assert!(
        out.effects.is_empty(),
        "nothing of an errored lead is written"
    );
    // an empty-matching pattern with a long replacement
    let c = cfg(
        vec![rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "find_and_replace",
                    "config": {"field": "v", "find": "x*", "replace": "y".repeat(1000), "regex": true}}]),
        )],
        json!([]),
    );
    let out = process(
        &c,
        &lead(json!({"fields": {"v": "ab".repeat(10_000)}})),
        "L",
        &mut Mem::default(),
    );
    assert_eq!(
        out.decision["status"], "error",
        "{}",
        out.decision["reason"]
    );
    assert!(out.decision.to_string().len() < 70_000);
    // within the limits, the same actions work
    let out = process(
        &c,
        &lead(json!({"fields": {"v": "ab"}})),
        "L",
        &mut Mem::default(),
    );
    assert_eq!(out.decision["status"], "accepted");
}
