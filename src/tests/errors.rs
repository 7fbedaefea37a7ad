// Errors (issue 15 item 1): each kind has its SQLSTATE (src/errors.rs, README
// "Errors"), the message names the key, and an expected list is the HINT.

/// (SQLSTATE, message, hint) of the error `sql` raises, or None.
fn failure(sql: &str) -> Option<(String, String, String)> {
    run("DO $d$ BEGIN IF to_regprocedure('pg_temp.failure(text)') IS NULL THEN
         CREATE FUNCTION pg_temp.failure(q text) RETURNS text[] LANGUAGE plpgsql AS $$
         DECLARE st text; msg text; hint text;
         BEGIN EXECUTE q; RETURN NULL;
         EXCEPTION WHEN OTHERS THEN
             GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
             RETURN ARRAY[st, msg, hint];
         END $$;
         END IF; END $d$");
    Spi::get_one_with_args::<Vec<Option<String>>>("SELECT pg_temp.failure($1)", &[sql.into()])
        .unwrap()
        .map(|v| {
            let at = |i: usize| v.get(i).cloned().flatten().unwrap_or_default();
            (at(0), at(1), at(2))
        })
}

#[pg_test]
fn errors_carry_their_sqlstate_and_hint() {
    setup();
    // invalid input: 22023, the key named
    let (st, msg, _) =
        failure(r#"SELECT iclear_process('{"product": "payday_us", "publisher_id": "x"}')"#)
            .unwrap();
    assert_eq!(st, "22023", "{msg}");
    assert!(msg.contains("publisher_id"), "{msg}");
    // a configuration row refused by its check: 23514, the expected list as HINT
    let r = rule("processing", "r", 1);
    let (st, msg, hint) = failure(&format!(
        "INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
         VALUES ({r}, 'lead_body', 'state', 'near', '\"x\"')"
    ))
    .unwrap();
    assert_eq!(st, "23514", "{msg}");
    assert!(
        msg.contains("operator") && msg.contains("near") && !msg.contains("expected"),
        "{msg}"
    );
    assert!(
        hint.starts_with("expected one of:") && hint.contains("equals"),
        "{hint}"
    );
    // bad attach options: 22023
    let (st, msg, _) =
        failure(r#"SELECT iclear.attach('pg_class', 'payday_us', '{"id_col": "x"}')"#).unwrap();
    assert_eq!(st, "22023", "{msg}");
    // the attach trigger used as something else: 39P01
    run("CREATE TABLE misused (id int)");
    run("CREATE TRIGGER t AFTER INSERT ON misused FOR EACH ROW EXECUTE FUNCTION iclear.lead_trigger('payday_us')");
    let (st, msg, _) = failure("INSERT INTO misused VALUES (1)").unwrap();
    assert_eq!(st, "39P01", "{msg}");
    assert!(msg.contains("BEFORE INSERT"), "{msg}");
    // an operator setting a credential: 42501, the key named
    global("ip_analysis", json!({"api_key": "k"}), "");
    run("CREATE ROLE iclear_test_ops LOGIN IN ROLE iclear_operator");
    run("SET LOCAL ROLE iclear_test_ops");
    let (st, msg, _) =
        failure(r#"UPDATE iclear.global_rule SET settings = settings || '{"api_key": "other"}'"#)
            .unwrap();
    run("RESET ROLE");
    assert_eq!(st, "42501", "{msg}");
    assert!(msg.contains("api_key"), "{msg}");
    // a verification hub that cannot be reached: 08006, not invalid input
    verification_rule(
        json!({"signature_enabled": true, "signature_template": TEMPLATE, "signature_lifetime_s": 60}),
        "",
    );
    run("CREATE EXTENSION IF NOT EXISTS postgres_fdw");
    run("CREATE SERVER dead_hub FOREIGN DATA WRAPPER postgres_fdw
         OPTIONS (host '127.0.0.1', port '1', dbname 'none')");
    run("CREATE USER MAPPING FOR CURRENT_USER SERVER dead_hub OPTIONS (user 'postgres')");
    run("SELECT iclear.use_verification_hub('dead_hub')");
    let (st, msg, _) = failure(
        r#"SELECT iclear.record_verification('payday_us', '{"email": "v@x.co", "homePhone": "5550100300"}')"#,
    )
    .unwrap();
    assert_eq!(st, "08006", "{msg}");
    assert!(
        msg.contains("verification history cannot be written"),
        "{msg}"
    );
}
