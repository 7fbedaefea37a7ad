//! Pause for verification against a real cluster: leads inserted by an
//! application role that is not a superuser, codes confirmed by a verifier
//! role from several sessions at once, and the preloaded worker finishing
//! the pauses that expire.

use iclear_it::Cluster;
use iclear_services::sandbox::Sandbox;
use postgres::Client;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Product `p` whose one processing rule pauses every lead on `homePhone`,
/// a lead table attached to it, the sms service at the sandbox, and the
/// roles `app` (inserts leads) and `desk` (confirms codes).
fn configure(c: &mut Client, sb: &Sandbox) {
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.service (name, cost, endpoint) VALUES ('sms', 0.0075, '{}/sms');
           INSERT INTO iclear.rule (product_id, stage, name) SELECT id, 'processing', 'verify' FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'pause_for_verification', '{{"phone_field": "homePhone"}}' FROM iclear.rule;
           CREATE TABLE leads (id text PRIMARY KEY, "homePhone" text, iclear_status text, iclear_decision jsonb);
           SELECT iclear.attach('leads', 'p');
           CREATE ROLE app LOGIN;
           GRANT INSERT, SELECT ON leads TO app;
           CREATE ROLE desk LOGIN IN ROLE iclear_verifier;"#,
        sb.base_url()
    ))
    .unwrap();
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Each (phone, code) confirmed by its own `desk` session, all released at
/// once; what each confirm_sms returned.
fn confirm_at_once(cl: &Cluster, confirms: &[(String, String)]) -> Vec<bool> {
    let barrier = Arc::new(Barrier::new(confirms.len()));
    let url = cl.url("t_pause").replace("user=postgres", "user=desk");
    let threads: Vec<_> = confirms
        .iter()
        .cloned()
        .map(|(phone, code)| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut desk = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                barrier.wait();
                desk.query_one("SELECT iclear.confirm_sms('p', $1, $2)", &[&phone, &code])
                    .unwrap()
                    .get::<_, bool>(0)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The code the SMS to `phone` carried, as the sandbox received it (the
/// history keeps only its digest), waiting for the worker to send it.
fn code(sb: &Sandbox, phone: &str) -> String {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = sb
            .sms()
            .into_iter()
            .rev()
            .find(|m| m["to"] == phone)
            .and_then(|m| m["text"].as_str().map(str::to_string));
        if let Some(text) = sent {
            return text.rsplit(' ').next().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < until, "no SMS to {phone}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sixteen sessions confirm the same code at once: one confirms it and
/// resumes the lead, once; the others find nothing pending. Eight leads
/// confirmed concurrently, one session each, all resume.
#[test]
fn concurrent_confirms_resume_each_lead_once() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    // the worker sends the codes (the test reads them as the phones do)
    let cl = Cluster::start_with("-c iclear.database=t_pause -c iclear.worker_naptime=100");
    let mut c = cl.database("t_pause");
    configure(&mut c, &sb);
    let mut app = cl.connect_as("t_pause", "app");
    for i in 0..9 {
        app.execute(
            "INSERT INTO leads (id, \"homePhone\") VALUES ($1, $2)",
            &[&format!("L{i}"), &format!("55501009{i:02}")],
        )
        .unwrap();
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'paused'"
        ),
        9
    );
    let first = code(&sb, "5550100900");
    assert_eq!(
        confirm_at_once(&cl, &vec![("5550100900".to_string(), first); 16])
            .iter()
            .filter(|ok| **ok)
            .count(),
        1,
        "one session confirms"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.decision WHERE lead_id = 'L0'"
        ),
        2,
        "paused, then accepted: resumed once"
    );
    // the other eight, each by its own session at the same time
    let phones: Vec<(String, String)> = (1..9)
        .map(|i| {
            let p = format!("55501009{i:02}");
            let k = code(&sb, &p);
            (p, k)
        })
        .collect();
    assert!(confirm_at_once(&cl, &phones).into_iter().all(|ok| ok));
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM leads WHERE iclear_status = 'accepted' AND iclear_decision #>> '{verification,status}' = 'verified'"),
        9
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM iclear.decision"), 18);
    assert_eq!(count(&mut c, "SELECT count(*) FROM iclear.paused_lead"), 0);
}

/// The preloaded worker rejects the leads whose code expired, and their
/// rows say so.
#[test]
fn the_live_worker_rejects_expired_pauses() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start_with("-c iclear.database=t_expire -c iclear.worker_naptime=100");
    let mut c = cl.database("t_expire");
    configure(&mut c, &sb);
    let mut app = cl.connect_as("t_expire", "app");
    for i in 0..5 {
        app.execute(
            "INSERT INTO leads (id, \"homePhone\") VALUES ($1, $2)",
            &[&format!("E{i}"), &format!("55501008{i:02}")],
        )
        .unwrap();
    }
    // the worker sends the five SMS; the codes are not confirmed
    let until = Instant::now() + Duration::from_secs(30);
    while sb.count("sms") < 5 {
        assert!(
            Instant::now() < until,
            "SMS sent: {}\n{}",
            sb.count("sms"),
            cl.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'paused'"
        ),
        5
    );
    // as if iclear.sms_code_ttl had passed
    c.batch_execute("UPDATE iclear.paused_lead SET expires_at = now() - interval '1 s'")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'rejected'
                AND iclear_decision ->> 'reason' = 'verification expired'",
        );
        if n == 5 {
            break;
        }
        assert!(Instant::now() < until, "{n} of 5 rejected\n{}", cl.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM iclear.paused_lead"), 0);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.decision WHERE status = 'rejected'"
        ),
        5
    );
}

/// Review 0.5 finding 3: a code could be guessed by re-posting the lead
/// (a fresh code and SMS each time, five tries each) and by rolling back
/// the tries. Now a phone gets at most `iclear.sms_max_sends` codes and
/// `iclear.sms_max_failed` wrong tries per window, a rolled-back try counts,
/// and the history keeps only a keyed digest of each code.
#[test]
fn guessing_a_code_is_limited_per_phone_even_across_rollbacks() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start_with(
        "-c iclear.database=t_guess -c iclear.worker_naptime=100 \
         -c iclear.sms_max_failed=4 -c iclear.sms_max_sends=2",
    );
    let mut c = cl.database("t_guess");
    configure(&mut c, &sb);
    let mut app = cl.connect_as("t_guess", "app");
    let mut desk = cl.connect_as("t_guess", "desk");
    let phone = "5550102001";
    app.execute(
        "INSERT INTO leads (id, \"homePhone\") VALUES ('G1', $1)",
        &[&phone],
    )
    .unwrap();
    let right = code(&sb, phone);
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    let confirm = |desk: &mut Client, code: &str| -> bool {
        desk.query_one("SELECT iclear.confirm_sms('p', $1, $2)", &[&phone, &code])
            .unwrap()
            .get(0)
    };
    // four wrong tries, each rolled back by the caller
    for _ in 0..4 {
        let mut tx = desk.transaction().unwrap();
        let ok: bool = tx
            .query_one("SELECT iclear.confirm_sms('p', $1, $2)", &[&phone, &wrong])
            .unwrap()
            .get(0);
        assert!(!ok);
        tx.rollback().unwrap();
    }
    assert!(
        !confirm(&mut desk, &right),
        "the phone is locked out for the window: the right code no longer confirms"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'paused'"
        ),
        1
    );
    // the history keeps a keyed digest of the code, never the code
    let kept: String = c
        .query_one(
            "SELECT code FROM iclear.sms_verification WHERE phone = $1",
            &[&phone],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept.len(), 64);
    assert_ne!(kept, right);
    // re-posts: a dead code is not replaced past iclear.sms_max_sends
    c.batch_execute("UPDATE iclear.sms_verification_local SET status = 'expired'")
        .unwrap();
    app.execute(
        "INSERT INTO leads (id, \"homePhone\") VALUES ('G2', $1)",
        &[&phone],
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while sb.sms().len() < 2 {
        assert!(Instant::now() < until, "the second code was not sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.batch_execute("UPDATE iclear.sms_verification_local SET status = 'expired'")
        .unwrap();
    app.execute(
        "INSERT INTO leads (id, \"homePhone\") VALUES ('G3', $1)",
        &[&phone],
    )
    .unwrap();
    let (status, reason): (String, String) = c
        .query_one(
            "SELECT iclear_status, iclear_decision ->> 'reason' FROM leads WHERE id = 'G3'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(status, "rejected");
    assert!(reason.contains("iclear.sms_max_sends"), "{reason}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sb.sms().len(), 2, "two codes sent, no third");
}
