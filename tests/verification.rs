//! Verification history shared across instances: two clusters on loopback,
//! a hub and an edge that reaches it through postgres_fdw; a verifier login
//! that may record and confirm and read nothing else.

use iclear_it::Cluster;
use postgres::{Client, NoTls};
use serde_json::Value;

const PRODUCT: &str = r#"
INSERT INTO iclear.product (name) VALUES ('p');
INSERT INTO iclear.service (name) VALUES ('verification_history');
INSERT INTO iclear.global_rule (product_id, service, settings)
SELECT id, 'verification_history',
       '{"signature_enabled": true, "signature_template": "{\"email\": \"{%productField_email%}\"}",
         "reject_signature_missing": true, "signature_lifetime_s": 3600}'
  FROM iclear.product;
-- another rule, to show the rest of processing goes on
WITH r AS (INSERT INTO iclear.rule (product_id, name, stage) SELECT id, 'tag all', 'after_processing' FROM iclear.product RETURNING id)
INSERT INTO iclear.rule_action (rule_id, action, config) SELECT id, 'lead_tags', '{"mode": "add", "tags": ["seen"]}' FROM r;
"#;

fn decide(c: &mut Client, email: &str) -> Value {
    c.query_one(
        "SELECT iclear_process(jsonb_build_object('product', 'p', 'fields', jsonb_build_object('email', $1::text)))",
        &[&email],
    )
    .unwrap()
    .get(0)
}

#[test]
fn two_instances_share_one_history_through_a_hub() {
    let hub = Cluster::start();
    let edge = Cluster::start();
    let mut h = hub.database("hub");
    h.batch_execute(PRODUCT).unwrap();
    h.batch_execute("CREATE ROLE desk LOGIN IN ROLE iclear_verifier")
        .unwrap();
    let mut e = edge.database("edge");
    e.batch_execute(PRODUCT).unwrap();
    e.batch_execute(&format!(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER hub FOREIGN DATA WRAPPER postgres_fdw
                OPTIONS (host '127.0.0.1', port '{}', dbname 'hub');
         CREATE USER MAPPING FOR PUBLIC SERVER hub OPTIONS (user 'postgres');
         SELECT iclear.use_verification_hub('hub');",
        hub.port
    ))
    .unwrap();
    assert_eq!(decide(&mut e, "x@y.co")["status"], "rejected");

    // a verifier (not a superuser) records on the hub ...
    let mut desk = Client::connect(&format!("{} user=desk", hub.url("hub")), NoTls).unwrap();
    let sig: String = desk
        .query_one(
            r#"SELECT iclear.record_verification('p', '{"email": "x@y.co"}')"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sig.len(), 64);
    for q in [
        "SELECT count(*) FROM iclear.verification_history",
        "SELECT count(*) FROM iclear.decision",
        "SELECT count(*) FROM iclear.product",
    ] {
        let err = desk.query_one(q, &[]).unwrap_err();
        assert!(
            err.to_string().contains("permission denied")
                || format!("{err:?}").contains("permission denied"),
            "{q}: {err:?}"
        );
    }
    // ... and the lead on the other instance passes because of it
    let d = decide(&mut e, "x@y.co");
    assert_eq!(d["status"], "accepted", "{d}");
    assert_eq!(decide(&mut e, "other@y.co")["status"], "rejected");
    // records made on the edge land on the hub
    e.batch_execute("SELECT iclear.record_sms_verification('p', '5550100199', '1234')")
        .unwrap();
    let n: i64 = h
        .query_one(
            "SELECT count(*) FROM iclear.sms_verification_local WHERE phone = '5550100199'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let confirmed: bool = e
        .query_one("SELECT iclear.confirm_sms('p', '5550100199', '1234')", &[])
        .unwrap()
        .get(0);
    assert!(
        !confirmed,
        "nothing pending: a recorded verification is already verified"
    );

    // the hub goes away: the rule's no-response action applies, nothing else breaks
    drop(h);
    drop(desk);
    drop(hub);
    let d = decide(&mut e, "x@y.co");
    assert_eq!(d["status"], "accepted", "no_response = continue: {d}");
    assert_eq!(d["services"][0]["outcome"], "no_response");
    assert_eq!(
        d["tags"],
        serde_json::json!(["seen"]),
        "the other rules ran"
    );
    e.batch_execute("UPDATE iclear.global_rule SET no_response = 'reject'")
        .unwrap();
    let d = decide(&mut e, "x@y.co");
    assert_eq!(d["status"], "rejected");
    assert!(
        d["reason"].as_str().unwrap().contains("did not respond"),
        "{d}"
    );
    let kept: i64 = e
        .query_one("SELECT count(*) FROM iclear.decision", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 5, "every decision was persisted");
    // and back to the local history
    let mode: String = e
        .query_one("SELECT iclear.use_verification_hub(NULL)", &[])
        .unwrap()
        .get(0);
    assert_eq!(mode, "local");
    assert_eq!(
        decide(&mut e, "x@y.co")["reason"],
        "verification_history: signature missing"
    );
}

/// Review finding 12: a hub that does not answer costs a lead at most
/// `iclear.hub_timeout`, then the rule's no-response action applies. Two
/// ways a hub hangs: it accepts the connection and never speaks (the
/// connection, which PostgreSQL 15 cannot cancel, is bounded by libpq's
/// connect_timeout), and its table is locked (the hub's statement_timeout).
#[test]
fn an_unresponsive_hub_costs_a_lead_at_most_its_timeout() {
    use std::time::{Duration, Instant};
    // accepts, says nothing, hangs up after 30 s
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in silent.incoming() {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(30));
                drop(conn);
            });
        }
    });
    let hub = Cluster::start();
    let edge = Cluster::start();
    let mut h = hub.database("hub");
    h.batch_execute(PRODUCT).unwrap();
    let mut e = edge.database("edge");
    e.batch_execute(PRODUCT).unwrap();
    e.batch_execute(&format!(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER silent FOREIGN DATA WRAPPER postgres_fdw
                OPTIONS (host '127.0.0.1', port '{silent_port}', dbname 'hub');
         CREATE USER MAPPING FOR PUBLIC SERVER silent OPTIONS (user 'postgres');
         CREATE SERVER hub FOREIGN DATA WRAPPER postgres_fdw
                OPTIONS (host '127.0.0.1', port '{}', dbname 'hub', options '-c work_mem=8MB');
         CREATE USER MAPPING FOR PUBLIC SERVER hub OPTIONS (user 'postgres');
         SET iclear.hub_timeout = 2;
         SELECT iclear.use_verification_hub('silent');",
        hub.port
    ))
    .unwrap();
    let timed = |e: &mut Client| {
        let t = Instant::now();
        let d = decide(e, "x@y.co");
        (d, t.elapsed())
    };
    let (d, took) = timed(&mut e);
    assert_eq!(d["status"], "accepted", "no_response = continue: {d}");
    assert_eq!(d["services"][0]["outcome"], "no_response", "{d}");
    assert!(took < Duration::from_secs(20), "the lead waited {took:?}");

    e.batch_execute("SELECT iclear.use_verification_hub('hub')")
        .unwrap();
    let opts: Vec<String> = e
        .query_one(
            "SELECT srvoptions::text[] FROM pg_foreign_server WHERE srvname = 'hub'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(opts.contains(&"connect_timeout=2".to_string()), "{opts:?}");
    assert!(
        opts.contains(&"options=-c work_mem=8MB -c statement_timeout=2s".to_string()),
        "the server's own options are kept: {opts:?}"
    );
    let mut hold = h.transaction().unwrap();
    hold.batch_execute("LOCK TABLE iclear.verification_history_local IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let (d, took) = timed(&mut e);
    assert_eq!(d["services"][0]["outcome"], "no_response", "{d}");
    assert!(took < Duration::from_secs(20), "the lead waited {took:?}");
    hold.rollback().unwrap();
    let (d, _) = timed(&mut e);
    assert_eq!(
        d["reason"], "verification_history: signature missing",
        "the hub answers again: {d}"
    );
}
