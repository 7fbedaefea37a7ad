// Pause for verification: a paused lead resumed by a confirmed code or
// rejected when its code expires, and a pause that needs the sms service
// (issue 13 item 2).

/// The rules of the resume tests: one before the pause that counts and
/// is capped at one lead a day, the pause, one after it, and one after
/// processing. Returns the pausing rule.
fn pause_rules() -> i64 {
    let before = rule("processing", "count", 1);
    run(&format!(
        "UPDATE iclear.rule SET daily_limit = 1, cap_counts = 'matches' WHERE id = {before}"
    ));
    condition(before, "random", "", "greater_or_equal", json!(0));
    action(
        before,
        "lead_tags",
        json!({"mode": "add", "tags": ["before"]}),
    );
    action(
        before,
        "increment_counter",
        json!({"counter": "seen", "key": "{%leadId%}"}),
    );
    let pause = rule("processing", "verify", 2);
    condition(pause, "random", "", "greater_or_equal", json!(0));
    action(
        pause,
        "pause_for_verification",
        json!({"phone_field": "homePhone"}),
    );
    for (stage, name, tag) in [
        ("processing", "after", "after"),
        ("after_processing", "final", "final"),
    ] {
        let r = rule(stage, name, 3);
        condition(r, "random", "", "greater_or_equal", json!(0));
        action(r, "lead_tags", json!({"mode": "add", "tags": [tag]}));
    }
    pause
}

/// The code of `phone`'s latest SMS, as the worker will send it (the
/// history keeps only its digest).
fn code_of(phone: &str) -> String {
    text(&format!(
        "SELECT o.code FROM iclear.sms_outbox o JOIN iclear.job j ON j.id = o.job_id
          WHERE j.payload ->> 'phone' = '{phone}' ORDER BY o.job_id DESC LIMIT 1"
    ))
    .unwrap()
}

#[pg_test]
fn a_confirmed_phone_resumes_the_paused_lead_and_its_row() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "sms", "sms", 0.0075);
    pause_rules();
    run("CREATE TABLE leads (id bigint PRIMARY KEY, \"homePhone\" text, iclear_status text, iclear_decision jsonb)");
    run("SELECT iclear.attach('leads', 'payday_us')");
    // the lead store inserts as a role that is not a superuser
    run("CREATE ROLE iclear_test_app LOGIN");
    run("GRANT INSERT, SELECT ON leads TO iclear_test_app");
    run("CREATE ROLE iclear_test_desk LOGIN IN ROLE iclear_verifier");
    run("SET LOCAL ROLE iclear_test_app");
    run("INSERT INTO leads (id, \"homePhone\") VALUES (7, '555 010 0701')");
    run("RESET ROLE");
    assert_eq!(text("SELECT iclear_status FROM leads").unwrap(), "paused");
    assert_eq!(
        text("SELECT lead_table::text || ' ' || id_column || ' ' || phone FROM iclear.paused_lead")
            .unwrap(),
        "leads id 5550100701"
    );
    // the desk confirms the code: the lead goes on from its pause
    let code = code_of("5550100701");
    run("SET LOCAL ROLE iclear_test_desk");
    let confirmed = Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '5550100701', $1)",
        &[code.as_str().into()],
    );
    run("RESET ROLE");
    assert_eq!(confirmed, Ok(Some(true)));
    let row = json("SELECT to_jsonb(l) FROM leads l");
    assert_eq!(row["iclear_status"], "accepted", "{row}");
    assert_eq!(
        row["iclear_decision"]["tags"],
        json!(["before", "after", "final"])
    );
    assert_eq!(row["iclear_decision"]["verification"]["status"], "verified");
    assert_eq!(
        text("SELECT string_agg(status, ',' ORDER BY id) FROM iclear.decision WHERE lead_id = '7'")
            .unwrap(),
        "paused,accepted",
        "a new decision for the same lead"
    );
    // the rule before the pause ran once: counted once, one cap slot
    assert_eq!(
        int("SELECT coalesce(sum(value), 0)::int8 FROM iclear.counter WHERE name = 'seen'"),
        1
    );
    assert_eq!(int("SELECT count(*) FROM iclear.filter_log_all WHERE lead_id = '7' AND outcome = 'cap_reached'"), 0);
    assert_eq!(int("SELECT count(*) FROM iclear.paused_lead"), 0);
    assert_eq!(
        text("SELECT outcome FROM iclear.filter_log WHERE lead_id = '7' AND kind = 'verification' ORDER BY id DESC LIMIT 1").unwrap(),
        "verified"
    );
    // a lead posted through iclear_process resumes too; a phone verified
    // outside iclear (record_sms_verification) resumes its leads
    let d = process(
        json!({"product": "payday_us", "lead_id": "P8", "fields": {"homePhone": "5550100702"}}),
    );
    assert_eq!(d["status"], "paused");
    run("SELECT iclear.record_sms_verification('payday_us', '5550100702', 'desk')");
    let last = json(
        "SELECT decision::jsonb FROM iclear.decision WHERE lead_id = 'P8' ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(last["status"], "accepted", "{last}");
    assert_eq!(
        last["tags"],
        json!(["after", "final"]),
        "lead 7 took the day's one slot of the rule before the pause: it stays skipped"
    );
}

#[pg_test]
fn an_expired_pause_is_rejected_by_the_worker() {
    setup();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    sandbox_service(&sb, "sms", "sms", 0.0075);
    let pause = pause_rules();
    run("CREATE TABLE leads (id text PRIMARY KEY, \"homePhone\" text, iclear_status text, iclear_decision json)");
    run("SELECT iclear.attach('leads', 'payday_us')");
    run("INSERT INTO leads VALUES ('E1', '5550100801')");
    // a second lead on the same phone waits as long as the newest code
    assert_eq!(
        process(
            json!({"product": "payday_us", "lead_id": "E2", "fields": {"homePhone": "5550100801"}})
        )["status"],
        "paused"
    );
    assert_eq!(
        int("SELECT count(DISTINCT expires_at) FROM iclear.paused_lead"),
        1
    );
    let code = code_of("5550100801");
    assert_eq!(int("SELECT iclear.run_worker_once()"), 1, "the SMS is sent");
    assert_eq!(
        int("SELECT count(*) FROM iclear.paused_lead"),
        2,
        "not expired yet"
    );
    run("UPDATE iclear.paused_lead SET expires_at = now() - interval '1 s'");
    run("SELECT iclear.run_worker_once()");
    assert_eq!(int("SELECT count(*) FROM iclear.paused_lead"), 0);
    let row = json("SELECT to_jsonb(l) FROM leads l");
    assert_eq!(row["iclear_status"], "rejected", "{row}");
    assert_eq!(row["iclear_decision"]["reason"], "verification expired");
    assert_eq!(row["iclear_decision"]["rejected_by"]["id"], pause);
    assert_eq!(
        row["iclear_decision"]["tags"],
        json!(["before", "final"]),
        "after-processing rules see the final outcome"
    );
    assert_eq!(
        text(
            "SELECT string_agg(status, ',' ORDER BY id) FROM iclear.decision WHERE lead_id = 'E2'"
        )
        .unwrap(),
        "paused,rejected"
    );
    // a code confirmed after that resumes nothing: the leads are finished
    assert!(Spi::get_one_with_args::<bool>(
        "SELECT iclear.confirm_sms('payday_us', '5550100801', $1)",
        &[code.as_str().into()]
    )
    .unwrap()
    .unwrap());
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision WHERE lead_id IN ('E1', 'E2')"),
        4
    );
}

#[pg_test]
fn a_pause_needs_the_sms_service() {
    setup();
    let r = rule("processing", "verify", 1);
    let e = err(&format!(
        r#"INSERT INTO iclear.rule_action (rule_id, action, config) VALUES ({r}, 'pause_for_verification', '{{"phone_field": "homePhone"}}')"#
    ))
    .unwrap_or_default();
    assert!(
        e.contains("rule_action.action") && e.contains("sms service subscribed"),
        "{e}"
    );
    // subscribed when saved, unsubscribed since: the lead is rejected, never left paused
    run("UPDATE iclear.service SET subscription = 'enabled' WHERE name = 'sms'");
    action(
        r,
        "pause_for_verification",
        json!({"phone_field": "homePhone"}),
    );
    run("UPDATE iclear.service SET subscription = 'disabled' WHERE name = 'sms'");
    let d = process(json!({"product": "payday_us", "fields": {"homePhone": "5550100901"}}));
    assert_eq!(d["status"], "rejected");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("the sms service is not subscribed"),
        "{d}"
    );
    assert_eq!(int("SELECT count(*) FROM iclear.paused_lead"), 0);
}
