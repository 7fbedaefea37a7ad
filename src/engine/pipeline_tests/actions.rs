//! What the actions do to a lead, and the bounds on what they render.

use super::*;

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

/// Seed 002: "use the list of preset placeholders" in every action value
/// that is text. The seed's redirect case: replace a tampered `aff_id` with
/// the publisher's id by Find and Replace. Tags and a tracking payload are
/// templates too; a pattern is not. An unknown placeholder is refused when
/// saved, naming the setting.
#[test]
fn placeholders_render_in_tags_replacements_and_tracking_payloads() {
    use crate::actions::Action;
    use crate::config::RuleStage;
    use crate::pipeline::{process_redirect, TraceLevel};
    let mut c = cfg(
        vec![
            rule(
                1,
                "processing",
                json!([]),
                json!([{"id": 1, "action": "lead_tags", "config": {"mode": "add", "tags": ["pub-{%publisherId%}", "{%productField_state%}"]}},
                       {"id": 2, "action": "find_and_replace",
                        "config": {"field": "note", "find": "\\$?(\\d+)", "replace": "{%productField_price%}-$1", "regex": true}},
                       {"id": 3, "action": "run_tracking_action",
                        "config": {"event": "lead", "payload": {"email": "{%productField_email%}", "ids": ["{%leadId%}", 7]}}}]),
            ),
            rule(
                2,
                "redirect",
                json!([]),
                json!([{"id": 4, "action": "find_and_replace", "config": {"field": "aff_id", "find": "999", "replace": "{%publisherId%}"}}]),
            ),
        ],
        json!([]),
    );
    c.tracking = true;
    let env = lead(
        json!({"publisher_id": 12, "fields": {"state": "NY", "email": "a@b.com", "price": "$5", "note": "x 42"}}),
    );
    let out = process(&c, &env, "L1", &mut Mem::default());
    assert_eq!(out.decision["tags"], json!(["pub-12", "NY"]));
    assert_eq!(
        out.decision["fields"]["note"], "x $5-42",
        "a `$` of the lead's data is no capture group"
    );
    let tracked = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Track { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .expect("queued");
    assert_eq!(tracked, json!({"email": "a@b.com", "ids": ["L1", 7]}));
    // the redirect case of seed 002
    let redirect = json!({"aff_id": "999"}).as_object().unwrap().clone();
    let out = process_redirect(
        &c,
        &env,
        "L1",
        redirect,
        &crate::pipeline::Processed::default(),
        &mut Mem::default(),
        TraceLevel::Matched,
    );
    assert_eq!(out.decision["redirect"]["aff_id"], "12");
    // an unknown placeholder is refused when saved, naming the setting
    for (action, config, setting) in [
        (
            "lead_tags",
            json!({"mode": "add", "tags": ["ok", "{%nope%}"]}),
            "config.tags[1]",
        ),
        (
            "find_and_replace",
            json!({"field": "f", "find": "a", "replace": "{%nope%}"}),
            "config.replace",
        ),
        (
            "run_tracking_action",
            json!({"event": "e", "payload": {"a": {"b": "{%nope%}"}}}),
            "config.payload.a.b",
        ),
    ] {
        let e = Action::new(1, RuleStage::Processing, action, &config).unwrap_err();
        assert!(e.to_string().contains(setting), "{action}: {e}");
    }
    // a pattern is not a template: `{%` in it is the text it finds
    assert!(Action::new(
        1,
        RuleStage::Processing,
        "find_and_replace",
        &json!({"field": "f", "find": "{%x%}", "replace": "y"})
    )
    .is_ok());
}

/// A tracking action while the `tracking` service is unsubscribed (or has
/// no endpoint) queues nothing and is logged `skipped` with the reason,
/// never `queued`.
#[test]
fn a_tracking_action_without_its_service_is_skipped_not_queued() {
    let c = cfg(
        vec![rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "run_tracking_action", "config": {"event": "lead"}}]),
        )],
        json!([]),
    );
    assert!(!c.tracking);
    let out = process(&c, &lead(json!({})), "L1", &mut Mem::default());
    let row = out.log.iter().find(|e| e.kind == "tracking").unwrap();
    assert_eq!(row.outcome, "skipped");
    assert!(row.detail["why"]
        .as_str()
        .unwrap()
        .contains("not subscribed"));
    assert!(!out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Track { .. })));
}
