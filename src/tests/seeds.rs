// Settings of the seeds tested at the SQL tier: monthly and per-source
// limits, run_on and run_on_silent_ping, after filtration, async_timeout_s
// (issue 13 item 14).

/// Rule `monthly_limit` and `per_source_limit`, and a global rule's
/// `monthly_limit`, at their limits (issue 13 item 14).
#[pg_test]
fn monthly_and_per_source_limits_at_the_limit() {
    setup();
    let monthly = rule("processing", "monthly", 1);
    run(&format!(
        "UPDATE iclear.rule SET monthly_limit = 2 WHERE id = {monthly}"
    ));
    let per_source = rule("processing", "per source", 2);
    run(&format!(
        "UPDATE iclear.rule SET per_source_limit = 1 WHERE id = {per_source}"
    ));
    for (r, tag) in [(monthly, "m"), (per_source, "s")] {
        condition(r, "random", "", "greater_or_equal", json!(0));
        action(r, "lead_tags", json!({"mode": "add", "tags": [tag]}));
    }
    let tags = |id: &str, source: i64| {
        process(json!({"product": "payday_us", "lead_id": id, "source_id": source}))["tags"].clone()
    };
    assert_eq!(tags("C1", 10), json!(["m", "s"]));
    assert_eq!(
        tags("C2", 10),
        json!(["m"]),
        "source 10 has had its one lead"
    );
    assert_eq!(tags("C3", 11), json!(["s"]), "the month's two are taken");
    assert_eq!(tags("C4", 11), json!([]));
    assert_eq!(
        int("SELECT count(*) FROM iclear.filter_log WHERE outcome = 'cap_reached'"),
        4,
        "C2 one, C3 one, C4 both"
    );
    assert_eq!(
        int(&format!("SELECT current_value FROM iclear.cap_status WHERE rule_id = {monthly} AND period = 'monthly'")),
        2
    );
    // a global rule's monthly limit
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "ip_analysis", "ip", 0.005);
    let g = global("ip_analysis", json!({"api_key": "k"}), "");
    run(&format!(
        "UPDATE iclear.global_rule SET monthly_limit = 1 WHERE id = {g}"
    ));
    assert_eq!(ip_lead("C5", "10.0.0.5")["services"][0]["outcome"], "pass");
    let d = ip_lead("C6", "10.0.0.6");
    assert_eq!(d["services"][0]["outcome"], "cap_reached");
    assert_eq!(sb.count("ip"), 1);
    assert!(text(
        "SELECT detail->>'cap' FROM iclear.filter_log WHERE lead_id = 'C6' AND kind = 'service'"
    )
    .unwrap()
    .contains("monthly cap of 1"));
}

/// "Run service on" (ping, post), "Run on silent ping" and after
/// filtration, through iclear_process (issue 13 item 14).
#[pg_test]
fn run_on_silent_ping_and_after_filtration() {
    run("INSERT INTO iclear.product (name, kind) VALUES ('payday_us', 'pingpost')");
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "ip_analysis", "ip", 0.005);
    let g = global("ip_analysis", json!({"api_key": "k"}), "run_on = 'post'");
    let looked_up = |id: &str, extra: Value| {
        let mut lead =
            json!({"product": "payday_us", "lead_id": id, "fields": {"userIp": "10.0.0.1"}});
        for (k, v) in extra.as_object().unwrap() {
            lead[k] = v.clone();
        }
        let d = process(lead);
        d["services"].as_array().is_some_and(|s| !s.is_empty())
    };
    assert!(!looked_up("R1", json!({"stage": "ping"})), "post only");
    assert!(looked_up("R2", json!({"stage": "post"})));
    run(&format!(
        "UPDATE iclear.global_rule SET run_on = 'ping' WHERE id = {g}"
    ));
    assert!(looked_up("R3", json!({"stage": "ping"})));
    assert!(!looked_up("R4", json!({"stage": "post"})), "ping only");
    assert!(
        !looked_up("R5", json!({"stage": "ping", "silent": true})),
        "not on silent pings"
    );
    run(&format!(
        "UPDATE iclear.global_rule SET run_on_silent_ping = true WHERE id = {g}"
    ));
    assert!(looked_up("R6", json!({"stage": "ping", "silent": true})));
    // after filtration: a lead the processing rules rejected is not looked up
    run(&format!("UPDATE iclear.global_rule SET run_on = 'ping_and_post', run_time = 'after_filtration' WHERE id = {g}"));
    let r = rule("processing", "no bad", 1);
    condition(r, "lead_body", "userIp", "equals", json!("10.0.0.66"));
    action(r, "stop_processing", json!({"message": "bad ip"}));
    let calls = sb.count("ip");
    let bad = process(
        json!({"product": "payday_us", "lead_id": "R7", "fields": {"userIp": "10.0.0.66"}}),
    );
    assert_eq!(
        (bad["status"].as_str(), bad["services"].clone()),
        (Some("rejected"), json!([]))
    );
    assert!(looked_up("R8", json!({})));
    assert_eq!(sb.count("ip"), calls + 1);
    assert_eq!(
        text("SELECT stage FROM iclear.filter_log WHERE lead_id = 'R8' AND kind = 'service'")
            .unwrap(),
        "global_after"
    );
}

/// The worker's call of an async rule is bounded by `async_timeout_s`,
/// not `sync_timeout_s`: the sandbox answers 198.51.100.150 after 1.5 s,
/// which one second misses and two seconds catch (issue 13 item 14).
#[pg_test]
fn async_timeout_s_bounds_the_worker_call() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "ip_analysis", "ip", 0.005);
    let g = global(
        "ip_analysis",
        json!({"api_key": "k", "sync_timeout_s": 5, "async_timeout_s": 1}),
        "execution = 'async'",
    );
    run("SET LOCAL iclear.job_max_attempts = 1");
    ip_lead("T1", "198.51.100.150");
    let started = std::time::Instant::now();
    assert_eq!(int("SELECT iclear.run_worker_once()"), 1);
    let waited = started.elapsed();
    let job = json("SELECT to_jsonb(j) FROM iclear.job j WHERE lead_id = 'T1'");
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s"),
        "{job}"
    );
    // a timeout cannot fire early (no upper bound: machines are noisy)
    assert!(waited >= std::time::Duration::from_secs(1), "{waited:?}");
    run(&format!(
        "UPDATE iclear.global_rule SET settings = settings || '{{\"async_timeout_s\": 2}}' WHERE id = {g}"
    ));
    ip_lead("T2", "198.51.100.150");
    assert_eq!(int("SELECT iclear.run_worker_once()"), 1);
    assert_eq!(
        text("SELECT status FROM iclear.job WHERE lead_id = 'T2'").unwrap(),
        "done"
    );
    assert_eq!(
        text("SELECT outcome FROM iclear.filter_log WHERE lead_id = 'T2' AND origin = 'async' AND outcome <> 'queued'").unwrap(),
        "pass"
    );
}
