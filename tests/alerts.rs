//! Alerts under concurrency (issue 29): eight sessions checking the alert
//! rules at the same instant raise each alert once, a LISTENing session
//! receives it as NOTIFY iclear_alert with the documented payload, and it is
//! in iclear.alert.

use iclear_it::Cluster;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde_json::Value;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

#[test]
fn eight_sessions_raise_each_alert_once_and_a_listener_hears_it() {
    let cl = Cluster::start();
    let mut c = cl.database("t_alerts");
    c.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.rule (product_id, name, daily_limit, cap_counts) SELECT id, 'once', 1, 'matches' FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'lead_tags', '{"mode": "add", "tags": ["t"]}' FROM iclear.rule;
           SELECT iclear_process('{"product": "p"}');
           INSERT INTO iclear.job (kind, payload, status, last_error) VALUES ('lookup', '{}', 'failed', 'HTTP 500');"#,
    )
    .unwrap();
    let mut listener = cl.connect("t_alerts");
    listener.batch_execute("LISTEN iclear_alert").unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = cl.url("t_alerts");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut s = Client::connect(&url, NoTls).unwrap();
                barrier.wait();
                let n: i32 = s
                    .query_one("SELECT iclear.check_alerts()", &[])
                    .unwrap()
                    .get(0);
                n
            })
        })
        .collect();
    let raised: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // the rule cap at its limit (cap_reached, and cap_warning past 80%) and
    // the failed job, each once whichever session raised it
    assert_eq!(raised, 3);
    let kinds: Vec<String> = c
        .query("SELECT kind FROM iclear.alert ORDER BY kind", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, vec!["cap_reached", "cap_warning", "jobs_failing"]);
    let mut heard = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_secs(5));
    while heard.len() < 3 {
        let Some(note) = it.next().unwrap() else {
            break;
        };
        assert_eq!(note.channel(), "iclear_alert");
        let v: Value = serde_json::from_str(note.payload()).unwrap();
        for key in [
            "kind",
            "product",
            "subject",
            "value",
            "threshold",
            "at",
            "detail",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        heard.push(v["kind"].as_str().unwrap().to_string());
    }
    heard.sort();
    assert_eq!(heard, vec!["cap_reached", "cap_warning", "jobs_failing"]);
}
