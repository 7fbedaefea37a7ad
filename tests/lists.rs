//! A national-scale phone list (issue 26 item 3): 1,000,000 numbers, written
//! as a registry file writes them, loaded with one COPY into
//! iclear.list_entry; the time is reported, not asserted (`make
//! bench-lists` runs it, release build), and a lead whose number is written
//! another way is rejected by the list after the load.

use iclear_it::Cluster;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Instant;

#[test]
#[ignore]
fn a_million_numbers_load_with_one_copy() {
    let n: u64 = std::env::var("ICLEAR_LIST_NUMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let cl = Cluster::start();
    let mut c = cl.database("t_dnc");
    c.batch_execute(
        "INSERT INTO iclear.product (name) VALUES ('p');
         INSERT INTO iclear.list (name, kind, field, refreshed_at) VALUES ('national dnc', 'dnpl', 'homePhone', now());
         INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p;",
    )
    .unwrap();
    let list: i64 = c
        .query_one("SELECT id FROM iclear.list", &[])
        .unwrap()
        .get(0);
    // distinct numbers (a stride coprime with the range), formatted
    let mut data = Vec::with_capacity(n as usize * 20);
    for i in 0..n {
        let d = 2_000_000_000 + (i * 7_919_993) % 7_999_999_999;
        writeln!(
            data,
            "{list}\t({:03}) {:03}-{:04}",
            d / 10_000_000 % 1000,
            d / 10_000 % 1000,
            d % 10_000
        )
        .unwrap();
    }
    let started = Instant::now();
    let mut w = c
        .copy_in("COPY iclear.list_entry (list_id, value) FROM STDIN")
        .unwrap();
    w.write_all(&data).unwrap();
    w.finish().unwrap();
    let took = started.elapsed();
    let count: i64 = c
        .query_one("SELECT count(*) FROM iclear.list_entry", &[])
        .unwrap()
        .get(0);
    assert_eq!(count as u64, n);
    let size: String = c
        .query_one(
            "SELECT pg_size_pretty(pg_relation_size('iclear.list_entry_pkey'))",
            &[],
        )
        .unwrap()
        .get(0);
    println!(
        "lists: {n} numbers in one COPY: {:.1} s ({:.0} rows/s); index {size}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    // the first number, written another way, is rejected by the list
    let first = 2_000_000_000u64;
    let lead = json!({"product": "p", "fields": {"homePhone": format!("+1 {first}")}});
    let d: Value = c
        .query_one("SELECT iclear_process($1)", &[&lead])
        .unwrap()
        .get(0);
    assert_eq!(d["rejected_by"]["kind"], "list", "{d}");
    let started = Instant::now();
    for i in 0..1000u64 {
        let lead =
            json!({"product": "p", "fields": {"homePhone": format!("{}", first + i * 7_919_993)}});
        let _: Value = c
            .query_one("SELECT iclear_process($1)", &[&lead])
            .unwrap()
            .get(0);
    }
    println!(
        "lists: 1,000 leads probed after the load: {:.2} ms each",
        started.elapsed().as_secs_f64()
    );
}
