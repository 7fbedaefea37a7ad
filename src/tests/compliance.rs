// Compliance before a lead is sold (issue 26): consent insights, scans and
// verify; phone compliance flags; phone lists in any format; free checks
// before paid lookups; a stale do-not-call list in health.

#[pg_test]
fn iclaim_insights_scans_and_verify_over_http() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "iclaim", "iclaim", 0.02);
    global(
        "iclaim",
        json!({"account_id": "acct", "api_token": "tok",
               "insights": {"max_age_seconds": 3600, "reject_bot_detected": true,
                            "min_seconds_on_page": 10, "require_typing": true,
                            "allowed_domains": ["example.com"]},
               "scans": {"required": ["home security system"], "forbidden": ["free"]},
               "verify": {"advertiser_name": "Acme Inc.", "min_font_size_px": 16,
                          "opt_in_types_allowed": ["manual"]}}),
        "",
    );
    let lead = |id: &str, session: &str| {
        process(json!({"product": "payday_us", "lead_id": id,
                       "fields": {"iClaimSessionId": session, "email": "a@b.co"}}))
    };
    assert_eq!(lead("T1", "clean-1")["status"], "accepted");
    for (id, session, named) in [
        ("T2", "bot-2", "insights.reject_bot_detected"),
        ("T3", "old-3", "insights.max_age_seconds"),
        ("T4", "fast-4", "insights.min_seconds_on_page"),
        ("T5", "paste-5", "insights.require_typing"),
        ("T6", "elsewhere-6", "insights.allowed_domains"),
        ("T7", "noconsent-7", "verify"),
    ] {
        let d = lead(id, session);
        assert_eq!(d["status"], "rejected", "{session}");
        let why = d["reason"].as_str().unwrap();
        assert!(why.contains(named), "{session}: {why}");
    }
    // the request in TrustedForm v4's shape, and the evidence keeps the answer
    let request = json("SELECT request::jsonb FROM iclear.filter_log WHERE lead_id = 'T1' AND kind = 'service'");
    assert_eq!(request["body"]["insights"]["scans"]["required"], json!(["home security system"]));
    assert_eq!(request["body"]["verify"]["min_font_size_px_required"], 16);
    let ev = json("SELECT response::jsonb FROM iclear.consent_evidence WHERE lead_id = 'T2'");
    assert_eq!(ev["insights"]["properties"]["bot_detected"], true);
    assert_eq!(ev["verify"]["result"]["success"], true);
    // a forbidden phrase on the page fails the scans
    run(r#"UPDATE iclear.global_rule SET settings = jsonb_set(settings, '{scans,forbidden}', '["consent"]')"#);
    let d = lead("T8", "clean-8");
    assert!(d["reason"].as_str().unwrap().contains("scans"), "{d}");
    // conditions read the insights at the answer's top level
    run(r#"UPDATE iclear.global_rule SET settings = settings - 'scans' - 'verify' - 'insights'
                                                 || '{"insights": {"properties": ["page_url"]}}'"#);
    let r = rule("processing", "slow readers", 1);
    condition(r, "service", "iclaim.seconds_on_page", "less", json!(5));
    action(r, "lead_tags", json!({"mode": "add", "tags": ["skimmed"]}));
    assert_eq!(lead("T9", "fast-9")["tags"], json!(["skimmed"]));
    assert_eq!(lead("T10", "clean-10")["tags"], json!([]));
}

#[pg_test]
fn phone_compliance_flags_and_a_litigator_goes_on_the_dnpl() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "phone_analysis", "phone", 0.01);
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('litigators', 'dnpl', 'homePhone')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE l.name = 'litigators'");
    let list = int("SELECT id FROM iclear.list WHERE name = 'litigators'");
    global(
        "phone_analysis",
        json!({"api_key": "k", "reject_do_not_call": true, "reject_litigator": true,
               "reject_leaked": true, "reject_sms_pumping": true, "reject_recently_recycled": true,
               "add_to_list": {"litigator": true, "list_ids": [list]}}),
        "",
    );
    let lead = |id: &str, phone: &str| {
        process(json!({"product": "payday_us", "lead_id": id, "fields": {"homePhone": phone}}))
    };
    assert_eq!(lead("F0", "(201) 555-0123")["status"], "accepted");
    for (id, phone, named) in [
        ("F1", "(201) 555-0911", "do_not_call"),
        ("F2", "(201) 555-0912", "tcpa_blacklist"),
        ("F3", "(201) 555-0913", "leaked"),
        ("F4", "(201) 555-0914", "sms_pumping"),
        ("F5", "(201) 555-0915", "recently_recycled"),
    ] {
        let d = lead(id, phone);
        assert!(d["reason"].as_str().unwrap_or("").contains(named), "{phone}: {d}");
    }
    // the litigator's number is on the DNPL by its digits: the next lead
    // from it, however written, is rejected by the list at no charge
    assert_eq!(
        text("SELECT value FROM iclear.list_entry WHERE list_id = (SELECT id FROM iclear.list WHERE name = 'litigators')").as_deref(),
        Some("2015550912")
    );
    let calls = sb.count("phone");
    let d = lead("F6", "+1 201-555-0912");
    assert_eq!(d["rejected_by"]["kind"], "list", "{d}");
    assert_eq!(sb.count("phone"), calls, "no lookup");
}

#[pg_test]
fn a_phone_list_matches_any_format_and_a_stale_one_shows_in_health() {
    setup();
    run("INSERT INTO iclear.list (name, kind, field, refreshed_at)
         VALUES ('national dnc', 'dnpl', 'homePhone', now() - interval '40 days')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE l.name = 'national dnc'");
    run("INSERT INTO iclear.list_entry (list_id, value)
         SELECT id, v FROM iclear.list, (VALUES ('(201) 555-0007'), ('+1 201 555 0008'), ('2015550009'), ('n/a')) x(v)
          WHERE name = 'national dnc'");
    assert_eq!(
        text("SELECT string_agg(value, ',' ORDER BY value) FROM iclear.list_entry").as_deref(),
        Some("2015550007,2015550008,2015550009,n/a")
    );
    for (i, phone) in ["2015550007", "+1 (201) 555-0008", "201.555.0009", "1-201-555-0007"].iter().enumerate() {
        let d = process(json!({"product": "payday_us", "lead_id": format!("N{i}"), "fields": {"homePhone": phone}}));
        assert_eq!(d["rejected_by"]["kind"], "list", "{phone}: {d}");
    }
    let d = process(json!({"product": "payday_us", "lead_id": "N9", "fields": {"homePhone": "201-555-0010"}}));
    assert_eq!(d["status"], "accepted");
    // a do-not-call list past the Telemarketing Sales Rule's 31 days
    assert_eq!(
        text("SELECT array_to_string(stale_do_not_call_lists, ',') FROM iclear.health").as_deref(),
        Some("national dnc")
    );
    run("UPDATE iclear.list SET refreshed_at = now() WHERE name = 'national dnc'");
    assert_eq!(
        text("SELECT array_to_string(stale_do_not_call_lists, ',') FROM iclear.health").as_deref(),
        Some("")
    );
}

/// Free checks before paid lookups (issue 26 item 4): a pre-validation rule
/// with `is_valid_phone` or `is_disposable_email` rejects before any
/// global rule runs, so the lookup is never paid for.
#[pg_test]
fn free_checks_reject_before_a_paid_lookup() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "phone_analysis", "phone", 0.01);
    global("phone_analysis", json!({"api_key": "k"}), "");
    let invalid = rule("pre_validation", "unassigned phone", 0);
    condition(invalid, "lead_body", "homePhone", "is_invalid_phone", Value::Null);
    action(invalid, "stop_processing", json!({"message": "not a real phone"}));
    let valid = rule("processing", "valid phone", 0);
    condition(valid, "lead_body", "homePhone", "is_valid_phone", Value::Null);
    action(valid, "lead_tags", json!({"mode": "add", "tags": ["valid_phone"]}));
    let throwaway = rule("pre_validation", "throwaway email", 2);
    condition(throwaway, "lead_body", "email", "is_disposable_email", Value::Null);
    action(throwaway, "stop_processing", json!({"message": "disposable email"}));
    let lead = |id: &str, phone: &str, email: &str| {
        process(json!({"product": "payday_us", "lead_id": id,
                       "fields": {"homePhone": phone, "email": email}}))
    };
    let d = lead("Q1", "(201) 555-0123", "ann@gmail.com");
    assert_eq!(d["tags"], json!(["valid_phone"]));
    let calls = sb.count("phone");
    let d = lead("Q2", "999-555-0123", "ann@gmail.com");
    assert_eq!(d["reason"], "not a real phone", "999 is not an assigned area code");
    assert_eq!(sb.count("phone"), calls, "rejected before the paid lookup");
    let d = lead("Q3", "(201) 555-0123", "x@mailinator.com");
    assert_eq!(d["reason"], "disposable email");
    assert_eq!(sb.count("phone"), calls, "rejected before the paid lookup");
}
