//! Duplicate and velocity checks under concurrency (issue 27): of two leads
//! with the same values in flight, in any sessions, the second sees the
//! first; a lead rolled back by its client is not in the history; crossed
//! multi-row transactions do not deadlock.

use iclear_it::Cluster;
use postgres::{Client, NoTls};
use std::sync::{Arc, Barrier};
use std::thread;

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Product 'p' with a 30-day duplicate check on email, attached to
/// `leads`, which the application role `app` (not a superuser) inserts into.
fn setup(c: &mut Client) {
    c.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.rule (product_id, name) SELECT id, 'duplicate email' FROM iclear.product;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'history', 'email', 'greater_or_equal',
                  '{"count": 1, "seconds": 2592000, "statuses": ["accepted"]}' FROM iclear.rule;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'stop_processing', '{"message": "duplicate"}' FROM iclear.rule;
           CREATE TABLE leads (id bigserial PRIMARY KEY, email text, session int,
                               iclear_status text, iclear_decision jsonb);
           SELECT iclear.attach('leads', 'p');
           CREATE ROLE app LOGIN;
           GRANT INSERT, SELECT ON leads TO app;
           GRANT USAGE ON SEQUENCE leads_id_seq TO app;"#,
    )
    .unwrap();
}

#[test]
fn eight_sessions_posting_the_same_twenty_emails_accept_exactly_twenty() {
    let cl = Cluster::start();
    let mut c = cl.database("t_hist");
    setup(&mut c);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|s| {
            let url = cl.url("t_hist").replace("user=postgres", "user=app");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut app = Client::connect(&url, NoTls).unwrap();
                barrier.wait();
                // each session its own order of the same 20 emails
                for i in 0..20 {
                    let n = (i * 7 + s * 3) % 20;
                    app.execute(
                        "INSERT INTO leads (email, session) VALUES ($1, $2)",
                        &[&format!("person{n}@x.com"), &s],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM leads"),
        160,
        "no lead lost"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'accepted'"
        ),
        20,
        "exactly one of each email"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT email) FROM leads WHERE iclear_status = 'accepted'"
        ),
        20
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'rejected'"
        ),
        140
    );
    assert!(!cl.log().contains("deadlock detected"));
}

#[test]
fn a_lead_its_client_rolls_back_is_not_a_duplicate_and_crossed_batches_do_not_deadlock() {
    let cl = Cluster::start();
    let mut c = cl.database("t_hist_rb");
    setup(&mut c);
    let mut app = cl.connect_as("t_hist_rb", "app");
    app.batch_execute("BEGIN; INSERT INTO leads (email) VALUES ('gone@x.com'); ROLLBACK")
        .unwrap();
    app.batch_execute("INSERT INTO leads (email) VALUES ('gone@x.com')")
        .unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'accepted'"
        ),
        1
    );
    // crossed multi-row transactions: [x, y] against [y, x]
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [["x@x.com", "y@x.com"], ["y@x.com", "x@x.com"]]
        .into_iter()
        .map(|emails| {
            let url = cl.url("t_hist_rb").replace("user=postgres", "user=app");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut s = Client::connect(&url, NoTls).unwrap();
                s.batch_execute("SET iclear.counter_lock_wait = 500; BEGIN")
                    .unwrap();
                s.execute("INSERT INTO leads (email) VALUES ($1)", &[&emails[0]])
                    .unwrap();
                barrier.wait();
                s.execute("INSERT INTO leads (email) VALUES ($1)", &[&emails[1]])
                    .unwrap();
                s.batch_execute("COMMIT").unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(!cl.log().contains("deadlock detected"));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE email IN ('x@x.com', 'y@x.com')"
        ),
        4
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'error'"
        ),
        0
    );
}
