// Attached lead tables: the trigger writes the outcome back into the row
// and keeps rows whose processing failed; every column type converts.

#[pg_test]
fn attached_table_writes_back_and_keeps_failed_rows() {
    setup();
    run("CREATE TABLE leads (id bigserial PRIMARY KEY, email text, phone text, publisher_id int, stage text,
                             extra jsonb, tpar jsonb, iclear_status text, iclear_decision jsonb)");
    run("SELECT iclear.attach('leads', 'payday_us', '{\"fields_column\": \"extra\", \"params_column\": \"tpar\"}')");
    let r = rule("processing", "lowercase email", 1);
    action(
        r,
        "change_lead_body_fields",
        json!({"fields": {"email": "fixed", "zip_checked": "yes"}}),
    );
    run("INSERT INTO leads (email, phone, publisher_id, extra, tpar) VALUES ('A@B.COM', '5551234567', 4, '{\"zip\": \"90210\"}', '{\"s\": 1}')");
    assert_eq!(text("SELECT iclear_status FROM leads").unwrap(), "accepted");
    assert_eq!(text("SELECT email FROM leads").unwrap(), "fixed");
    assert_eq!(
        text("SELECT extra->>'zip_checked' FROM leads").unwrap(),
        "yes"
    );
    assert_eq!(
        text("SELECT iclear_decision->>'lead_id' || (iclear_decision ? 'fields')::text FROM leads")
            .unwrap(),
        "1false",
        "the row's outcome names the lead and leaves the fields to the columns"
    );

    // a processing error (bad stage value) keeps the row, with status error
    run("INSERT INTO leads (email, stage) VALUES ('c@d.com', 'final')");
    assert_eq!(int("SELECT count(*) FROM leads"), 2);
    assert_eq!(
        text("SELECT iclear_status FROM leads WHERE id = 2").unwrap(),
        "error"
    );
    let reason = text("SELECT iclear_decision->>'reason' FROM leads WHERE id = 2").unwrap();
    assert!(reason.contains("\"stage\""), "{reason}");
    assert_eq!(
        int("SELECT count(*) FROM iclear.decision WHERE lead_id = '2' AND status = 'error'"),
        1
    );

    // on_error raise opts out; rejected skip drops rejected rows
    run("SELECT iclear.attach('leads', 'payday_us', '{\"on_error\": \"raise\", \"rejected\": \"skip\"}')");
    assert!(err("INSERT INTO leads (email, stage) VALUES ('e@f.com', 'final')").is_some());
    let stop = rule("processing", "reject gmail", 2);
    run(&format!("DELETE FROM iclear.rule WHERE id = {r}"));
    condition(stop, "lead_body", "email", "ends_with", json!("gmail.com"));
    action(stop, "stop_processing", json!({}));
    run("INSERT INTO leads (email) VALUES ('x@gmail.com'), ('y@yahoo.com')");
    assert_eq!(
        int("SELECT count(*) FROM leads"),
        3,
        "the rejected row is skipped"
    );

    let e = err("SELECT iclear.attach('leads', 'payday_us', '{\"reject\": \"skip\"}')").unwrap();
    assert!(e.contains("reject"), "{e}");
    let e = err("SELECT iclear.attach('leads', 'nope')").unwrap();
    assert!(e.contains("unknown product"), "{e}");
    run("SELECT iclear.detach('leads')");
    run("INSERT INTO leads (email) VALUES ('z@gmail.com')");
    assert_eq!(
        int("SELECT count(*) FROM leads WHERE iclear_status IS NULL"),
        1
    );
}

/// The Rust trigger reads a row as row_to_json did (the 0.3.0 trigger
/// called it) and writes values back as json_populate_record did.
#[pg_test]
fn attached_rows_convert_every_column_type_both_ways() {
    setup();
    run("CREATE TYPE pg_temp.mood AS ENUM ('calm', 'angry')");
    run("CREATE TABLE leads (id bigserial PRIMARY KEY, small int2, n int4, big int8, amount numeric(8,2),
                             nan numeric, ratio float4, score float8, inf float8, ok boolean,
                             name text, code varchar(5), pad char(3), born date, seen timestamptz,
                             at timestamp, uid uuid, ip inet, mood pg_temp.mood, tags text[], doc json,
                             body jsonb, iclear_status text, iclear_decision jsonb)");
    run("ALTER TABLE leads DROP COLUMN small");
    run("SELECT iclear.attach('leads', 'payday_us', '{\"fields_column\": \"body\"}')");
    run("INSERT INTO leads (n, big, amount, nan, ratio, score, inf, ok, name, code, pad, born, seen, at, uid,
                            ip, mood, tags, doc, body)
         VALUES (7, 9007199254740993, 12.50, 'NaN', 0.1, 2.5e-7, '-Infinity', true, 'Ann', 'ab', 'x',
                 '2026-02-03', '2026-02-03 04:05:06.5+00', '2026-02-03 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                 '10.0.0.1/32', 'calm', '{a,b}', '{\"k\": 1}', '{\"zip\": \"90210\"}')");
    let fields = json("SELECT envelope::jsonb -> 'fields' FROM iclear.decision");
    let expected = json(
        "SELECT jsonb_object_agg(k, v) FROM leads l, jsonb_each(to_jsonb(row_to_json(l))) AS e(k, v)
          WHERE jsonb_typeof(v) NOT IN ('object', 'array', 'null')
            AND k NOT IN ('id', 'iclear_status')",
    );
    let mut expected = expected.as_object().unwrap().clone();
    expected.insert("zip".into(), json!("90210"));
    assert_eq!(
        fields,
        Value::Object(expected),
        "fields as row_to_json made them"
    );
    assert_eq!(fields["big"], json!(9007199254740993i64));
    assert_eq!(fields["ratio"], json!(0.1));
    assert_eq!(fields["seen"], json!("2026-02-03T04:05:06.5+00:00"));
    assert_eq!(fields["nan"], json!("NaN"));
    assert_eq!(
        fields["ip"],
        json!("10.0.0.1"),
        "other types through row_to_json"
    );
    assert!(fields.get("tags").is_none() && fields.get("doc").is_none());

    // a jsonb value serde_json cannot hold: the row is kept, as an error
    run("INSERT INTO leads (n, name, body) VALUES (3, 'Huge', '{\"zip\": 1e400}')");
    let reason = text("SELECT iclear_status || ': ' || (iclear_decision->>'reason') FROM leads WHERE name = 'Huge'")
        .unwrap();
    assert!(
        reason.starts_with("error: ") && reason.contains("\"body\""),
        "{reason}"
    );

    // write-back through each column's input function
    let r = rule("processing", "rewrite", 1);
    action(
        r,
        "change_lead_body_fields",
        json!({"fields": {"n": "42", "amount": "3.456", "code": "abcde", "born": "2026-12-31",
                          "mood": "angry", "ok": "false", "ip": "192.168.0.1", "extra": "into body"}}),
    );
    run("INSERT INTO leads (n, name) VALUES (1, 'Bob')");
    assert_eq!(
        text("SELECT concat_ws('|', iclear_status, n, amount, code, born, mood, ok, ip, body->>'extra')
                FROM leads WHERE name = 'Bob'")
        .unwrap(),
        "accepted|42|3.46|abcde|2026-12-31|angry|f|192.168.0.1|into body"
    );

    // a value a column refuses is a processing error: the row is kept
    // with status error, and nothing of the failed decision stays
    run(&format!(
        "UPDATE iclear.rule_action SET config = '{{\"fields\": {{\"n\": \"many\"}}}}' WHERE rule_id = {r}"
    ));
    run("INSERT INTO leads (n, name) VALUES (2, 'Cy')");
    assert_eq!(
        text("SELECT concat_ws('|', iclear_status, n) FROM leads WHERE name = 'Cy'").unwrap(),
        "error|2"
    );
    let reason = text("SELECT iclear_decision->>'reason' FROM leads WHERE name = 'Cy'").unwrap();
    assert!(
        reason.contains("integer") && reason.contains("many"),
        "{reason}"
    );
    let lead = text("SELECT id::text FROM leads WHERE name = 'Cy'").unwrap();
    assert_eq!(
        text(&format!(
            "SELECT string_agg(status, ',') FROM iclear.decision WHERE lead_id = '{lead}'"
        ))
        .unwrap(),
        "error"
    );
    run("INSERT INTO leads (n) SELECT 1 FROM generate_series(1, 2)");
    assert_eq!(
        int("SELECT count(*) FROM leads WHERE iclear_status = 'error'"),
        4
    );

    // domains check what is written: a status the domain refuses makes
    // the row an error (which it accepts); a jsonb domain gets the decision
    run("CREATE DOMAIN pg_temp.verdict AS text CHECK (VALUE <> 'rejected')");
    run("CREATE DOMAIN pg_temp.outcome AS jsonb CHECK (VALUE ? 'status')");
    run(
        "CREATE TABLE leads2 (id bigserial PRIMARY KEY, email text, iclear_status pg_temp.verdict,
                              iclear_decision pg_temp.outcome)",
    );
    run("SELECT iclear.attach('leads2', 'payday_us')");
    let stop = rule("processing", "blocked domain", 2);
    condition(
        stop,
        "lead_body",
        "email",
        "ends_with",
        json!("@blocked.com"),
    );
    action(stop, "stop_processing", json!({}));
    run("INSERT INTO leads2 (email) VALUES ('a@ok.com'), ('b@blocked.com')");
    assert_eq!(
        text("SELECT string_agg(iclear_status || '/' || (iclear_decision->>'status'), ',' ORDER BY id) FROM leads2")
            .unwrap(),
        "accepted/accepted,error/error"
    );
    // a string for a domain over jsonb is a JSON string, as
    // json_populate_record makes it (not the bare text, which jsonb refuses)
    run("CREATE DOMAIN pg_temp.anyjson AS jsonb");
    run(
        "CREATE TABLE leads3 (id bigserial PRIMARY KEY, email text, iclear_status pg_temp.anyjson)",
    );
    run("SELECT iclear.attach('leads3', 'payday_us')");
    run("INSERT INTO leads3 (email) VALUES ('c@ok.com')");
    assert_eq!(
        text("SELECT iclear_status::text FROM leads3").unwrap(),
        "\"accepted\""
    );

    // used other than as iclear.attach makes it, the trigger says so
    run("SELECT iclear.detach('leads')");
    run("CREATE TRIGGER wrong AFTER INSERT ON leads FOR EACH ROW EXECUTE FUNCTION iclear.lead_trigger('payday_us')");
    let e = err("INSERT INTO leads (n) VALUES (3)").unwrap();
    assert!(e.contains("BEFORE INSERT"), "{e}");
}

/// The jsonb the trigger builds for `iclear_decision` without a text round
/// trip is the jsonb `jsonb_in` makes of the same value's text: the same
/// value and the same bytes. The text path keeps what the builder leaves to
/// it (a top-level scalar, a NUL that jsonb refuses).
#[pg_test]
fn built_jsonb_is_what_jsonb_in_makes() {
    let values = [
        json!({}),
        json!([]),
        json!({"status": "accepted", "trace": [{"rule_id": 7, "matched": true, "conditions": []}],
               "params": {"pub_ref": "pub-12"}, "b": null, "a": false}),
        json!({"n": [0, -1, 12345678901234_i64, 1.5, -0.25, 1e300, 2.5e-8, 18446744073709551615_u64]}),
        json!({"s": "quote \" backslash \\ tab \t newline \n é ✓ 𝄞 \u{1}", "": "empty key"}),
        json!({"z": 1, "a": 2, "m": {"y": [1, {"x": []}], "b": "c"}}),
        json!([[1, 2], {"k": "v"}, "s", 3, true, null]),
    ];
    for v in values {
        let built = crate::jsonb::datum(&v).expect("a container is built");
        let same: bool = Spi::get_one_with_args(
            "SELECT jsonb_send($1) = jsonb_send($2::text::jsonb)",
            &[
                unsafe { pgrx::datum::DatumWithOid::new(built, pg_sys::JSONBOID) },
                v.to_string().into(),
            ],
        )
        .unwrap()
        .unwrap();
        assert!(same, "{v}");
    }
    assert!(crate::jsonb::datum(&json!("top-level scalar")).is_none());
    assert!(crate::jsonb::datum(&json!({"s": "a\u{0}b"})).is_none());
}
