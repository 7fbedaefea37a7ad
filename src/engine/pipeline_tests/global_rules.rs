//! Global Rules: sync and async lookups, caching, sampling, timeouts, caps and the Run-third-party-service action.

use super::*;

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

/// Issue 25 item 2: on a lead that processing rejected, an after-processing
/// "Run third-party service" is for reporting. The service's answer is
/// logged (flagged) and readable by later rules; the decision's reason and
/// rejected_by stay; the after-processing rules after it run. The target's
/// run_on and silent-ping settings apply, and a target that cannot run
/// (unsubscribed, not at this stage) leaves a row saying why.
#[test]
fn an_after_processing_service_on_a_rejected_lead_reports_and_the_rules_go_on() {
    let rules = vec![
        rule(
            1,
            "processing",
            json!([]),
            json!([{"id": 1, "action": "stop_processing", "config": {"message": "no thanks"}}]),
        ),
        rule(
            2,
            "after_processing",
            json!([]),
            json!([{"id": 2, "action": "run_third_party_service", "config": {"global_rule_id": 1}}]),
        ),
        rule(
            3,
            "after_processing",
            json!([{"id": 1, "category": "service", "parameter": "ip_analysis.fraud_score",
                    "operator": "greater_or_equal", "value": 80}]),
            json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["risky"]}}]),
        ),
    ];
    let target = |extra: Value| {
        let mut g = global(
            1,
            "ip_analysis",
            json!({"execution": "on_demand", "lookup_percent": 0}),
        );
        for (k, v) in extra.as_object().unwrap() {
            g[k] = v.clone();
        }
        g
    };
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(90));
    let c = gcfg("post", vec![target(json!({}))], rules.clone());
    let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(out.status, Status::Rejected);
    assert_eq!(out.decision["reason"], "no thanks");
    assert_eq!(out.decision["rejected_by"]["kind"], "rule");
    assert_eq!(
        out.decision["tags"],
        json!(["risky"]),
        "the rule after it ran and read the answer"
    );
    let svc = out.log.iter().find(|l| l.kind == "service").unwrap();
    assert_eq!(svc.outcome, "flagged");
    // a target that runs on ping only is not run for a post; an
    // unsubscribed one is not run: each leaves a row saying why
    for (extra, why) in [
        (json!({"run_on": "ping"}), "not run at this stage"),
        (json!({"subscription": "disabled"}), "subscription disabled"),
    ] {
        let c = gcfg("pingpost", vec![target(extra)], rules.clone());
        let out = process(&c, &ip_lead("1.1.1.1"), "L", &mut Mem::default());
        let svc = out.log.iter().find(|l| l.kind == "service").unwrap();
        assert_eq!(
            (svc.outcome.as_str(), svc.detail["why"].as_str()),
            ("skipped", Some(why))
        );
        assert_eq!(out.decision["tags"], json!([]));
        assert_eq!(out.decision["reason"], "no thanks");
    }
}

/// Seed 002: a rule's caps are "the max number of times the selected
/// service can be processed within the rule". A paid lookup of its Run
/// third-party service action takes the slot; a cached answer, a skipped
/// target or a rule without a service action takes none.
#[test]
fn a_rule_cap_counts_the_times_its_service_runs() {
    let on_demand = global(
        1,
        "ip_analysis",
        json!({"execution": "on_demand", "lookup_percent": 0,
               "settings": {"api_key": "K", "cache_days": 30}}),
    );
    let mut capped = rule(
        2,
        "processing",
        json!([]),
        json!([{"id": 1, "action": "run_third_party_service", "config": {"global_rule_id": 1}},
               {"id": 2, "action": "lead_tags", "config": {"mode": "add", "tags": ["ran"]}}]),
    );
    capped["daily_limit"] = 1.into();
    let mut tag_only = rule(
        3,
        "processing",
        json!([]),
        json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["tagged"]}}]),
    );
    tag_only["daily_limit"] = 1.into();
    let c = gcfg("post", vec![on_demand], vec![capped, tag_only]);
    let mut m = Mem::default();
    m.answers.insert("1.1.1.1".into(), answer(10));
    m.answers.insert("2.2.2.2".into(), answer(10));
    m.cache.insert(
        ("ip_analysis".into(), "3.3.3.3|s0".into()),
        json!({"success": true, "fraud_score": 1}),
    );
    // a cached answer is not a run: no slot
    let out = process(&c, &ip_lead("3.3.3.3"), "L", &mut m);
    assert_eq!(m.calls.len(), 0);
    assert!(m.rule_slots.is_empty(), "{:?}", m.rule_slots);
    assert_eq!(out.decision["tags"], json!(["ran", "tagged"]));
    // the first paid lookup takes the rule's one slot
    process(&c, &ip_lead("1.1.1.1"), "L", &mut m);
    assert_eq!(m.calls.len(), 1);
    assert_eq!(m.rule_slots.len(), 1);
    assert_eq!(m.rule_slots[0].rule_id, 2);
    // the cap is full: no lookup, the rest of the rule goes on, and a rule
    // without a service action is never capped by its matches
    let out = process(&c, &ip_lead("2.2.2.2"), "L", &mut m);
    assert_eq!(m.calls.len(), 1, "the cap stops the lookup");
    let capped_row = out
        .log
        .iter()
        .find(|l| l.kind == "service" && l.outcome == "cap_reached")
        .expect("a cap_reached row");
    assert!(capped_row.detail["cap"].as_str().unwrap().contains("rule"));
    assert_eq!(out.decision["tags"], json!(["ran", "tagged"]));
}

/// `cap_counts = 'matches'` keeps 0.5.0's meaning: every match takes a slot.
#[test]
fn cap_counts_matches_counts_every_match() {
    let mut r = rule(
        2,
        "processing",
        json!([]),
        json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["t"]}}]),
    );
    r["daily_limit"] = 1.into();
    r["cap_counts"] = "matches".into();
    let c = gcfg("post", vec![], vec![r.clone()]);
    let mut m = Mem::default();
    assert_eq!(
        process(&c, &ip_lead("1.1.1.1"), "L", &mut m).decision["tags"],
        json!(["t"])
    );
    assert_eq!(
        process(&c, &ip_lead("1.1.1.1"), "L", &mut m).decision["tags"],
        json!([])
    );
    r["cap_counts"] = "sometimes".into();
    let e = ProductConfig::from_json(json!({"id": 1, "name": "p", "kind": "post", "rules": [r]}))
        .unwrap_err();
    assert!(e.to_string().contains("cap_counts"), "{e}");
}

/// Seed 002: the per-source limit applies "for each new source": sources
/// created since the rule (or its all_new_since). An older source, or a
/// lead without one, is not counted; `per_source_scope = 'all_sources'`
/// counts every source and a "no source" bucket.
#[test]
fn the_per_source_limit_counts_new_sources() {
    let mut r = rule(
        2,
        "processing",
        json!([]),
        json!([{"id": 3, "action": "lead_tags", "config": {"mode": "add", "tags": ["t"]}}]),
    );
    r["per_source_limit"] = 5.into();
    r["cap_counts"] = "matches".into();
    r["created_at"] = "2026-11-10T00:00:00+00:00".into();
    let slots = |r: &Value, source: Option<i64>, created: Option<(u32, u32)>| {
        let c = gcfg("post", vec![], vec![r.clone()]);
        let mut m = Mem {
            source_created_at: created
                .map(|(mo, d)| Utc.with_ymd_and_hms(2026, mo, d, 0, 0, 0).unwrap()),
            ..Mem::default()
        };
        let env = match source {
            Some(s) => lead(json!({"source_id": s})),
            None => lead(json!({})),
        };
        process(&c, &env, "L", &mut m);
        m.rule_slots[0].per_source
    };
    assert_eq!(slots(&r, Some(4), Some((11, 12))), PerSource::Source(4));
    assert_eq!(
        slots(&r, Some(4), Some((11, 1))),
        PerSource::NotCounted,
        "an older source"
    );
    assert_eq!(slots(&r, None, None), PerSource::NotCounted);
    r["all_new_since"] = "2026-10-01T00:00:00+00:00".into();
    assert_eq!(slots(&r, Some(4), Some((11, 1))), PerSource::Source(4));
    // (all_new_since also targets the rule at new sources: drop it)
    r["all_new_since"] = Value::Null;
    r["per_source_scope"] = "all_sources".into();
    assert_eq!(slots(&r, Some(4), Some((1, 1))), PerSource::Source(4));
    assert_eq!(slots(&r, None, None), PerSource::NoSource);
}
