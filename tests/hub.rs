//! A hub and two lead stores on loopback (issue 24, docs/guide/hub.md):
//! configuration and lists replicated from the hub, list additions and
//! decisions back to it, a shared global cap spent from leases, a
//! configuration write on a store refused, and the hub stopped with `-m
//! immediate` under load. Leads are inserted by a role that is not a
//! superuser.

use iclear_it::Cluster;
use iclear_services::sandbox::Sandbox;
use postgres::{Client, NoTls};
use std::thread;
use std::time::{Duration, Instant};

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Ask `sql` (one bigint) until it is `want`, for up to `secs`; the last answer.
fn wait_for(c: &mut Client, sql: &str, want: i64, secs: u64) -> i64 {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = count(c, sql);
        if got == want || Instant::now() > until {
            return got;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn cluster(db: &str) -> Cluster {
    Cluster::start_with(&format!(
        "-c wal_level=logical -c iclear.database={db} -c iclear.worker_naptime=200 \
         -c max_replication_slots=10 -c max_wal_senders=10 -c iclear.cap_lease_size=5"
    ))
}

fn conninfo(cl: &Cluster, db: &str) -> String {
    format!("host=127.0.0.1 port={} dbname={db} user=postgres", cl.port)
}

/// On a store: an attached lead table `leads`, and the application role
/// `app` (not a superuser) that inserts into it.
fn lead_table(c: &mut Client) {
    c.batch_execute(
        r#"CREATE TABLE leads (id bigserial PRIMARY KEY, email text, age int, "homePhone" text, "userIp" text,
                               note text, iclear_status text, iclear_decision jsonb);
           SELECT iclear.attach('leads', 'p');
           DO $$ BEGIN CREATE ROLE app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
           GRANT INSERT, SELECT ON leads TO app;
           GRANT USAGE ON SEQUENCE leads_id_seq TO app;"#,
    )
    .unwrap();
}

fn app(cl: &Cluster, db: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} dbname={db} user=app", cl.port),
        NoTls,
    )
    .unwrap()
}

#[test]
fn a_hub_and_two_stores_share_rules_lists_caps_and_reports() {
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    let hub = cluster("h");
    let a = cluster("sa");
    let b = cluster("sb");
    let mut h = hub.database("h");
    // the hub's configuration: a product with an age rule, a phone DNPL, a
    // rule that lists a complainer's phone, an IP lookup under a shared
    // global cap of 30
    h.batch_execute(&format!(
        r#"INSERT INTO iclear.product (name) VALUES ('p');
           INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'adults', 1 FROM iclear.product;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'lead_body', 'age', 'less', '18' FROM iclear.rule WHERE name = 'adults';
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'stop_processing', '{{"message": "too young"}}' FROM iclear.rule WHERE name = 'adults';
           INSERT INTO iclear.list (name, kind, field) VALUES ('phones', 'dnpl', 'homePhone');
           INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p;
           INSERT INTO iclear.rule (product_id, name, position) SELECT id, 'complainers', 2 FROM iclear.product;
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'lead_body', 'note', 'equals', '"complained"' FROM iclear.rule WHERE name = 'complainers';
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT r.id, 'add_to_list', jsonb_build_object('list_ids', jsonb_build_array(l.id))
             FROM iclear.rule r, iclear.list l WHERE r.name = 'complainers';
           UPDATE iclear.service SET subscription = 'enabled', endpoint = '{url}/ip' WHERE name = 'ip_analysis';
           INSERT INTO iclear.global_rule (product_id, service, settings)
           SELECT id, 'ip_analysis', '{{"api_key": "k"}}' FROM iclear.product;
           INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('ip_analysis', 'monthly', 30);
           SELECT iclear.hub_publish();"#,
        url = sb.base_url()
    ))
    .unwrap();
    let mut sa = a.database("sa");
    let mut sbc = b.database("sb");
    for (c, name, cl, db) in [
        (&mut sa, "store_a", &a, "sa"),
        (&mut sbc, "store_b", &b, "sb"),
    ] {
        c.batch_execute(&format!(
            "SELECT iclear.join_hub('{name}', '{}')",
            conninfo(&hub, "h")
        ))
        .unwrap();
        assert_eq!(
            wait_for(c, "SELECT count(*) FROM iclear.rule", 2, 20),
            2,
            "{name} has the hub's rules"
        );
        h.batch_execute(&format!(
            "SELECT iclear.hub_add_store('{name}', '{}')",
            conninfo(cl, db)
        ))
        .unwrap();
        lead_table(c);
    }

    // a rule changed on the hub changes the verdict in an already open session
    let mut open = app(&a, "sa");
    open.batch_execute("INSERT INTO leads (email, age) VALUES ('x1@x.com', 20)")
        .unwrap();
    h.batch_execute("UPDATE iclear.rule_condition SET value = '21' WHERE parameter = 'age'")
        .unwrap();
    let changed_at = Instant::now();
    let until = changed_at + Duration::from_secs(10);
    let mut n = 2;
    loop {
        open.execute(
            "INSERT INTO leads (email, age) VALUES ($1, 20)",
            &[&format!("x{n}@x.com")],
        )
        .unwrap();
        let s: String = open
            .query_one(
                "SELECT iclear_status FROM leads ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap()
            .get(0);
        if s == "rejected" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the open session never saw the change"
        );
        n += 1;
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "hub: a rule change reached an open store session in {:?}",
        changed_at.elapsed()
    );

    // a configuration write on a store is refused, naming the hub
    let e = sa
        .batch_execute("UPDATE iclear.rule SET position = 5")
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "25006");
    assert!(db.message().contains("hub"), "{}", db.message());

    // a hub list entry rejects on a store; a store's addition reaches the other
    h.batch_execute("INSERT INTO iclear.list_entry (list_id, value) SELECT id, '(310) 867-0101' FROM iclear.list")
        .unwrap();
    assert_eq!(
        wait_for(
            &mut sbc,
            "SELECT count(*) FROM iclear.list_entry WHERE value = '3108670101'",
            1,
            10
        ),
        1
    );
    let mut app_b = app(&b, "sb");
    app_b
        .batch_execute(r#"INSERT INTO leads (email, age, "homePhone") VALUES ('d@x.com', 30, '+1 310 867 0101')"#)
        .unwrap();
    let reason: String = app_b
        .query_one(
            "SELECT iclear_decision->>'reason' FROM leads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("phones"), "{reason}");
    let mut app_a = app(&a, "sa");
    app_a
        .batch_execute(r#"INSERT INTO leads (email, age, "homePhone", note) VALUES ('c@x.com', 30, '(310) 867-0202', 'complained')"#)
        .unwrap();
    let added = Instant::now();
    assert_eq!(
        wait_for(
            &mut sbc,
            "SELECT count(*) FROM iclear.list_entry WHERE value = '3108670202'",
            1,
            10
        ),
        1,
        "store_a's addition reaches store_b"
    );
    println!(
        "hub: a store's list addition reached the other store in {:?}",
        added.elapsed()
    );
    assert_eq!(
        count(
            &mut h,
            "SELECT count(*) FROM iclear.list_entry WHERE value = '3108670202'"
        ),
        1
    );

    // two stores, 4 sessions each, race the shared global cap of 30
    // (each store's worker keeps its lease: wait until both run)
    for (c, name) in [(&mut sa, "store_a"), (&mut sbc, "store_b")] {
        assert_eq!(
            wait_for(
                c,
                "SELECT count(*) FROM iclear.cap_grant WHERE granted > 0",
                1,
                30
            ),
            1,
            "{name}'s worker took a lease"
        );
    }
    let before = sb.count("ip");
    let threads: Vec<_> = [(&a, "sa"), (&b, "sb")]
        .into_iter()
        .flat_map(|(cl, db)| {
            (0..4).map(move |s| {
                let url = format!("host=127.0.0.1 port={} dbname={db} user=app", cl.port);
                thread::spawn(move || {
                    let mut c = Client::connect(&url, NoTls).unwrap();
                    for i in 0..15 {
                        c.execute(
                            r#"INSERT INTO leads (email, age, "userIp") VALUES ($1, 30, $2)"#,
                            &[&format!("r{s}-{i}@{db}.com"), &format!("10.9.{s}.{i}")],
                        )
                        .unwrap();
                        thread::sleep(Duration::from_millis(60));
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lookups = sb.count("ip") - before;
    println!("hub: the two stores made {lookups} IP lookups under a shared cap of 30");
    assert!(lookups <= 30, "never over the shared cap: {lookups}");
    assert!(lookups >= 10, "the leases were used: {lookups}");
    let granted = count(
        &mut h,
        "SELECT coalesce(sum(granted), 0)::int8 FROM iclear.cap_lease",
    );
    assert!(granted <= 30, "{granted}");
    for (c, name) in [(&mut sa, "store_a"), (&mut sbc, "store_b")] {
        assert_eq!(
            count(c, "SELECT count(*) FROM leads WHERE \"userIp\" IS NOT NULL"),
            60,
            "{name}: no lead lost"
        );
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM leads WHERE iclear_status = 'error'"
            ),
            0,
            "{name}"
        );
    }

    // every store's decisions on the hub, by store
    let total_a = count(&mut sa, "SELECT count(*) FROM iclear.decision");
    let total_b = count(&mut sbc, "SELECT count(*) FROM iclear.decision");
    assert_eq!(
        wait_for(
            &mut h,
            "SELECT count(*) FROM iclear.store_decision",
            total_a + total_b,
            20
        ),
        total_a + total_b
    );
    assert_eq!(
        count(
            &mut h,
            "SELECT count(DISTINCT store) FROM iclear.store_decision"
        ),
        2
    );
    assert_eq!(
        count(
            &mut h,
            "SELECT count(*) FROM iclear.store_status WHERE receiving"
        ),
        2
    );
    assert!(
        count(
            &mut h,
            "SELECT coalesce(sum(lookups), 0)::int8 FROM iclear.store_service_usage"
        ) >= lookups as i64
    );

    // the hub stopped with -m immediate under load: leads keep flowing,
    // decided with what the stores last received; then it comes back and
    // the decisions made meanwhile reach it
    let load = {
        let url = format!("host=127.0.0.1 port={} dbname=sa user=app", a.port);
        thread::spawn(move || {
            let mut c = Client::connect(&url, NoTls).unwrap();
            for i in 0..60 {
                c.execute(
                    "INSERT INTO leads (email, age) VALUES ($1, $2)",
                    &[&format!("down{i}@x.com"), &(18 + i % 10)],
                )
                .unwrap();
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    hub.stop("immediate");
    thread::sleep(Duration::from_secs(2));
    hub.start_again();
    load.join().unwrap();
    assert_eq!(
        count(
            &mut sa,
            "SELECT count(*) FROM leads WHERE email LIKE 'down%'"
        ),
        60
    );
    assert_eq!(
        count(
            &mut sa,
            "SELECT count(*) FROM leads WHERE email LIKE 'down%' AND iclear_status = 'error'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut sa,
            "SELECT count(*) FROM leads WHERE email LIKE 'down%' AND iclear_status = 'accepted'"
        ),
        count(
            &mut sa,
            "SELECT count(*) FROM leads WHERE email LIKE 'down%' AND age >= 21"
        ),
        "decided with the rule last received"
    );
    let mut h = hub.connect_retry("h", 20);
    let total_a = count(&mut sa, "SELECT count(*) FROM iclear.decision");
    assert_eq!(
        wait_for(
            &mut h,
            "SELECT count(*) FROM iclear.store_decision WHERE store = 'store_a'",
            total_a,
            30
        ),
        total_a,
        "the decisions made while the hub was down reach it"
    );
}
