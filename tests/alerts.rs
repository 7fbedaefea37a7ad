//! Alerts under concurrency (issue 29): eight sessions checking the alert
//! rules at the same instant raise each alert once, a LISTENing session
//! receives it as NOTIFY iclear_alert with the documented payload, and it is
//! in iclear.alert.

use iclear_it::Cluster;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde_json::Value;
use std::sync::{Arc, Barrier, Mutex};
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

/// A session whose NOTICEs are kept, as psql shows them.
fn noticing(url: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let kept = notices.clone();
    let mut cfg: postgres::Config = url.parse().unwrap();
    cfg.notice_callback(move |n| kept.lock().unwrap().push(n.message().to_string()));
    (cfg.connect(NoTls).unwrap(), notices)
}

/// A row of iclear.progress: command, product, done, total.
type Progress = (String, Option<String>, i64, Option<i64>);

/// iclear.progress read every 50 ms as `watcher` (an iclear_reader) while
/// `work` runs on another session (started once the watcher is connected);
/// the rows seen, then the work's NOTICEs, and the view empty once it is
/// over.
fn watch_progress(
    cl: &Cluster,
    db: &str,
    work: impl FnOnce() -> Vec<String> + Send + 'static,
) -> (Vec<Progress>, Vec<String>) {
    let mut watcher = Client::connect(
        &format!("host=127.0.0.1 port={} dbname={db} user=watcher", cl.port),
        NoTls,
    )
    .unwrap();
    let runner = thread::spawn(work);
    let mut seen = Vec::new();
    while !runner.is_finished() {
        for r in watcher
            .query(
                "SELECT command, product, done, total FROM iclear.progress",
                &[],
            )
            .unwrap()
        {
            seen.push((r.get(0), r.get(1), r.get(2), r.get(3)));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let notices = runner.join().unwrap();
    let left: i64 = watcher
        .query_one("SELECT count(*) FROM iclear.progress", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "over: nothing left in the view");
    (seen, notices)
}

/// Progress of long work (issue 29 item 4): while one session backtests
/// thousands of leads, another (a reader) sees it in iclear.progress with
/// `done` moving towards `total`, and the running session gets a NOTICE
/// with what is done, the rate and the time left (every 5 s by default;
/// 200 ms here).
#[test]
fn a_long_backtest_shows_its_progress_to_another_session() {
    let cl = Cluster::start();
    let mut c = cl.database("t_progress");
    c.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.rule (product_id, name) SELECT id, 'adults' FROM iclear.product;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'lead_body', 'age', 'less', '18' FROM iclear.rule;
           SELECT count(iclear_process(jsonb_build_object('product', 'p', 'fields', jsonb_build_object('age', g % 40))))
             FROM generate_series(1, 20000) g;
           CREATE ROLE watcher LOGIN IN ROLE iclear_reader;"#,
    )
    .unwrap();
    let url = cl.url("t_progress");
    let work = move || {
        let (mut s, notices) = noticing(&url);
        s.batch_execute(
            "SET iclear.progress_notice_interval = '200ms';
             SELECT iclear.backtest('p', now() - interval '1 hour', now() + interval '1 minute',
                                    '{\"rules\": [{\"name\": \"adults\", \"status\": \"paused\"}]}')",
        )
        .unwrap();
        let n = notices.lock().unwrap().clone();
        n
    };
    let (rows, notices) = watch_progress(&cl, "t_progress", work);
    for (command, product, _, total) in &rows {
        assert_eq!(command, "backtest");
        assert_eq!(product.as_deref(), Some("p"));
        assert_eq!(*total, Some(20000));
    }
    let seen: Vec<i64> = rows.iter().map(|r| r.2).collect();
    assert!(seen.len() >= 2, "seen while it ran: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.iter().any(|d| *d > 0 && *d < 20000), "{seen:?}");
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("iclear.backtest:") && n.contains("of 20000")),
        "{notices:?}"
    );
}

#[test]
fn a_bulk_list_load_shows_its_progress_to_another_session() {
    let cl = Cluster::start();
    let mut c = cl.database("t_list_progress");
    c.batch_execute(
        "INSERT INTO iclear.list (name, kind, field) VALUES ('dnc', 'dnpl', 'homePhone');
         CREATE ROLE watcher LOGIN IN ROLE iclear_reader;",
    )
    .unwrap();
    let list: i64 = c
        .query_one("SELECT id FROM iclear.list", &[])
        .unwrap()
        .get(0);
    let url = cl.url("t_list_progress");
    let work = move || {
        use std::io::Write;
        let (mut s, notices) = noticing(&url);
        s.batch_execute("SET iclear.progress_notice_interval = '200ms'")
            .unwrap();
        let mut w = s
            .copy_in("COPY iclear.list_entry (list_id, value) FROM STDIN")
            .unwrap();
        // a registry file arriving in pieces, so the load lasts a while
        for chunk in 0..30u64 {
            let mut data = Vec::new();
            for i in 0..5000u64 {
                writeln!(data, "{list}\t(212) {:07}", chunk * 5000 + i).unwrap();
            }
            w.write_all(&data).unwrap();
            w.flush().unwrap();
            thread::sleep(Duration::from_millis(60));
        }
        w.finish().unwrap();
        let n = notices.lock().unwrap().clone();
        n
    };
    let (rows, notices) = watch_progress(&cl, "t_list_progress", work);
    for (command, _, _, total) in &rows {
        assert_eq!(command, "list_load");
        assert_eq!(*total, None);
    }
    let seen: Vec<i64> = rows.iter().map(|r| r.2).collect();
    assert!(seen.iter().any(|d| *d > 0 && *d < 150_000), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("iclear.list_load:") && n.contains("rows done")),
        "{notices:?}"
    );
    assert_eq!(
        c.query_one("SELECT count(*) FROM iclear.list_entry", &[])
            .unwrap()
            .get::<_, i64>(0),
        150_000
    );
}
