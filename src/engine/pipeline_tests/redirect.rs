//! Advanced Rules on Redirect.

use super::*;

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
