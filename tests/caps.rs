//! Caps and counters under concurrency, rollbacks and restarts, against real
//! clusters with iclear preloaded and the sandbox provider on loopback:
//! slots never wait for another lead, never deadlock, never overshoot; a
//! rolled-back lead gives back what it did not spend and keeps what it sent.

use iclear_it::Cluster;
use iclear_services::sandbox::{Sandbox, SandboxOptions};
use postgres::{Client, NoTls};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// A failed statement's message (the server's, when it sent one).
fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

fn process(c: &mut Client, lead: &Value) -> Value {
    c.query_one("SELECT iclear_process($1)", &[lead])
        .unwrap()
        .get(0)
}

/// `sessions` threads each process `leads(thread)`; returns every decision.
fn run_sessions(
    cl: &Cluster,
    db: &str,
    sessions: usize,
    leads: impl Fn(usize) -> Vec<Value> + Send + Sync + 'static,
) -> Vec<Value> {
    let leads = Arc::new(leads);
    let threads: Vec<_> = (0..sessions)
        .map(|t| {
            let url = cl.url(db);
            let leads = leads.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&url, NoTls).unwrap();
                leads(t)
                    .iter()
                    .map(|l| process(&mut c, l))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Wait until `sql` (a boolean) holds; panics after `secs`.
fn wait_until(cl: &Cluster, c: &mut Client, sql: &str, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !c.query_one(sql, &[]).unwrap().get::<_, bool>(0) {
        assert!(
            Instant::now() < until,
            "{sql}: not after {secs} s\n{}",
            cl.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Two products with IP and phone lookups in opposite orders, before and
/// after filtration (p: IP sampled at 50% before filtration and again after
/// it, the issue's scenario), every service under a
/// global cap and a per-rule cap, and capped processing rules (one of which
/// runs the IP lookup on demand): every order of review finding 4 in one
/// configuration. 8 sessions, a vendor answering in 100 ms.
#[test]
fn mixed_capped_services_and_rules_never_deadlock() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = cl.database("t_mix");
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p'), ('q');
           INSERT INTO iclear.service (name, cost, endpoint) VALUES
               ('ip_analysis', 0.004, '{url}/ip'), ('phone_analysis', 0.006, '{url}/phone');
           INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES
               ('ip_analysis', 'monthly', 100000000), ('phone_analysis', 'daily', 100000000);
           -- p: ip before (50%), phone after; q: phone before, ip after
           INSERT INTO iclear.global_rule (product_id, service, execution, lookup_percent, run_time,
                                           daily_limit, position, settings)
           SELECT p.id, x.service, 'sync', x.pct, x.run_time, 100000000, x.pos, '{{"api_key": "k"}}'
             FROM iclear.product p
             JOIN (VALUES ('p', 'ip_analysis', 50, 'before_filtration', 1),
                          ('p', 'phone_analysis', 100, 'after_filtration', 2),
                          ('p', 'ip_analysis', 100, 'after_filtration', 3),
                          ('q', 'phone_analysis', 100, 'before_filtration', 1),
                          ('q', 'ip_analysis', 100, 'after_filtration', 2))
                  AS x(product, service, pct, run_time, pos) ON x.product = p.name;
           -- an on-demand IP lookup, run by a capped processing rule
           INSERT INTO iclear.global_rule (product_id, service, execution, lookup_percent, settings)
           SELECT id, 'ip_analysis', 'on_demand', 0, '{{"api_key": "k"}}' FROM iclear.product WHERE name = 'p';
           INSERT INTO iclear.rule (product_id, name, position, daily_limit, per_source_limit, cap_counts, per_source_scope)
           SELECT p.id, p.name || ' capped ' || g, g, 100000000, 100000000, 'matches', 'all_sources'
             FROM iclear.product p, generate_series(1, 2) g;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'lead_tags', '{{"mode": "add", "tags": ["capped"]}}' FROM iclear.rule;
           INSERT INTO iclear.rule_action (rule_id, action, config, position)
           SELECT r.id, 'run_third_party_service', jsonb_build_object('global_rule_id', g.id), 2
             FROM iclear.rule r JOIN iclear.global_rule g ON g.product_id = r.product_id
            WHERE r.name = 'p capped 2' AND g.execution = 'on_demand';
           -- counters and a list written by every lead, in both orders
           INSERT INTO iclear.list (name, kind, field) VALUES ('seen emails', 'pl', 'email');
           INSERT INTO iclear.rule_action (rule_id, action, config, position)
           SELECT r.id, 'increment_counter', '{{"counter": "per_email", "key": "{{%productField_email%}}"}}', 3
             FROM iclear.rule r;
           INSERT INTO iclear.rule_action (rule_id, action, config, position)
           SELECT r.id, 'add_to_list', jsonb_build_object('list_ids', jsonb_build_array(l.id), 'field', 'email'), 4
             FROM iclear.rule r, iclear.list l;"#,
        url = sb.base_url()
    ))
    .unwrap();
    let decisions = run_sessions(&cl, "t_mix", 8, |t| {
        (0..12)
            .map(|i| {
                // two emails, met in opposite orders by even and odd sessions
                let email = if (i + t) % 2 == 0 { "a@x.com" } else { "b@x.com" };
                json!({"product": if t % 2 == 0 { "p" } else { "q" }, "source_id": t % 3,
                       "lead_id": format!("{t}-{i}"),
                       "fields": {"userIp": "198.51.100.10", "homePhone": "5550101212", "email": email}})
            })
            .collect()
    });
    let errors: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["status"] == "error")
        .collect();
    assert!(errors.is_empty(), "error decisions: {errors:#?}");
    assert_eq!(decisions.len(), 96);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.decision WHERE status = 'error'"
        ),
        0
    );
    assert!(!cl.log().contains("deadlock detected"), "{}", cl.log());
    // what the vendor received is exactly what the caps counted
    let ip = count(
        &mut c,
        "SELECT sum(u.used)::int8 FROM iclear.cap_use u JOIN iclear.global_cap g
             ON u.scope = 'global' AND u.ref_id = g.id WHERE g.service = 'ip_analysis'",
    );
    assert_eq!(ip as u64, sb.count("ip"));
    let phone = count(
        &mut c,
        "SELECT sum(u.used)::int8 FROM iclear.cap_use u JOIN iclear.global_cap g
             ON u.scope = 'global' AND u.ref_id = g.id WHERE g.service = 'phone_analysis'",
    );
    assert_eq!(phone as u64, sb.count("phone"));
    assert_eq!(
        count(
            &mut c,
            "SELECT sum(value)::int8 FROM iclear.counter WHERE name = 'per_email'"
        ),
        96 * 2,
        "two counting rules matched each lead"
    );
}

/// A transaction holding cap slots, a counter increment and a sync lookup
/// open does not make another lead wait for any of them.
#[test]
fn an_open_lead_makes_no_other_lead_wait() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = cl.database("t_open");
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.service (name, cost, endpoint) VALUES ('ip_analysis', 0.004, '{}/ip');
           INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'daily', 1000);
           INSERT INTO iclear.global_rule (product_id, service, execution, daily_limit, settings)
           SELECT id, 'ip_analysis', 'sync', 1000, '{{"api_key": "k"}}' FROM iclear.product;
           INSERT INTO iclear.rule (product_id, name, daily_limit, monthly_limit, per_source_limit, cap_counts, per_source_scope)
           SELECT id, 'capped', 1000, 1000, 1000, 'matches', 'all_sources' FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config) SELECT id, 'increment_counter',
                  '{{"counter": "hot", "key": "all"}}' FROM iclear.rule;"#,
        sb.base_url()
    ))
    .unwrap();
    let lead = |id: &str| {
        json!({"product": "p", "lead_id": id, "source_id": 1,
               "fields": {"userIp": "198.51.100.10"}})
    };
    let mut a = cl.connect("t_open");
    a.batch_execute("BEGIN").unwrap();
    let d = process(&mut a, &lead("A"));
    assert_eq!(d["services"][0]["outcome"], "pass", "{d}");
    // a holds every slot and the hot counter's increment, uncommitted
    let mut b = cl.connect("t_open");
    b.batch_execute("SET statement_timeout = '3s'").unwrap();
    let d = process(&mut b, &lead("B"));
    assert_eq!(d["status"], "accepted", "{d}");
    assert_eq!(d["services"][0]["outcome"], "pass", "{d}");
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT value FROM iclear.counter WHERE name = 'hot'"
        ),
        2
    );
}

/// Each kind of cap, at a limit of 5, under 8 sessions of 4 leads: exactly
/// 5 slots, and what the vendor received for the service caps.
#[test]
fn every_cap_kind_is_exact_at_its_limit() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start();
    let mut c = cl.database("t_exact");
    c.batch_execute(&format!(
        "INSERT INTO iclear.service (name, cost, endpoint) VALUES ('ip_analysis', 0.004, '{}/ip')",
        sb.base_url()
    ))
    .unwrap();
    // (product, configuration, what counts a slot)
    let kinds = [
        ("rule_daily", "UPDATE iclear.rule SET daily_limit = 5, cap_counts = 'matches' WHERE product_id = $p"),
        ("rule_monthly", "UPDATE iclear.rule SET monthly_limit = 5, cap_counts = 'matches' WHERE product_id = $p"),
        (
            "rule_source",
            "UPDATE iclear.rule SET per_source_limit = 5, cap_counts = 'matches', per_source_scope = 'all_sources' WHERE product_id = $p",
        ),
        ("gr_daily", "UPDATE iclear.global_rule SET daily_limit = 5 WHERE product_id = $p"),
        ("gr_monthly", "UPDATE iclear.global_rule SET monthly_limit = 5 WHERE product_id = $p"),
        ("global_daily", "INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'daily', 5)"),
        ("global_monthly", "INSERT INTO iclear.global_cap (service, period, start_day, cap_limit) VALUES ('ip_analysis', 'monthly', 28, 5)"),
    ];
    for (name, cap) in kinds {
        c.batch_execute(&format!(
            r#"INSERT INTO iclear.product (name) VALUES ('{name}');
               INSERT INTO iclear.rule (product_id, name) SELECT id, 'tag' FROM iclear.product WHERE name = '{name}';"#
        ))
        .unwrap();
        c.batch_execute(&format!(
            r#"INSERT INTO iclear.rule_action (rule_id, action, config)
               SELECT r.id, 'lead_tags', '{{"mode": "add", "tags": ["slot"]}}'
                 FROM iclear.rule r JOIN iclear.product p ON p.id = r.product_id WHERE p.name = '{name}';
               INSERT INTO iclear.global_rule (product_id, service, execution, settings)
               SELECT id, 'ip_analysis', 'sync', '{{"api_key": "k"}}' FROM iclear.product WHERE name = '{name}';
               {};"#,
            cap.replace("$p", &format!("(SELECT id FROM iclear.product WHERE name = '{name}')"))
        ))
        .unwrap();
        let before = sb.count("ip");
        let product = name.to_string();
        let decisions = run_sessions(&cl, "t_exact", 8, move |t| {
            (0..4)
                .map(|i| {
                    json!({"product": product, "lead_id": format!("{t}-{i}"), "source_id": 7,
                           "fields": {"userIp": format!("10.2.{t}.{i}")}})
                })
                .collect()
        });
        assert!(
            decisions.iter().all(|d| d["status"] != "error"),
            "{name}: {decisions:#?}"
        );
        if name.starts_with("rule") {
            let tagged = decisions
                .iter()
                .filter(|d| d["tags"] == json!(["slot"]))
                .count();
            assert_eq!(tagged, 5, "{name}");
        } else {
            assert_eq!(
                sb.count("ip") - before,
                5,
                "{name}: what the vendor received"
            );
            let full = decisions
                .iter()
                .filter(|d| d["services"][0]["outcome"] == "cap_reached")
                .count();
            assert_eq!(full, 27, "{name}");
        }
        // the global caps apply to every product: clear them for the next kind
        c.batch_execute("DELETE FROM iclear.global_cap").unwrap();
    }
}

/// A lead that rolls back gives back a rule-cap slot and a service slot
/// whose request was never sent; a request that was sent stays counted,
/// billed and (for iClaim) kept as consent evidence.
#[test]
fn a_rolled_back_lead_returns_unspent_slots_and_keeps_what_it_sent() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let cl = Cluster::start_with("-c iclear.database=t_rb -c iclear.worker_naptime=100");
    let mut c = cl.database("t_rb");
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.service (name, cost, endpoint) VALUES
               ('ip_analysis', 0.004, '{url}/ip'), ('iclaim', 0.02, '{url}/iclaim');
           INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'daily', 1);
           INSERT INTO iclear.rule (product_id, name, daily_limit, cap_counts) SELECT id, 'once', 1, 'matches' FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'lead_tags', '{{"mode": "add", "tags": ["slot"]}}' FROM iclear.rule;"#,
        url = sb.base_url()
    ))
    .unwrap();
    let lead = |id: &str| json!({"product": "p", "lead_id": id, "fields": {"userIp": "10.3.0.1", "iClaimSessionId": "ok-1"}});
    let mut a = cl.connect("t_rb");
    // a rule-cap slot, rolled back: the next lead gets it
    a.batch_execute("BEGIN").unwrap();
    assert_eq!(process(&mut a, &lead("R1"))["tags"], json!(["slot"]));
    a.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        process(&mut a, &lead("R2"))["tags"],
        json!(["slot"]),
        "the slot came back"
    );
    assert_eq!(
        process(&mut a, &lead("R3"))["tags"],
        json!([]),
        "and is taken now"
    );
    // a lead that sent a lookup and commits after the worker has looked at
    // its request for a while is not taken for a rolled-back one
    wait_until(
        &cl,
        &mut c,
        // serving t_rb, its first maintain() done (monthly partitions made)
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'iclear worker' AND datname = 't_rb')
            AND EXISTS (SELECT 1 FROM pg_class WHERE relname ~ '^decision_[0-9]{6}$')",
        60,
    );
    a.batch_execute(
        r#"INSERT INTO iclear.global_rule (product_id, service, execution, settings)
           SELECT id, 'iclaim', 'sync', '{"account_id": "acct", "api_token": "tok"}' FROM iclear.product;"#,
    )
    .unwrap();
    a.batch_execute("BEGIN").unwrap();
    let d = process(&mut a, &lead("O1"));
    assert_eq!(d["services"][0]["outcome"], "pass", "{d}");
    thread::sleep(Duration::from_millis(1500));
    a.batch_execute("COMMIT; DELETE FROM iclear.global_rule")
        .unwrap();
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM iclear.spent_request"),
        0,
        "O1 committed: nothing to record for it"
    );
    assert_eq!(sb.count("iclaim"), 1);
    // a service slot whose request is sent, rolled back: it stays counted
    a.batch_execute(
        r#"INSERT INTO iclear.global_rule (product_id, service, execution, position, settings)
           SELECT id, 'ip_analysis', 'sync', 1, '{"api_key": "k"}' FROM iclear.product;
           INSERT INTO iclear.global_rule (product_id, service, execution, position, settings)
           SELECT id, 'iclaim', 'sync', 2, '{"account_id": "acct", "api_token": "tok"}' FROM iclear.product;"#,
    )
    .unwrap();
    a.batch_execute("BEGIN").unwrap();
    let d = process(&mut a, &lead("S1"));
    assert_eq!(d["services"][0]["outcome"], "pass", "{d}");
    a.batch_execute("ROLLBACK").unwrap();
    assert_eq!(sb.count("ip"), 1);
    assert_eq!(sb.count("iclaim"), 2);
    let d = process(&mut a, &lead("S2"));
    assert_eq!(
        d["services"][0]["outcome"], "cap_reached",
        "the sent lookup keeps its slot: {d}"
    );
    // the worker records what the vendors billed for the rolled-back lead
    wait_until(
        &cl,
        &mut c,
        "SELECT count(*) = 2 FROM iclear.spent_request WHERE lead_id = 'S1'",
        30,
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM iclear.consent_evidence WHERE lead_id = 'S1' AND outcome = 'success'"),
        1
    );
    let cost: f64 = c
        .query_one(
            "SELECT sum(cost)::float8 FROM iclear.service_usage WHERE service IN ('ip_analysis', 'iclaim')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        (cost - 0.02 - 0.024 - 0.02).abs() < 1e-9,
        "O1's iClaim, S1's two lookups and S2's iClaim, each once: {cost}"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT current_value FROM iclear.cap_status WHERE scope = 'global'"
        ),
        1
    );
    // an immediate shutdown with a sent lookup in an open transaction: the
    // slot is still counted after the restart, and recorded by the worker
    c.batch_execute("UPDATE iclear.global_cap SET cap_limit = 2")
        .unwrap();
    a.batch_execute("BEGIN").unwrap();
    let d = process(&mut a, &lead("C1"));
    assert_eq!(d["services"][0]["outcome"], "pass", "{d}");
    // the server stops while C1's transaction is still open
    drop(c);
    cl.restart("immediate");
    drop(a);
    let mut c = cl.connect_retry("t_rb", 60);
    let d = process(&mut c, &lead("C2"));
    assert_eq!(
        d["services"][0]["outcome"], "cap_reached",
        "C1's sent lookup still counts: {d}"
    );
    wait_until(
        &cl,
        &mut c,
        "SELECT count(*) = 2 FROM iclear.spent_request WHERE lead_id = 'C1'",
        30,
    );
    assert_eq!(sb.count("ip"), 2);
}

/// The demo's duplicate check on product 'p': "duplicate" rejects a lead
/// whose email's counter reads 1 or more, "remember" increments it.
fn duplicate_check(c: &mut Client) {
    c.batch_execute(
        r#"INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'duplicate', 1 FROM iclear.product;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'counter', 'email_today:{%productField_email%}', 'greater_or_equal', '1'
             FROM iclear.rule WHERE name = 'duplicate';
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'stop_processing', '{"message": "duplicate"}' FROM iclear.rule WHERE name = 'duplicate';
           INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'remember', 2 FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'increment_counter', '{"counter": "email_today", "key": "{%productField_email%}"}'
             FROM iclear.rule WHERE name = 'remember';"#,
    )
    .unwrap();
}

/// The demo's duplicate check ("Duplicate email today" reads a counter,
/// "Remember the email" increments it): of two leads with the same email
/// posted at once, the second is rejected. And two multi-row transactions
/// meeting two emails in opposite orders do not deadlock.
#[test]
fn concurrent_duplicates_are_caught_and_crossed_batches_do_not_deadlock() {
    let cl = Cluster::start();
    let mut c = cl.database("t_dup");
    c.batch_execute("INSERT INTO iclear.product (name) VALUES ('p')")
        .unwrap();
    duplicate_check(&mut c);
    let lead =
        |id: &str, email: &str| json!({"product": "p", "lead_id": id, "fields": {"email": email}});
    let mut a = cl.connect("t_dup");
    a.batch_execute("BEGIN").unwrap();
    assert_eq!(
        process(&mut a, &lead("D1", "dup@x.com"))["status"],
        "accepted"
    );
    let url = cl.url("t_dup");
    let second = thread::spawn(move || {
        let mut b = Client::connect(&url, NoTls).unwrap();
        process(
            &mut b,
            &json!({"product": "p", "lead_id": "D2", "fields": {"email": "dup@x.com"}}),
        )
    });
    // the second waits for the first (it read the same key) ...
    wait_until(
        &cl,
        &mut c,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT iclear_process%'
                          AND state = 'active' AND pid <> pg_backend_pid())",
        10,
    );
    thread::sleep(Duration::from_millis(300));
    a.batch_execute("COMMIT").unwrap();
    let d = second.join().unwrap();
    assert_eq!(
        d["status"], "rejected",
        "... and then sees its increment: {d}"
    );
    assert_eq!(d["reason"], "duplicate");

    // crossed batches: [x, y] against [y, x], each in one transaction
    c.batch_execute("SET iclear.counter_lock_wait = 500")
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [["x@x.com", "y@x.com"], ["y@x.com", "x@x.com"]]
        .into_iter()
        .enumerate()
        .map(|(t, emails)| {
            let url = cl.url("t_dup");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut s = Client::connect(&url, NoTls).unwrap();
                s.batch_execute("SET iclear.counter_lock_wait = 500; BEGIN").unwrap();
                let first = process(&mut s, &json!({"product": "p", "lead_id": format!("X{t}a"), "fields": {"email": emails[0]}}));
                barrier.wait();
                let second = process(&mut s, &json!({"product": "p", "lead_id": format!("X{t}b"), "fields": {"email": emails[1]}}));
                s.batch_execute("COMMIT").unwrap();
                [first, second]
            })
        })
        .collect();
    let mut accepted = 0;
    for t in threads {
        for d in t.join().unwrap() {
            assert_ne!(d["status"], "error", "{d}");
            accepted += i64::from(d["status"] == "accepted");
        }
    }
    assert!(!cl.log().contains("deadlock detected"));
    // each second lead waited out the other batch's lock and read what was
    // committed by then: the other batch's first lead, or not yet (the
    // bounded wait trades the duplicate check for no deadlock here)
    assert!(accepted >= 2, "both firsts: {accepted}");
    assert_eq!(
        count(
            &mut c,
            "SELECT sum(value)::int8 FROM iclear.counter WHERE key IN ('x@x.com', 'y@x.com')"
        ),
        accepted
    );
}

/// One INSERT of many rows into an attached table (each row processed in a
/// subtransaction of a statement that lasts seconds) while the worker
/// reconciles sent requests every 100 ms: none of its requests is taken for
/// a rolled-back one. (The demo's 1,200-row INSERT found this: the worker
/// once judged a running transaction by the snapshot's xmax.)
#[test]
fn a_long_insert_with_sent_lookups_records_each_once() {
    let sb = Sandbox::start_with("127.0.0.1:0", SandboxOptions::delay(100, 100).unwrap()).unwrap();
    let cl = Cluster::start_with("-c iclear.database=t_long -c iclear.worker_naptime=100");
    let mut c = cl.database("t_long");
    c.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.service (name, cost, endpoint) VALUES ('iclaim', 0.02, '{}/iclaim');
           INSERT INTO iclear.global_rule (product_id, service, execution, settings)
           SELECT id, 'iclaim', 'sync', '{{"account_id": "acct", "api_token": "tok"}}' FROM iclear.product;
           CREATE TABLE leads (id bigserial PRIMARY KEY, "iClaimSessionId" text, iclear_status text);
           SELECT iclear.attach('leads', 'p');"#,
        sb.base_url()
    ))
    .unwrap();
    // the worker serves t_long (it restarts once the database exists)
    wait_until(
        &cl,
        &mut c,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'iclear worker' AND datname = 't_long')
            AND EXISTS (SELECT 1 FROM pg_class WHERE relname ~ '^decision_[0-9]{6}$')",
        60,
    );
    thread::sleep(Duration::from_millis(300));
    c.batch_execute(
        r#"INSERT INTO leads ("iClaimSessionId") SELECT 'ok-' || g FROM generate_series(1, 20) g"#,
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(sb.count("iclaim"), 20);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM leads WHERE iclear_status = 'accepted'"
        ),
        20
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM iclear.spent_request"),
        0,
        "every lead committed: nothing to record\n{}",
        cl.log()
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM iclear.consent_evidence"),
        20,
        "one piece of evidence per claim"
    );
}

/// Two databases of one cluster, each with iclear: rule 1 of one is not rule
/// 1 of the other, though both count in one shared table.
#[test]
fn databases_count_their_own_caps() {
    let cl = Cluster::start();
    let setup = r#"INSERT INTO iclear.product (name) VALUES ('p');
        INSERT INTO iclear.rule (product_id, name, daily_limit, cap_counts) SELECT id, 'once', 1, 'matches' FROM iclear.product;
        INSERT INTO iclear.rule_action (rule_id, action, config)
        SELECT id, 'lead_tags', '{"mode": "add", "tags": ["slot"]}' FROM iclear.rule;"#;
    let mut a = cl.database("t_db_a");
    let mut b = cl.database("t_db_b");
    a.batch_execute(setup).unwrap();
    b.batch_execute(setup).unwrap();
    let lead = json!({"product": "p", "fields": {}});
    assert_eq!(process(&mut a, &lead)["tags"], json!(["slot"]));
    assert_eq!(
        process(&mut b, &lead)["tags"],
        json!(["slot"]),
        "b's own slot"
    );
    assert_eq!(process(&mut a, &lead)["tags"], json!([]));
    assert_eq!(process(&mut b, &lead)["tags"], json!([]));
}

/// One INSERT of more leads than PostgreSQL's shared lock table can hold
/// key locks for (each lead reads and increments its own email's counter,
/// and the table has a unique key of its own): every lead is filtered, none
/// ends `error` ("out of shared memory" filled the rest of such a statement
/// before), and the rows still see each other's increments.
#[test]
fn a_multi_row_insert_larger_than_the_lock_table_filters_every_lead() {
    // 20 locks per transaction: a shared table of a few hundred entries
    // (CREATE EXTENSION itself needs about that many)
    let cl = Cluster::start_with("-c max_locks_per_transaction=20 -c max_connections=10");
    let mut c = cl.database("t_bulk");
    c.batch_execute("INSERT INTO iclear.product (name) VALUES ('p')")
        .unwrap();
    duplicate_check(&mut c);
    c.batch_execute(
        r#"CREATE TABLE leads (id bigserial PRIMARY KEY, ref text UNIQUE, email text,
                               iclear_status text, iclear_decision jsonb);
           SELECT iclear.attach('leads', 'p');"#,
    )
    .unwrap();
    let slots = count(
        &mut c,
        "SELECT (current_setting('max_locks_per_transaction')::int
                 * (current_setting('max_connections')::int + current_setting('max_worker_processes')::int
                    + current_setting('autovacuum_max_workers')::int + current_setting('max_wal_senders')::int
                    + 2))::int8",
    );
    let n = 4 * slots;
    // the last row repeats the first row's email: a duplicate within the statement
    c.execute(
        "INSERT INTO leads (ref, email)
         SELECT 'r' || g, 'lead' || (CASE WHEN g = $1 THEN 1 ELSE g END) || '@x.com'
           FROM generate_series(1, $1::int8) g",
        &[&n],
    )
    .unwrap();
    let statuses: Vec<(String, i64)> = c
        .query(
            "SELECT iclear_status, count(*) FROM leads GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        vec![("accepted".to_string(), n - 1), ("rejected".to_string(), 1)],
        "{n} leads against about {slots} lock slots"
    );
    assert_eq!(
        count(&mut c, "SELECT sum(value)::int8 FROM iclear.counter"),
        n - 1
    );
    // past the budget each lead gives its key locks back itself
    assert!(!cl.log().contains("you don't own a lock"), "{}", cl.log());
}

/// A counter read while the worker folds increments into totals: each
/// second lead with an email is rejected. The read covers both tables as
/// of one moment; read one table before a fold and the other after it, and
/// the folded increment was in neither.
#[test]
fn a_counter_read_during_folds_sees_every_increment() {
    let cl = Cluster::start();
    let mut c = cl.database("t_fold");
    c.batch_execute("INSERT INTO iclear.product (name) VALUES ('p')")
        .unwrap();
    duplicate_check(&mut c);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folder = {
        let url = cl.url("t_fold");
        let stop = stop.clone();
        thread::spawn(move || {
            let mut f = Client::connect(&url, NoTls).unwrap();
            let mut folds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.execute("SELECT iclear.fold_counters()", &[]).unwrap();
                folds += 1;
            }
            folds
        })
    };
    let sessions: Vec<_> = (0..4)
        .map(|t| {
            let url = cl.url("t_fold");
            thread::spawn(move || {
                let mut s = Client::connect(&url, NoTls).unwrap();
                let mut accepted_twice = 0;
                for i in 0..400 {
                    let lead = |n: u8| {
                        json!({"product": "p", "lead_id": format!("F{t}-{i}-{n}"),
                               "fields": {"email": format!("f{t}-{i}@x.com")}})
                    };
                    assert_eq!(process(&mut s, &lead(1))["status"], "accepted");
                    accepted_twice += i64::from(process(&mut s, &lead(2))["status"] == "accepted");
                }
                accepted_twice
            })
        })
        .collect();
    let accepted_twice: i64 = sessions.into_iter().map(|s| s.join().unwrap()).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let folds = folder.join().unwrap();
    assert!(folds > 100, "the worker's fold ran alongside: {folds}");
    assert_eq!(accepted_twice, 0, "second leads accepted, of 1,600");
}

/// Two transactions past their budget of key locks write the same keys in
/// opposite orders: list values, new sources, lookup-cache keys. Unlocked, each
/// `ON CONFLICT` waited for the other's open insert: a deadlock, which
/// PostgreSQL ended by failing one of them. Now a key another open
/// transaction is writing is left to it, as under the lock: neither waits,
/// and every key is there once both commit.
#[test]
fn transactions_past_their_lock_budget_write_keys_in_opposite_orders_without_deadlock() {
    let cl = Cluster::start_with(
        "-c max_locks_per_transaction=10 -c deadlock_timeout=200ms -c log_lock_waits=on",
    );
    let mut c = cl.database("t_cross");
    c.batch_execute(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.list (name, kind, field) VALUES ('seen', 'pl', 'email');
           INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'collect', 1 FROM iclear.product;
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT r.id, 'add_to_list', jsonb_build_object('list_ids', jsonb_build_array(l.id))
             FROM iclear.rule r, iclear.list l;"#,
    )
    .unwrap();
    // list values: the same emails, new sources for none
    cross(
        &cl,
        "lists",
        |_, key| json!({"product": "p", "fields": {"email": format!("{key}@x.com")}}),
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.list_entry WHERE value IN ('k1@x.com', 'k2@x.com')"
        ),
        2
    );
    // new sources: the same source ids, an email of each session's own
    cross(&cl, "sources", |who, key| {
        let source = if key == "k1" { 901 } else { 902 };
        json!({"product": "p", "publisher_id": 9, "channel_id": 1, "source_id": source,
               "fields": {"email": format!("{who}-{key}@x.com")}})
    });
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.source WHERE id IN (901, 902)"
        ),
        2
    );
    // lookup-cache keys: the same IPs, looked up and cached by both
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    c.batch_execute(&format!(
        r#"UPDATE iclear.service SET subscription = 'enabled', cost = 0.004, endpoint = '{}/ip'
            WHERE name = 'ip_analysis';
           INSERT INTO iclear.global_rule (product_id, service, execution, settings)
           SELECT id, 'ip_analysis', 'sync', '{{"api_key": "k", "cache_days": 30}}' FROM iclear.product;"#,
        sb.base_url()
    ))
    .unwrap();
    cross(&cl, "cache", |who, key| {
        let ip = if key == "k1" { "10.7.0.1" } else { "10.7.0.2" };
        json!({"product": "p", "fields": {"email": format!("{who}-{key}-ip@x.com"), "userIp": ip}})
    });
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM iclear.lookup_cache WHERE service = 'ip_analysis'"
        ),
        2
    );
    assert!(!cl.log().contains("deadlock detected"), "{}", cl.log());
}

/// Sessions a and b each open a transaction, spend its key-lock budget on
/// list values of their own (named after `tag`), then process `lead(who, "k1")` and
/// `lead(who, "k2")`, a in that order and b in the other, the second ones
/// at once; both commit. Every lead must be accepted.
fn cross(cl: &Cluster, tag: &str, lead: fn(&str, &str) -> Value) {
    let open = |who: &str| {
        let mut s = cl.connect("t_cross");
        s.batch_execute("BEGIN").unwrap();
        for i in 0..12 {
            let filler =
                json!({"product": "p", "fields": {"email": format!("{tag}-{who}{i}@x.com")}});
            assert_eq!(process(&mut s, &filler)["status"], "accepted");
        }
        s
    };
    let (mut a, mut b) = (open("a"), open("b"));
    assert_eq!(process(&mut a, &lead("a", "k1"))["status"], "accepted");
    assert_eq!(process(&mut b, &lead("b", "k2"))["status"], "accepted");
    let a_second = thread::spawn(move || {
        let d = a.query_one("SELECT iclear_process($1)", &[&lead("a", "k2")]);
        (a, d.map(|r| r.get::<_, Value>(0)).map_err(|e| message(&e)))
    });
    thread::sleep(Duration::from_millis(300));
    let b_second = b
        .query_one("SELECT iclear_process($1)", &[&lead("b", "k1")])
        .map(|r| r.get::<_, Value>(0))
        .map_err(|e| message(&e));
    let (mut a, a_second) = a_second.join().unwrap();
    for (who, d) in [("a", &a_second), ("b", &b_second)] {
        assert_eq!(
            d.as_ref().map(|d| d["status"].clone()),
            Ok(json!("accepted")),
            "{who}'s second lead\n{}",
            cl.log()
        );
    }
    a.batch_execute("COMMIT").unwrap();
    b.batch_execute("COMMIT").unwrap();
}

/// The duplicate check of a lead whose transaction is past its budget of key
/// locks (a bulk load: a multi-row INSERT, a COPY, many `iclear_process`
/// calls) against a live lead with the same email, both open at once, in
/// either order: the second to read the counter waits for the first to
/// commit and is rejected. Past its budget a transaction used to read and
/// write counter keys unlocked, and both were accepted.
#[test]
fn a_duplicate_across_a_bulk_load_past_its_lock_budget_is_rejected() {
    let cl = Cluster::start_with("-c max_locks_per_transaction=10");
    let mut c = cl.database("t_bulkdup");
    c.batch_execute("INSERT INTO iclear.product (name) VALUES ('p')")
        .unwrap();
    duplicate_check(&mut c);
    fn lead(id: &str, email: &str) -> Value {
        json!({"product": "p", "lead_id": id, "fields": {"email": email}})
    }
    // a session whose open transaction has spent its budget on emails of
    // its own, then processed `id` with `email`; committed after `hold`
    let bulk_load = |tag: &'static str, id: &'static str, email: &'static str, hold: Duration| {
        let url = cl.url("t_bulkdup");
        thread::spawn(move || {
            let mut s = Client::connect(&url, NoTls).unwrap();
            s.batch_execute("BEGIN").unwrap();
            for i in 0..12 {
                let filler = lead(&format!("{tag}-{i}"), &format!("{tag}-{i}@x.com"));
                assert_eq!(process(&mut s, &filler)["status"], "accepted");
            }
            let d = process(&mut s, &lead(id, email));
            thread::sleep(hold);
            s.batch_execute("COMMIT").unwrap();
            d
        })
    };

    // the bulk load's lead first, then a live one
    let bulk = bulk_load("b1", "B1", "one@x.com", Duration::from_millis(800));
    thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let live = process(&mut c, &lead("L1", "one@x.com"));
    let waited = started.elapsed();
    assert_eq!(bulk.join().unwrap()["status"], "accepted");
    assert_eq!(
        live["status"], "rejected",
        "the live lead after the bulk load's: {live}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "it waited for the bulk load: {waited:?}"
    );

    // a live lead first (its transaction open), then the bulk load's
    let mut live = cl.connect("t_bulkdup");
    live.batch_execute("BEGIN").unwrap();
    assert_eq!(
        process(&mut live, &lead("L2", "two@x.com"))["status"],
        "accepted"
    );
    let bulk = bulk_load("b2", "B2", "two@x.com", Duration::ZERO);
    thread::sleep(Duration::from_millis(800));
    live.batch_execute("COMMIT").unwrap();
    let d = bulk.join().unwrap();
    assert_eq!(
        d["status"], "rejected",
        "the bulk load's lead after the live one's: {d}"
    );
    assert!(!cl.log().contains("you don't own a lock"), "{}", cl.log());
}
