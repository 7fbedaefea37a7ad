//! Least privilege, tried as production does: each role logs in and is
//! shown what it can and cannot do. Application roles that are not
//! superusers insert leads with nothing but INSERT on their own table;
//! iclear_admin alone handles credentials and endpoints; iclear_operator
//! runs the rules; iclear_reader reads the reports; objects planted in
//! `public` are never called by iclear's SQL.

use iclear_it::{Cluster, FIXTURE};
use iclear_services::sandbox::Sandbox;
use postgres::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "SECRETKEY123";

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The SQLSTATE and message (with its hint) of a statement that must fail.
fn refused(c: &mut Client, sql: &str) -> (String, String) {
    let e = c
        .batch_execute(sql)
        .expect_err(&format!("{sql}: should be refused"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    let hint = db.hint().unwrap_or_default();
    (
        db.code().code().to_string(),
        format!("{} {hint}", db.message()),
    )
}

fn denied(c: &mut Client, sql: &str) {
    let (code, msg) = refused(c, sql);
    assert_eq!(code, "42501", "{sql}: {msg}");
}

/// A product `payday_us` (FIXTURE: a DNPL on email, a test-email rule), a
/// sync IP Analysis global rule against the sandbox with a credential, a
/// lead table attached, and the roles: `app` (INSERT on leads), `ops`
/// (iclear_operator), `boss` (iclear_admin), `report` (iclear_reader).
fn setup(cl: &Cluster, sb: &Sandbox, db: &str) -> Client {
    let mut c = cl.database(db);
    c.batch_execute(FIXTURE).unwrap();
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.service (name, endpoint) VALUES ('ip_analysis', '{url}/ip');
           INSERT INTO iclear.global_rule (product_id, service, settings)
           SELECT id, 'ip_analysis', '{{"api_key": "{KEY}", "reject_fraud_score_gte": 90}}' FROM iclear.product;
           CREATE TABLE public.leads (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text,
                                      "userIp" text, iclear_status text, iclear_decision jsonb);
           SELECT iclear.attach('public.leads', 'payday_us');
           DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
                   CREATE ROLE app LOGIN; CREATE ROLE ops LOGIN IN ROLE iclear_operator;
                   CREATE ROLE boss LOGIN IN ROLE iclear_admin; CREATE ROLE report LOGIN IN ROLE iclear_reader;
               END IF;
           END $$;
           GRANT INSERT, SELECT ON public.leads TO app;"#,
        url = sb.base_url()
    ))
    .unwrap();
    c
}

#[test]
fn an_application_role_needs_only_insert_on_its_lead_table() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = setup(&cl, &sb, "t_app");
    let mut app = cl.connect_as("t_app", "app");
    let status = |app: &mut Client, email: &str, ip: &str| -> (String, Value) {
        let r = app
            .query_one(
                r#"INSERT INTO public.leads (email, "userIp") VALUES ($1, $2)
                   RETURNING iclear_status, iclear_decision"#,
                &[&email, &ip],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (s, d) = status(&mut app, "fraud@example.com", "10.0.0.1");
    assert_eq!(s, "rejected", "the DNPL'd email: {d}");
    let (s, d) = status(&mut app, "ok@example.com", "10.0.0.95");
    assert_eq!(s, "rejected", "fraud score 95 >= 90: {d}");
    let (s, d) = status(&mut app, "ok@example.com", "10.0.0.5");
    assert_eq!(s, "accepted", "{d}");
    assert_eq!(sb.count("ip"), 2, "the lookups were made");
    // the application role reads nothing of iclear and calls nothing
    denied(&mut app, "SELECT * FROM iclear.global_rule");
    denied(&mut app, "SELECT * FROM iclear.decision");
    denied(
        &mut app,
        r#"SELECT iclear_process('{"product": "payday_us"}'::jsonb)"#,
    );
    // EXECUTE on iclear_process is all it needs to call it
    c.batch_execute("GRANT EXECUTE ON FUNCTION public.iclear_process(jsonb) TO app")
        .unwrap();
    let d: Value = app
        .query_one(
            r#"SELECT iclear_process('{"product": "payday_us", "fields": {"email": "fraud@example.com"}}'::jsonb)"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(d["status"], "rejected", "{d}");
    denied(&mut app, "SELECT * FROM iclear.global_rule");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.decision WHERE decision->>'status' = 'error'"
        ),
        0
    );
}

#[test]
fn roles_do_what_their_names_say() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = setup(&cl, &sb, "t_roles");
    let mut ops = cl.connect_as("t_roles", "ops");
    let mut boss = cl.connect_as("t_roles", "boss");
    let mut report = cl.connect_as("t_roles", "report");

    // the operator sees the global rule without its credential ...
    let settings: Value = ops
        .query_one("SELECT settings FROM iclear.global_rule", &[])
        .unwrap()
        .get(0);
    assert_eq!(settings, json!({"reject_fraud_score_gte": 90}));
    denied(&mut ops, "SELECT * FROM iclear.global_rule_credential");
    // ... edits it without losing the credential ...
    ops.batch_execute(
        r#"UPDATE iclear.global_rule SET settings = '{"reject_fraud_score_gte": 80}'"#,
    )
    .unwrap();
    let d: Value = ops
        .query_one(
            r#"SELECT iclear_process('{"product": "payday_us", "fields": {"email": "a@example.com", "userIp": "10.0.0.85"}}'::jsonb)"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        d["status"], "rejected",
        "85 >= 80, with the stored key: {d}"
    );
    // ... and may not set one
    let (code, msg) = refused(
        &mut ops,
        r#"UPDATE iclear.global_rule SET settings = settings || '{"api_key": "mine"}'"#,
    );
    assert_eq!(code, "42501", "{msg}");
    assert!(
        msg.contains("api_key") && msg.contains("iclear_admin"),
        "{msg}"
    );
    // operators run rules, lists, products and caps ...
    ops.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('auto_us');
           INSERT INTO iclear.list_entry (list_id, value) SELECT id, 'worse@example.com' FROM iclear.list;
           INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'daily', 1000);
           UPDATE iclear.rule SET daily_limit = 500;
           UPDATE iclear.service SET subscription = 'enabled', cost = 0.004;
           SELECT count(*) FROM iclear.filter_log;
           SELECT * FROM iclear.cap_status;"#,
    )
    .unwrap();
    // ... but neither endpoints, nor verifications, nor cap counts, nor jobs
    denied(
        &mut ops,
        "UPDATE iclear.service SET endpoint = 'http://127.0.0.1:1/ip'",
    );
    denied(
        &mut ops,
        "UPDATE iclear.sms_verification SET status = 'verified'",
    );
    denied(&mut ops, "DELETE FROM iclear.cap_use");
    denied(
        &mut ops,
        "INSERT INTO iclear.job (kind, payload) VALUES ('x', '{}')",
    );
    denied(&mut ops, "INSERT INTO iclear.lookup_cache (service, lookup_key, response) VALUES ('ip_analysis', 'x', '{}')");
    denied(
        &mut ops,
        "SELECT iclear.record_verification('payday_us', '{}')",
    );
    denied(&mut ops, "SELECT iclear.maintain()");

    // the admin sets credentials and endpoints; a credential set to null is removed
    boss.batch_execute(&format!(
        r#"UPDATE iclear.global_rule SET settings = settings || '{{"api_key": "NEWKEY456"}}';
           UPDATE iclear.service SET endpoint = '{url}/ip' WHERE name = 'ip_analysis';"#,
        url = sb.base_url()
    ))
    .unwrap();
    let creds: Value = boss
        .query_one("SELECT credentials FROM iclear.global_rule_credential", &[])
        .unwrap()
        .get(0);
    assert_eq!(creds, json!({"api_key": "NEWKEY456"}));
    let (code, msg) = refused(
        &mut boss,
        "UPDATE iclear.service SET endpoint = 'file:///etc/passwd'",
    );
    assert_eq!(code, "23514", "{msg}");
    assert!(msg.contains("service.endpoint"), "{msg}");

    // the reader reads the reports and nothing else
    report
        .batch_execute(
            "SELECT * FROM iclear.lead_log; SELECT * FROM iclear.full_log; SELECT * FROM iclear.cap_status;
             SELECT * FROM iclear.health; SELECT * FROM iclear.service_usage;",
        )
        .unwrap();
    denied(&mut report, "SELECT * FROM iclear.global_rule");
    denied(&mut report, "SELECT * FROM iclear.decision");
    denied(&mut report, "UPDATE iclear.rule SET status = 'paused'");
    denied(
        &mut report,
        r#"SELECT iclear_process('{"product": "payday_us"}'::jsonb)"#,
    );
    // verifiers record verifications and nothing else (review F-S3)
    c.batch_execute("CREATE ROLE desk LOGIN IN ROLE iclear_verifier")
        .unwrap();
    let mut desk = cl.connect_as("t_roles", "desk");
    denied(&mut desk, "SELECT iclear.config_changed()");
    denied(&mut desk, "SELECT * FROM iclear.lead_log");

    // no credential in any view, log, decision or job
    for sql in [
        "SELECT count(*) FROM iclear.full_log f WHERE f::text ~ '(SECRETKEY123|NEWKEY456)'",
        "SELECT count(*) FROM iclear.decision d WHERE d::text ~ '(SECRETKEY123|NEWKEY456)'",
        "SELECT count(*) FROM iclear.filter_log f WHERE f::text ~ '(SECRETKEY123|NEWKEY456)'",
        "SELECT count(*) FROM iclear.global_rule g WHERE g::text ~ '(SECRETKEY123|NEWKEY456)'",
    ] {
        assert_eq!(count(&mut c, sql), 0, "{sql}");
    }
    assert!(count(&mut c, "SELECT count(*) FROM iclear.filter_log") > 0);
}

/// Review finding 3: with `public` ahead of `pg_catalog` on every path,
/// objects planted there would take over iclear's SQL in the insert path,
/// the worker and maintenance. None is called.
#[test]
fn objects_in_public_are_never_called() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start_with("-c iclear.database=t_path -c iclear.worker_naptime=100");
    let mut c = setup(&cl, &sb, "t_path");
    c.batch_execute(
        r#"CREATE TABLE public.pwned (who text, what text);
           GRANT INSERT ON public.pwned TO PUBLIC;
           CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
             $$ INSERT INTO public.pwned VALUES (current_user, 'now'); SELECT pg_catalog.now() $$;
           CREATE FUNCTION public.texteq_spy(text, text) RETURNS boolean LANGUAGE sql AS
             $$ INSERT INTO public.pwned VALUES (current_user, '='); SELECT pg_catalog.texteq($1, $2) $$;
           CREATE OPERATOR public.= (FUNCTION = public.texteq_spy, LEFTARG = text, RIGHTARG = text);
           CREATE FUNCTION public.right(name, int) RETURNS text LANGUAGE sql AS
             $$ INSERT INTO public.pwned VALUES (current_user, 'right'); SELECT pg_catalog.right($1::text, $2) $$;
           CREATE FUNCTION public.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql AS
             $$ INSERT INTO public.pwned VALUES (current_user, 'to_jsonb'); SELECT pg_catalog.to_jsonb($1) $$;
           ALTER DATABASE t_path SET search_path = public, pg_catalog;
           ALTER ROLE app SET search_path = public, pg_catalog;
           UPDATE iclear.global_rule SET execution = 'async';"#,
    )
    .unwrap();
    // a new session, as cron's would be, and the application's
    let mut su = cl.connect("t_path");
    let mut app = cl.connect_as("t_path", "app");
    for i in 1..=5 {
        app.execute(
            r#"INSERT INTO public.leads (email, "userIp") VALUES ($1, $2)"#,
            &[&format!("lead{i}@example.com"), &format!("10.0.0.{i}")],
        )
        .unwrap();
    }
    su.batch_execute(
        "SELECT iclear.maintain(); SELECT iclear.lead_info('1'); SELECT * FROM iclear.cap_status;",
    )
    .unwrap();
    // the worker (restarted, so it connects with the planted path) does the lookups
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'iclear worker'",
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    // (polled from a session with the usual path: the planted `=` would
    // answer a query of this test's own)
    while count(
        &mut c,
        "SELECT count(*) FROM iclear.job WHERE status = 'done'",
    ) < 5
    {
        assert!(Instant::now() < until, "jobs not done\n{}", cl.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sb.count("ip"), 5);
    let pwned: i64 = count(&mut c, "SELECT count(*) FROM public.pwned");
    let who: Vec<String> = c
        .query(
            "SELECT who || ' ' || what || ' ' || count(*) FROM public.pwned GROUP BY who, what",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pwned, 0, "planted objects were called: {who:?}");
    // the planted operator does work for a session that asks for it
    su.batch_execute("SELECT 'a'::text = 'a'::text").unwrap();
    assert!(count(&mut c, "SELECT count(*) FROM public.pwned") > 0);
}

/// What the payloads below record: every role that ran them, and whether
/// they could read a credential or move an endpoint.
const PAYLOAD: &str = r#"
BEGIN
    INSERT INTO public.seen VALUES (current_user::text, tg);
    BEGIN
        INSERT INTO public.loot SELECT credentials::text FROM iclear.global_rule_credential;
    EXCEPTION WHEN others THEN NULL;
    END;
    BEGIN
        UPDATE iclear.service SET endpoint = 'http://127.0.0.1:9/stolen' WHERE name = 'ip_analysis';
    EXCEPTION WHEN others THEN NULL;
    END;
    RETURN true;
END"#;

/// Review 0.5 finding 1: a domain CHECK (or a default, a constraint, a
/// trigger, an index's type) that an operator or an application role
/// defines on a lead table ran as the extension owner, a superuser. Each
/// variant now runs as the role that defined it (or that inserts), and
/// gains nothing: no credential read, no endpoint moved.
#[test]
fn code_a_user_defines_on_a_lead_table_gains_no_right() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = setup(&cl, &sb, "t_evil");
    let endpoint = format!("{}/ip", sb.base_url());
    c.batch_execute(&format!(
        r#"CREATE TABLE public.seen (who text, what text);
           CREATE TABLE public.loot (what text);
           GRANT INSERT ON public.seen, public.loot TO PUBLIC;
           CREATE ROLE lead_store LOGIN;
           CREATE SCHEMA app AUTHORIZATION lead_store;
           CREATE ROLE desk LOGIN IN ROLE iclear_verifier;
           UPDATE iclear.service SET subscription = 'enabled', endpoint = '{url}/sms' WHERE name = 'sms';
           INSERT INTO iclear.product (name) VALUES ('paused');
           INSERT INTO iclear.rule (product_id, stage, name) SELECT id, 'processing', 'verify'
             FROM iclear.product WHERE name = 'paused';
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'pause_for_verification', '{{"phone_field": "homePhone"}}' FROM iclear.rule
            WHERE name = 'verify';"#,
        url = sb.base_url()
    ))
    .unwrap();

    // 1. the operator's temporary domain on the outcome column, as reviewed
    let mut ops = cl.connect_as("t_evil", "ops");
    ops.batch_execute(&format!(
        r#"CREATE FUNCTION pg_temp.evil(v text, tg text DEFAULT 'domain') RETURNS boolean
           LANGUAGE plpgsql AS $f${PAYLOAD}$f$;
           CREATE DOMAIN pg_temp.st AS text CHECK (pg_temp.evil(VALUE));
           CREATE TEMP TABLE tl (id bigserial PRIMARY KEY, email text, iclear_status pg_temp.st);
           SELECT iclear.attach('pg_temp.tl', 'payday_us');
           INSERT INTO tl (email) VALUES ('x@example.com');"#
    ))
    .unwrap();
    let status: String = ops
        .query_one("SELECT iclear_status::text FROM tl", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "accepted", "the lead was processed");

    // 2. an application role that owns its table: a domain, a CHECK, a
    // default, triggers before and after iclear's, a unique key of a
    // domain type (probed before processing), and an UPDATE trigger that
    // the end of a pause fires
    let mut store = cl.connect_as("t_evil", "lead_store");
    store
        .batch_execute(&format!(
            r#"CREATE FUNCTION app.evil(v text, tg text) RETURNS boolean LANGUAGE plpgsql AS $f${PAYLOAD}$f$;
               CREATE FUNCTION app.evil_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
               BEGIN PERFORM app.evil('', TG_NAME); RETURN NEW; END $f$;
               CREATE DOMAIN app.st AS text CHECK (app.evil(VALUE, 'domain'));
               CREATE DOMAIN app.key AS text CHECK (app.evil(VALUE, 'key'));
               CREATE TABLE app.leads (id bigserial PRIMARY KEY, email text, ext app.key UNIQUE,
                                       "homePhone" text, note text DEFAULT (app.evil('', 'default'))::text,
                                       iclear_status text, iclear_decision jsonb,
                                       CHECK (app.evil(email, 'check')));
               CREATE TRIGGER aa BEFORE INSERT ON app.leads FOR EACH ROW EXECUTE FUNCTION app.evil_trigger();
               CREATE TRIGGER zz BEFORE INSERT ON app.leads FOR EACH ROW EXECUTE FUNCTION app.evil_trigger();
               CREATE TRIGGER upd BEFORE UPDATE ON app.leads FOR EACH ROW EXECUTE FUNCTION app.evil_trigger();"#
        ))
        .unwrap();
    // a table another role owns cannot be attached, whatever the caller may do to it
    store
        .batch_execute("GRANT ALL ON app.leads TO ops; GRANT USAGE ON SCHEMA app TO ops")
        .unwrap();
    let (code, msg) = refused(&mut ops, "SELECT iclear.attach('app.leads', 'payday_us')");
    assert_eq!(code, "42501", "{msg}");
    assert!(msg.contains("app.leads"), "{msg}");
    // its owner's administrator attaches it; then the owner makes the outcome a domain
    c.batch_execute("SELECT iclear.attach('app.leads', 'paused')")
        .unwrap();
    store
        .batch_execute(
            "ALTER TABLE app.leads ALTER COLUMN iclear_status TYPE app.st;
             INSERT INTO app.leads (id, email, ext, \"homePhone\") VALUES (1, 'y@example.com', 'k1', '3105550101');
             INSERT INTO app.leads (id, email, ext, \"homePhone\") VALUES (2, 'z@example.com', 'k1', '3105550102')
             ON CONFLICT DO NOTHING;",
        )
        .unwrap();
    let status: String = store
        .query_one(
            "SELECT iclear_status::text FROM app.leads WHERE id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "paused");
    // the verification desk confirms the phone: the lead's row gets its outcome
    let mut desk = cl.connect_as("t_evil", "desk");
    desk.batch_execute("SELECT iclear.record_sms_verification('paused', '3105550101', '123456')")
        .unwrap();
    let status: String = store
        .query_one(
            "SELECT iclear_status::text FROM app.leads WHERE id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "accepted", "{}", cl.log());

    let seen: Vec<(String, String)> = c
        .query(
            "SELECT DISTINCT who, what FROM public.seen ORDER BY 2, 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for what in ["domain", "check", "default", "aa", "zz", "upd", "key"] {
        assert!(
            seen.iter().any(|(_, w)| w == what),
            "the {what} payload ran: {seen:?}"
        );
    }
    let attackers = ["ops", "lead_store"];
    assert!(
        seen.iter()
            .all(|(who, _)| attackers.contains(&who.as_str())),
        "a payload ran with rights beyond its author's: {seen:?}"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.loot"), 0);
    let now: String = c
        .query_one(
            "SELECT endpoint FROM iclear.service WHERE name = 'ip_analysis'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(now, endpoint, "the endpoint was not moved");
}

/// Review 0.5 finding 6: the audit trail records the role that made each
/// change, and nobody but iclear's trigger may write it.
#[test]
fn the_audit_trail_records_the_real_role_and_cannot_be_forged() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = setup(&cl, &sb, "t_audit");
    let mut ops = cl.connect_as("t_audit", "ops");
    ops.batch_execute("UPDATE iclear.rule SET daily_limit = 7")
        .unwrap();
    let role: String = c
        .query_one(
            "SELECT role::text FROM iclear.config_audit WHERE table_name = 'rule' AND op = 'UPDATE'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(role, "ops");
    // SET ROLE is the role that made the change
    c.batch_execute("SET ROLE boss; UPDATE iclear.rule SET daily_limit = 8; RESET ROLE")
        .unwrap();
    let role: String = c
        .query_one(
            "SELECT role::text FROM iclear.config_audit WHERE table_name = 'rule' AND op = 'UPDATE' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(role, "boss");
    for sql in [
        "INSERT INTO iclear.config_audit (at, role, table_name, op, row_id) VALUES (now() - interval '3 days', 'boss', 'rule', 'DELETE', '1')",
        "SELECT iclear.audit_write('boss', 'rule', 'DELETE', '{\"id\": 1}', NULL)",
        "UPDATE iclear.config_audit SET role = 'boss'",
        "DELETE FROM iclear.config_audit",
    ] {
        denied(&mut ops, sql);
    }
    let mut boss = cl.connect_as("t_audit", "boss");
    denied(
        &mut boss,
        "SELECT iclear.audit_write('ops', 'rule', 'DELETE', '{\"id\": 1}', NULL)",
    );
    // the audit trigger writes nothing for a table outside iclear
    c.batch_execute("CREATE TABLE public.mine (id int); ALTER TABLE public.mine OWNER TO boss")
        .unwrap();
    let (code, msg) = refused(
        &mut boss,
        "CREATE TRIGGER a AFTER DELETE ON public.mine
           FOR EACH ROW EXECUTE FUNCTION iclear.audit_config();
         INSERT INTO public.mine VALUES (1); DELETE FROM public.mine",
    );
    assert_eq!(code, "39P01", "{msg}");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.config_audit WHERE op = 'DELETE'"
        ),
        0
    );
}

/// Review 0.5 finding 14: a consumer's deletion request could not be served
/// (only a superuser could delete, and from a dozen tables). iclear_admin
/// runs `iclear.forget`, and then no iclear table names the consumer, the
/// reports, lead_info and a backtest still work, and the audit says that an
/// erasure ran without saying whom.
#[test]
fn an_admin_erases_one_consumer_everywhere() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = setup(&cl, &sb, "t_forget");
    c.batch_execute(
        r#"ALTER TABLE public.leads ADD COLUMN "homePhone" text;
           SELECT iclear.detach('public.leads');
           SELECT iclear.attach('public.leads', 'payday_us');
           WITH r AS (INSERT INTO iclear.rule (product_id, name, position)
                      SELECT id, 'count emails', 2 FROM iclear.product RETURNING id)
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'increment_counter', '{"counter": "seen", "key": "{%productField_email%}"}' FROM r;
           INSERT INTO iclear.list_entry (list_id, value) SELECT id, 'Jo@Example.com' FROM iclear.list;
           UPDATE iclear.service SET subscription = 'enabled' WHERE name = 'sms';
           SELECT iclear.record_sms_verification('payday_us', '2015550007', '123456');"#,
    )
    .unwrap();
    let mut app = cl.connect_as("t_forget", "app");
    for (email, phone) in [
        ("Jo@Example.com", "(201) 555-0007"),
        ("jo@example.com", "2015550007"),
        ("other@example.com", "2015550099"),
    ] {
        app.execute(
            r#"INSERT INTO public.leads (email, "homePhone", "userIp") VALUES ($1, $2, '10.0.0.5')"#,
            &[&email, &phone],
        )
        .unwrap();
    }
    c.batch_execute("SELECT iclear.fold_counters()").unwrap();
    let mut ops = cl.connect_as("t_forget", "ops");
    denied(&mut ops, "SELECT iclear.forget('jo@example.com')");
    let mut boss = cl.connect_as("t_forget", "boss");
    let (code, msg) = refused(&mut boss, "SELECT iclear.forget()");
    assert_eq!(code, "22023", "{msg}");
    let touched: Value = boss
        .query_one(
            "SELECT iclear.forget(email => 'JO@example.com', phone => '+1 201 555 0007')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(touched["leads"], 2, "{touched}");
    assert_eq!(touched["list_entry"], 1, "{touched}");
    assert_eq!(touched["sms_verification"], 1, "{touched}");
    // no iclear table names the consumer any more
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'iclear' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in &tables {
        let left = count(
            &mut c,
            &format!(
                "SELECT count(*) FROM iclear.{t} x WHERE lower(x::text) LIKE '%jo@example.com%'
                    OR regexp_replace(x::text, '[^0-9]', '', 'g') LIKE '%2015550007%'"
            ),
        );
        assert_eq!(left, 0, "iclear.{t} still names the consumer");
    }
    assert!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.decision WHERE envelope::text LIKE '%other@example.com%'"
        ) > 0,
        "another consumer's leads are untouched"
    );
    // the reports, lead_info and a backtest go on
    c.batch_execute(
        "SELECT * FROM iclear.full_log; SELECT * FROM iclear.lead_log; SELECT iclear.lead_info('1');
         SELECT iclear.backtest('payday_us', now() - interval '1 hour')",
    )
    .unwrap();
    let audit: Value = c
        .query_one(
            "SELECT to_jsonb(a) FROM iclear.config_audit a WHERE op = 'ERASE'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audit["role"], "boss");
    assert!(!audit.to_string().contains("example.com"), "{audit}");
}

/// Review 0.5 findings 2, 9, 10 and 13: a webhook's user, password and
/// query token reached readers in the log and operators in `service` and
/// the audit; any address was accepted as an endpoint; worker_alive was
/// false for the iclear roles; the admin could not run maintain().
#[test]
fn endpoints_keep_their_secrets_and_go_only_where_the_policy_allows() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start_with("-c iclear.database=t_egress -c iclear.worker_naptime=100");
    let mut c = setup(&cl, &sb, "t_egress");
    let mut boss = cl.connect_as("t_egress", "boss");
    let mut ops = cl.connect_as("t_egress", "ops");
    let mut report = cl.connect_as("t_egress", "report");
    let port = sb.addr().port();
    boss.batch_execute(&format!(
        "UPDATE iclear.service SET subscription = 'enabled',
                endpoint = 'http://smsuser:SMS-PASS-5@127.0.0.1:{port}/sms?token=SMSQUERYTOKEN'
          WHERE name = 'sms'"
    ))
    .unwrap();
    let shown: String = ops
        .query_one(
            "SELECT endpoint FROM iclear.service WHERE name = 'sms'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(shown, format!("http://***@127.0.0.1:{port}/sms?token=***"));
    denied(&mut ops, "SELECT * FROM iclear.service_secret");
    // the SMS goes out with the whole URL; nothing shows its secrets
    c.batch_execute(
        r#"WITH r AS (INSERT INTO iclear.rule (product_id, stage, name, position)
                      SELECT id, 'processing', 'verify', 5 FROM iclear.product RETURNING id)
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'pause_for_verification', '{"phone_field": "homePhone"}' FROM r;
           SELECT iclear_process('{"product": "payday_us", "fields": {"email": "a@x.com", "homePhone": "3105550103"}}');"#,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while sb.count("sms") == 0 {
        assert!(Instant::now() < until, "the SMS was not sent\n{}", cl.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let secrets = "'(SMS-PASS-5|SMSQUERYTOKEN|smsuser)'";
    assert_eq!(
        count(
            &mut report,
            &format!("SELECT count(*) FROM iclear.lead_log l WHERE l::text ~ {secrets}")
        ),
        0
    );
    for sql in [
        "SELECT count(*) FROM iclear.config_audit a WHERE a::text ~ ",
        "SELECT count(*) FROM iclear.config_history('payday_us') a WHERE a::text ~ ",
        "SELECT count(*) FROM iclear.filter_log f WHERE f::text ~ ",
        "SELECT count(*) FROM iclear.service s WHERE s::text ~ ",
    ] {
        assert_eq!(count(&mut ops, &format!("{sql}{secrets}")), 0, "{sql}");
    }
    assert!(
        count(
            &mut report,
            "SELECT count(*) FROM iclear.lead_log WHERE service = 'sms'"
        ) > 0
    );
    // re-saving the shown endpoint keeps the secret; a masked one is refused
    boss.batch_execute(&format!(
        "UPDATE iclear.service SET endpoint = 'http://***@127.0.0.1:{port}/sms?token=***' WHERE name = 'sms'"
    ))
    .unwrap();
    let kept: String = boss
        .query_one(
            "SELECT endpoint FROM iclear.service_secret WHERE service = 'sms'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(kept.contains("SMS-PASS-5"), "{kept}");
    let (code, msg) = refused(
        &mut boss,
        "UPDATE iclear.service SET endpoint = 'http://***@10.9.9.9/sms' WHERE name = 'sms'",
    );
    assert_eq!(code, "23514", "{msg}");
    // egress: non-public addresses only where iclear.allowed_endpoints says
    for url in [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:5432/",
        "http://0x7f000001:5432/",
        "http://127.0.0.2/",
        "http://127.0.0.1:5432@10.0.0.1/ip",
        "http://localhost/ip",
    ] {
        // 127.0.0.1 is listed (for the sandbox), in whatever form it is written
        let allowed = url.starts_with("http://127.0.0.1:5432/")
            || url.starts_with("http://0x7f")
            || url.starts_with("http://localhost");
        let r = boss.batch_execute(&format!(
            "UPDATE iclear.service SET endpoint = '{url}' WHERE name = 'tracking'"
        ));
        match (allowed, r) {
            (true, Ok(())) => {}
            (false, Err(e)) => {
                let db = e.as_db_error().unwrap();
                assert_eq!(db.code().code(), "23514", "{url}: {db:?}");
                assert!(
                    db.message().contains("iclear.allowed_endpoints"),
                    "{url}: {}",
                    db.message()
                );
            }
            (a, r) => panic!("{url}: allowed {a}, got {r:?}"),
        }
    }
    // an endpoint saved while allowed is refused at the call once it is not
    c.batch_execute("ALTER DATABASE t_egress SET iclear.allowed_endpoints = ''")
        .unwrap();
    let before = sb.count("ip");
    let mut app = cl.connect_as("t_egress", "app");
    let d: Value = app
        .query_one(
            r#"INSERT INTO public.leads (email, "userIp") VALUES ('b@x.com', '10.0.0.7') RETURNING iclear_decision"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sb.count("ip"), before, "no request left: {d}");
    let reason: String = c
        .query_one(
            "SELECT detail ->> 'reason' FROM iclear.filter_log WHERE name = 'ip_analysis' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("iclear.allowed_endpoints"), "{reason}");
    // every iclear role sees the worker; the admin runs maintain()
    for role in ["report", "ops", "boss"] {
        let mut r = cl.connect_as("t_egress", role);
        let alive: bool = r
            .query_one("SELECT worker_alive FROM iclear.health", &[])
            .unwrap()
            .get(0);
        assert!(alive, "{role} sees the worker");
    }
    boss.batch_execute("SELECT iclear.maintain()").unwrap();
}
