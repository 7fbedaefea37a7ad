//! Backtests against a real cluster: the throughput benchmark of
//! `make bench-backtest` (an ignored test), and a backtest run by an
//! operator while the lead store inserts, which writes nothing and holds
//! up no lead.

use iclear_it::Cluster;
use postgres::Client;
use std::time::Instant;

/// Product `p` with 20 processing rules on the lead body (each tags its
/// leads; one rejects), a DNPL on email with 1,000 entries, and `n` leads.
fn configure(c: &mut Client, n: i64) {
    c.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.list (name, kind, field) VALUES ('bad emails', 'dnpl', 'email');
           INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p;
           INSERT INTO iclear.list_entry (list_id, value)
           SELECT l.id, 'bad' || g || '@x.co' FROM iclear.list l, generate_series(1, 1000) g;
           INSERT INTO iclear.rule (product_id, stage, name, position)
           SELECT p.id, 'processing', 'rule ' || g, g FROM iclear.product p, generate_series(1, 20) g;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT r.id, 'lead_body', 'age', 'greater', to_jsonb(r.position * 3) FROM iclear.rule r;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT r.id, 'lead_body', 'state', 'in', '["CA", "TX", "NY"]' FROM iclear.rule r;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT r.id, 'lead_tags', jsonb_build_object('mode', 'add', 'tags', jsonb_build_array(r.name))
             FROM iclear.rule r;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT r.id, 'stop_processing', '{"message": "too old"}' FROM iclear.rule r WHERE r.position = 20;"#,
    )
    .unwrap();
    c.batch_execute(&format!(
        r#"SELECT iclear_process(jsonb_build_object('product', 'p', 'lead_id', 'L' || g,
                  'fields', jsonb_build_object('email', 'lead' || g || '@x.co', 'age', 18 + g % 60,
                                               'state', (ARRAY['CA', 'TX', 'NY', 'FL'])[1 + g % 4])))
             FROM generate_series(1, {n}) g"#
    ))
    .unwrap();
}

fn backtest(c: &mut Client, changes: &str) -> serde_json::Value {
    c.query_one(
        "SELECT iclear.backtest('p', now() - interval '1 day', now() + interval '1 minute', $1::text::jsonb)",
        &[&changes],
    )
    .unwrap()
    .get(0)
}

/// An operator backtests while four sessions insert leads: the backtest
/// sees the leads committed before it, writes nothing, and the inserts go
/// on (its configuration changes are rolled back, never committed).
#[test]
fn an_operator_backtests_while_leads_arrive() {
    let cl = Cluster::start();
    let mut c = cl.database("t_backtest");
    configure(&mut c, 2000);
    c.batch_execute("CREATE ROLE ops LOGIN IN ROLE iclear_operator")
        .unwrap();
    let inserters: Vec<_> = (0..4)
        .map(|t| {
            let mut s = cl.connect("t_backtest");
            std::thread::spawn(move || {
                for i in 0..200 {
                    s.execute(
                        "SELECT iclear_process(jsonb_build_object('product', 'p', 'lead_id', $1::text,
                                 'fields', jsonb_build_object('age', 30, 'state', 'CA')))",
                        &[&format!("T{t}-{i}")],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    let mut ops = cl.connect_as("t_backtest", "ops");
    let configuration = |c: &mut Client| -> i64 {
        c.query_one("SELECT version FROM iclear.config_version", &[])
            .unwrap()
            .get(0)
    };
    let version = configuration(&mut c);
    let draft = backtest(
        &mut ops,
        r#"{"rules": [{"name": "rule 20", "status": "paused"}]}"#,
    );
    for t in inserters {
        t.join().unwrap();
    }
    assert!(draft["leads"].as_i64().unwrap() >= 2000, "{draft}");
    assert!(
        draft["rejected_to_accepted"].as_i64().unwrap() > 0,
        "{draft}"
    );
    assert_eq!(draft["accepted_to_rejected"], 0, "{draft}");
    assert_eq!(
        configuration(&mut c),
        version,
        "the changes were never committed"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM iclear.decision", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, 2800,
        "every insert went through, the backtest wrote nothing"
    );
}

#[test]
#[ignore]
fn backtest_throughput() {
    let n: i64 = std::env::var("ICLEAR_BACKTEST_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let cl = Cluster::start();
    let mut c = cl.database("t_bench");
    configure(&mut c, n);
    c.batch_execute("VACUUM ANALYZE").unwrap();
    for (what, changes) in [
        ("as configured", "{}"),
        (
            "with a draft rule",
            r#"{"rules": [{"name": "draft", "position": 0, "conditions": [{"category": "lead_body", "parameter": "state", "operator": "equals", "value": "FL"}], "actions": [{"action": "stop_processing", "config": {"message": "no FL"}}]}]}"#,
        ),
    ] {
        let t = Instant::now();
        let r = backtest(&mut c, changes);
        let s = t.elapsed().as_secs_f64();
        assert_eq!(r["leads"], n, "{r}");
        println!(
            "backtest {what}: {n} leads, 20 rules and a DNPL, in {s:.2} s = {:.0} leads/s (one backend, one core); changed {}",
            n as f64 / s,
            r["changed"]
        );
    }
}
