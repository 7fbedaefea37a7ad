// The Verification History Service: signatures, the SMS history, the
// verifier role, pause and confirm, the resend guard.

fn verification_rule(settings: Value, columns: &str) -> i64 {
    run("INSERT INTO iclear.service (name) VALUES ('verification_history') ON CONFLICT DO NOTHING");
    global("verification_history", settings, columns)
}

const TEMPLATE: &str =
    r#"{"email": "{%productField_email%}", "homePhone": "{%productField_homePhone%}"}"#;

#[pg_test]
fn signatures_are_recorded_shared_and_expire() {
    setup();
    run("INSERT INTO iclear.product (name) VALUES ('payday_ca')");
    let settings = json!({"signature_enabled": true, "signature_template": TEMPLATE,
                          "reject_signature_missing": true, "signature_lifetime_s": 3600});
    verification_rule(settings.clone(), "");
    let lead =
        json!({"product": "payday_us", "fields": {"email": "A@b.co", "homePhone": "5550100199"}});
    let d = process(lead.clone());
    assert_eq!(d["status"], "rejected");
    assert_eq!(d["reason"], "verification_history: signature missing");
    let sig = Spi::get_one_with_args::<String>(
        "SELECT iclear.record_verification('payday_us', $1)",
        &[JsonB(json!({"email": "a@b.co ", "homePhone": "5550100199"})).into()],
    )
    .unwrap()
    .unwrap();
    assert_eq!(sig.len(), 64);
    assert_eq!(process(lead.clone())["status"], "accepted");
    // the same template on another product gives the same signature, and
    // a record made for one product serves the other
    Spi::run_with_args(
        "INSERT INTO iclear.global_rule (product_id, service, settings)
         SELECT id, 'verification_history', $1 FROM iclear.product WHERE name = 'payday_ca'",
        &[JsonB(settings).into()],
    )
    .unwrap();
    let sig_ca = Spi::get_one::<String>(
        r#"SELECT iclear.record_verification('payday_ca', '{"fields": {"homePhone": "5550100199", "email": "a@b.co"}}')"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(sig, sig_ca);
    let mut ca = lead.clone();
    ca["product"] = "payday_ca".into();
    assert_eq!(process(ca)["status"], "accepted");
    // near the lifetime (the exact second is an engine test with a fixed
    // clock); clock_timestamp(), since the engine reads the wall clock and
    // now() is when this test's transaction began
    run("UPDATE iclear.verification_history_local SET recorded_at = clock_timestamp() - interval '3590 s'");
    assert_eq!(process(lead.clone())["status"], "accepted");
    run("UPDATE iclear.verification_history_local SET recorded_at = clock_timestamp() - interval '3610 s'");
    let d = process(lead.clone());
    assert_eq!(d["reason"], "verification_history: signature expired");
    // conditions read the checks
    assert_eq!(
        text("SELECT detail->'checks'->>'signature' FROM iclear.filter_log WHERE kind = 'service' ORDER BY at DESC LIMIT 1").unwrap(),
        "expired"
    );
    let e = err("SELECT iclear.record_verification('nope', '{}')").unwrap();
    assert!(e.contains("\"product\""), "{e}");
    run("INSERT INTO iclear.product (name) VALUES ('bare')");
    let e = err("SELECT iclear.record_verification('bare', '{}')").unwrap();
    assert!(
        e.contains("no verification_history rule with signature_enabled"),
        "{e}"
    );
}

#[pg_test]
fn sms_history_code_match_and_combined_logic() {
    setup();
    let g = verification_rule(
        json!({"sms_enabled": true, "phone_field": "homePhone", "reject_sms_expired": true,
               "sms_lifetime_s": 600, "sms_code_match": true, "tpar_code_key": "verificationCode",
               "reject_sms_mismatch": true}),
        "",
    );
    run("SELECT iclear.record_sms_verification('payday_us', '+1 (555) 010-0199', '123456')");
    let lead = |code: &str| {
        process(
            json!({"product": "payday_us", "fields": {"homePhone": "555-010-0199", "email": "a@b.co"},
                       "params": {"verificationCode": code}}),
        )
    };
    assert_eq!(lead("123456")["status"], "accepted");
    let d = lead("000000");
    assert_eq!(d["status"], "rejected");
    assert!(
        d["reason"].as_str().unwrap().contains("code mismatch"),
        "{d}"
    );
    run("UPDATE iclear.sms_verification_local SET verified_at = clock_timestamp() - interval '610 s'");
    assert_eq!(
        lead("123456")["reason"],
        "verification_history: SMS verification expired"
    );
    run("UPDATE iclear.sms_verification_local SET verified_at = clock_timestamp() - interval '590 s'");
    assert_eq!(lead("123456")["status"], "accepted");
    // both checks on: the signature is missing, SMS is fine
    for (logic, status) in [("any", "rejected"), ("both", "accepted")] {
        Spi::run_with_args(
            "UPDATE iclear.global_rule SET settings = $1 WHERE id = $2",
            &[
                JsonB(json!({"combined_logic": logic, "signature_enabled": true,
                             "signature_template": TEMPLATE, "reject_signature_missing": true,
                             "signature_lifetime_s": 60, "sms_enabled": true, "phone_field": "homePhone",
                             "reject_sms_expired": true, "sms_lifetime_s": 600}))
                .into(),
                g.into(),
            ],
        )
        .unwrap();
        assert_eq!(lead("123456")["status"], status, "{logic}");
    }
    // the SQL phone rule is the engine's
    for p in [
        "+1 (555) 010-0199",
        "15550100199",
        "555.010.0199",
        "+44 20 7946 0958",
        "n/a",
    ] {
        let sql =
            Spi::get_one_with_args::<String>("SELECT iclear.normalize_phone($1)", &[p.into()])
                .unwrap();
        assert_eq!(sql, iclear_engine::service::verification_history::normalize_phone(p), "{p}");
    }
    let e = err("SELECT iclear.record_sms_verification('payday_us', 'none', '1')").unwrap();
    assert!(e.contains("has no digits"), "{e}");
}

#[pg_test]
fn pause_confirm_and_repost() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "sms", "sms", 0.0075);
    let r = rule("processing", "SMS verification", 1);
    condition(r, "random", "", "greater_or_equal", json!(0));
    action(
        r,
        "pause_for_verification",
        json!({"lead_status": "pre_screening", "phone_field": "homePhone", "message": "Pre-Screening"}),
    );
    action(
        r,
        "lead_tags",
        json!({"mode": "add", "tags": ["sms_verification"]}),
    );
    let lead =
        json!({"product": "payday_us", "lead_id": "P1", "fields": {"homePhone": "(555) 010-0199"}});
    let d = process(lead.clone());
    assert_eq!(d["status"], "paused");
    assert_eq!(d["reason"], "Pre-Screening");
    assert_eq!(d["verification"]["lead_status"], "pre_screening");
    assert_eq!(d["tags"], json!(["sms_verification"]));
    assert_eq!(d["queued"].as_array().unwrap().len(), 1);
    let pending = json("SELECT to_jsonb(s) FROM iclear.sms_verification s");
    assert_eq!(
        (pending["status"].as_str(), pending["phone"].as_str()),
        (Some("pending"), Some("5550100199"))
    );
    // the history keeps a keyed digest of the code (SECURITY.md "SMS
    // codes"); the code itself waits in the outbox for the worker
    let code = text("SELECT code FROM iclear.sms_outbox").unwrap();
    assert_eq!(code.len(), 6);
    let kept = pending["code"].as_str().unwrap();
    assert_eq!(kept.len(), 64, "{kept}");
    assert!(!kept.contains(&code));
    // the worker sends it; the code is in the SMS, never in a log or job
    assert_eq!(int("SELECT iclear.run_worker_once()"), 1);
    assert_eq!(int("SELECT count(*) FROM iclear.sms_outbox"), 0, "sent: no longer kept");
    assert_eq!(sb.count("sms"), 1);
    assert!(sb.sms()[0]["text"].as_str().unwrap().contains(&code));
    assert_eq!(sb.sms()[0]["to"], "5550100199");
    assert_eq!(
        text("SELECT outcome FROM iclear.filter_log WHERE name = 'sms'").unwrap(),
        "sent"
    );
    let logged = text("SELECT string_agg(coalesce(request::text, '') || detail::text, ' ') FROM iclear.filter_log").unwrap()
        + &text("SELECT string_agg(payload::text, ' ') FROM iclear.job").unwrap();
    assert!(!logged.contains(&code), "{logged}");
    // a wrong code counts; the right one verifies
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert!(!Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '5550100199', $1)",
        &[wrong.into()]
    )
    .unwrap()
    .unwrap());
    assert_eq!(int("SELECT attempts::int8 FROM iclear.sms_verification"), 1);
    assert!(Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '+1 555 010 0199', $1)",
        &[code.as_str().into()]
    )
    .unwrap()
    .unwrap());
    assert_eq!(
        text("SELECT status FROM iclear.sms_verification").unwrap(),
        "verified"
    );
    // the re-posted lead gets the decision the confirmation gave it, and
    // nothing runs again (issue 25 item 6: it was processed twice)
    let decisions = int("SELECT count(*) FROM iclear.decision WHERE lead_id = 'P1'");
    let logged = int("SELECT count(*) FROM iclear.filter_log WHERE lead_id = 'P1'");
    let d = process(lead.clone());
    assert_eq!(d["status"], "accepted");
    assert_eq!(int("SELECT count(*) FROM iclear.decision WHERE lead_id = 'P1'"), decisions);
    assert_eq!(int("SELECT count(*) FROM iclear.filter_log WHERE lead_id = 'P1'"), logged);
    // asked to, it is processed again, and the verified phone passes
    let mut again = lead.clone();
    again["reprocess"] = json!(true);
    assert_eq!(process(again)["status"], "accepted");
    assert_eq!(text("SELECT outcome FROM iclear.filter_log WHERE kind = 'verification' ORDER BY at DESC LIMIT 1").unwrap(), "already_verified");
    // codes expire, and wrong codes are limited
    let other = json!({"product": "payday_us", "fields": {"homePhone": "5550100200"}});
    assert_eq!(process(other.clone())["status"], "paused");
    let code2 =
        text("SELECT code FROM iclear.sms_verification WHERE phone = '5550100200'").unwrap();
    run("UPDATE iclear.sms_verification_local SET expires_at = now() - interval '1 s' WHERE phone = '5550100200'");
    assert!(!Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '5550100200', $1)",
        &[code2.as_str().into()]
    )
    .unwrap()
    .unwrap());
    assert_eq!(
        process(other.clone())["status"],
        "paused",
        "a new code is sent"
    );
    let code3 = text("SELECT code FROM iclear.sms_verification WHERE phone = '5550100200' AND status = 'pending'").unwrap();
    run("SET LOCAL iclear.sms_max_attempts = 2");
    let wrong = if code3 == "999999" {
        "999998"
    } else {
        "999999"
    };
    for _ in 0..2 {
        assert!(!Spi::get_one_with_args::<bool>(
            "SELECT iclear.confirm_sms('payday_us', '5550100200', $1)",
            &[wrong.into()]
        )
        .unwrap()
        .unwrap());
    }
    assert!(
        !Spi::get_one_with_args::<bool>(
            "SELECT iclear.confirm_sms('payday_us', '5550100200', $1)",
            &[code3.as_str().into()]
        )
        .unwrap()
        .unwrap(),
        "dead after the wrong attempts"
    );
    assert_eq!(int("SELECT count(*) FROM iclear.sms_verification WHERE phone = '5550100200' AND status = 'pending'"), 0);
    // no phone: rejected
    assert_eq!(
        process(json!({"product": "payday_us", "fields": {}}))["status"],
        "rejected"
    );
}

#[pg_test]
fn verifiers_record_and_confirm_and_read_nothing_else() {
    setup();
    verification_rule(
        json!({"signature_enabled": true, "signature_template": TEMPLATE, "signature_lifetime_s": 60}),
        "",
    );
    run("CREATE ROLE iclear_test_desk LOGIN IN ROLE iclear_verifier");
    run("SET LOCAL ROLE iclear_test_desk");
    run(
        r#"SELECT iclear.record_verification('payday_us', '{"email": "v@x.co", "homePhone": "5550100300"}')"#,
    );
    let e =
        err(r#"SELECT iclear.record_verification('payday_us', '{"email": "v@x.co"}')"#).unwrap();
    assert!(
        e.contains("lacks a value the signature template needs"),
        "{e}"
    );
    run("SELECT iclear.record_sms_verification('payday_us', '5550100300', '4321')");
    assert!(
        !Spi::get_one::<bool>("SELECT iclear.confirm_sms('payday_us', '5550100300', '4321')")
            .unwrap()
            .unwrap(),
        "nothing pending"
    );
    for q in [
        "SELECT count(*) FROM iclear.sms_verification",
        "SELECT count(*) FROM iclear.verification_history",
        "SELECT count(*) FROM iclear.decision",
        "SELECT count(*) FROM iclear.global_rule",
        "SELECT iclear_process('{\"product\": \"payday_us\"}')",
    ] {
        let e = err(q).unwrap_or_default();
        assert!(e.contains("permission denied"), "{q}: {e}");
    }
    run("RESET ROLE");
    assert_eq!(int("SELECT count(*) FROM iclear.verification_history"), 1);
    assert_eq!(
        int("SELECT count(*) FROM iclear.sms_verification WHERE status = 'verified'"),
        1
    );
}

#[pg_test]
fn sms_resend_guard_sms_caps_and_exhausted_leases() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "sms", "sms", 0.01);
    let r = rule("processing", "verify", 1);
    action(
        r,
        "pause_for_verification",
        json!({"phone_field": "homePhone"}),
    );
    let lead =
        |phone: &str| process(json!({"product": "payday_us", "fields": {"homePhone": phone}}));
    // a re-post within a minute: still paused, same code, no second SMS
    assert_eq!(lead("5550100401")["queued"].as_array().unwrap().len(), 1);
    let code = text("SELECT code FROM iclear.sms_verification WHERE phone = '5550100401'").unwrap();
    let again = lead("5550100401");
    assert_eq!(again["status"], "paused");
    assert_eq!(again["queued"], json!([]));
    assert_eq!(int("SELECT count(*) FROM iclear.job WHERE kind = 'sms'"), 1);
    assert_eq!(text("SELECT code FROM iclear.sms_verification WHERE phone = '5550100401' AND status = 'pending'").unwrap(), code);
    // an sms cap: the next phone cannot be verified, so it is rejected
    run("INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('sms', 'daily', 1)");
    assert_eq!(
        lead("5550100402")["status"],
        "paused",
        "the cap's one message"
    );
    let d = lead("5550100403");
    assert_eq!(d["status"], "rejected");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("sms global daily cap of 1"),
        "{d}"
    );
    // a job whose lease ran out after its last attempt is failed, not called again
    run("SET LOCAL iclear.job_max_attempts = 1");
    run("UPDATE iclear.job SET status = 'running', attempts = 1, leased_until = now() - interval '1 s'");
    let jobs = int("SELECT count(*) FROM iclear.job");
    assert_eq!(int("SELECT iclear.run_worker_once()"), 0);
    assert_eq!(
        int("SELECT count(*) FROM iclear.job WHERE status = 'failed' AND last_error LIKE '%lease expired%'"),
        jobs
    );
    assert_eq!(sb.count("sms"), 0);
    // the verification functions are not PUBLIC
    run("CREATE ROLE iclear_test_app LOGIN");
    run("GRANT USAGE ON SCHEMA iclear TO iclear_test_app");
    run("SET LOCAL ROLE iclear_test_app");
    let e = err("SELECT iclear.confirm_sms('payday_us', '5550100401', '1')").unwrap_or_default();
    assert!(e.contains("permission denied"), "{e}");
    run("RESET ROLE");
}

/// `store_signature_on_accept` (issue 25 item 8): an accepted lead's
/// signature is stored, so the next lead of the same person passes the
/// signature check; a rejected lead's is not; a lead paused for SMS is
/// stored when confirm_sms resumes it accepted; off by default.
#[pg_test]
fn an_accepted_lead_stores_its_signature_when_asked() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "sms", "sms", 0.0075);
    let settings = json!({"signature_enabled": true, "signature_template": TEMPLATE,
                          "signature_lifetime_s": 3600});
    let g = verification_rule(settings.clone(), "");
    let stored = || int("SELECT count(*) FROM iclear.verification_history_local");
    let lead = |id: &str, email: &str| {
        process(json!({"product": "payday_us", "lead_id": id,
                       "fields": {"email": email, "homePhone": "5550100199"}}))
    };
    assert_eq!(lead("S-1", "a@b.co")["status"], "accepted");
    assert_eq!(stored(), 0, "off by default");
    let mut on = settings.clone();
    on["store_signature_on_accept"] = true.into();
    Spi::run_with_args(
        "UPDATE iclear.global_rule SET settings = $1 WHERE id = $2",
        &[JsonB(on).into(), g.into()],
    )
    .unwrap();
    assert_eq!(lead("S-2", "a@b.co")["status"], "accepted");
    assert_eq!(stored(), 1);
    // the stored signature is the one record_verification makes
    let sig = text("SELECT iclear.record_verification('payday_us', '{\"email\": \"a@b.co\", \"homePhone\": \"5550100199\"}')").unwrap();
    assert_eq!(
        text("SELECT signature FROM iclear.verification_history_local ORDER BY recorded_at LIMIT 1"),
        Some(sig)
    );
    run("DELETE FROM iclear.verification_history_local");
    // a rejected lead stores nothing
    let stop = rule("processing", "stop", 1);
    condition(stop, "lead_body", "email", "equals", json!("bad@b.co"));
    action(stop, "stop_processing", json!({"message": "no"}));
    assert_eq!(lead("S-3", "bad@b.co")["status"], "rejected");
    assert_eq!(stored(), 0);
    // paused, then confirmed: stored when it is accepted
    let pause = rule("processing", "verify", 2);
    condition(pause, "lead_body", "email", "equals", json!("p@b.co"));
    action(pause, "pause_for_verification", json!({"phone_field": "homePhone"}));
    assert_eq!(lead("S-4", "p@b.co")["status"], "paused");
    assert_eq!(stored(), 0, "not while paused");
    let code = text("SELECT code FROM iclear.sms_outbox").unwrap();
    assert!(Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '5550100199', $1)",
        &[code.as_str().into()]
    )
    .unwrap()
    .unwrap());
    assert_eq!(
        text("SELECT status FROM iclear.decision WHERE lead_id = 'S-4' ORDER BY id DESC LIMIT 1").as_deref(),
        Some("accepted")
    );
    assert_eq!(stored(), 1, "stored on resume");
}
