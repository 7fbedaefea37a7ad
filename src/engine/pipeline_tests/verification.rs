//! The Verification History Service and pause for verification.

use super::*;

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
    before["cap_counts"] = "matches".into();
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
