//! The reporting contract as a golden test (issue 30): every view,
//! `lead_info` of every lead and a backtest return the same rows on the
//! demo's data (examples/payday_us.sql, examples/leads.sql, the sandbox
//! answering, a shadow rule added) as they did when this test was written,
//! whatever the storage under them (filter-log rows or the decision).
//!
//! Ids and times differ from run to run and are left out: a key named `id`
//! is dropped and a value that reads as a date or a time becomes `<time>`.
//! Each view is kept as its row count and the md5 of its rows, sorted, in
//! tests/golden/reporting.txt; the rows themselves are written to
//! target/reporting/ to diff when a hash differs. `ICLEAR_GOLDEN=update`
//! rewrites the golden file.

use iclear_it::{client, Cluster};
use iclear_services::sandbox::Sandbox;
use postgres::Client;
use serde_json::Value;
use std::path::PathBuf;

const DB: &str = "t_reporting";
const LEADS: usize = 600;

/// Views that show the state of the server now (sessions, the worker, the
/// queue, leases, alerts' clocks), not what was decided.
const NOT_REPORTS: &[&str] = &[
    "health",
    "progress",
    "cap_lease_status",
    "store_status",
    "metrics",
    // (the rows of filter_log and the decisions' steps: "filter_log rows")
    "filter_log_all",
];

fn psql(cl: &Cluster, file: &str, vars: &[String]) -> Vec<u8> {
    let mut args = cl.conn_args(DB);
    args.extend(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-f", file].map(String::from));
    for v in vars {
        args.extend(["-v".to_string(), v.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client("psql", &args);
    assert!(
        out.status.success(),
        "psql -f {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The sandbox's address, which differs from run to run.
static SANDBOX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Ids dropped, times made `<time>`, SMS codes and random draws (random)
/// `<code>` and `<draw>`, the
/// sandbox's address `<sandbox>`, recursively.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            // a random condition's draw, in the trace
            let random = o.get("category") == Some(&Value::from("random"));
            Value::Object(
                o.into_iter()
                    .filter(|(k, _)| k != "id")
                    .map(|(k, v)| match k.as_str() {
                        "code" => (k, Value::String("<code>".into())),
                        "actual" if random => (k, Value::String("<draw>".into())),
                        _ => (k, normalize(v)),
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::String(s) if looks_like_time(&s) => Value::String("<time>".into()),
        Value::String(s) => match SANDBOX.get() {
            Some(addr) if s.contains(addr.as_str()) => {
                Value::String(s.replace(addr.as_str(), "<sandbox>"))
            }
            _ => Value::String(s),
        },
        v => v,
    }
}

/// `2026-12-07`, `2026-12-07T06:14:50.123+00:00`, `2026-12-07 06:14:50+00`.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// The rows of `sql` (one jsonb column), normalized, as sorted lines.
fn rows(c: &mut Client, sql: &str) -> Vec<String> {
    let mut lines: Vec<String> = c
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| normalize(r.get::<_, Value>(0)).to_string())
        .collect();
    lines.sort();
    lines
}

/// Arrays inside lead_info are ordered by time and id: the same steps
/// stored another way may tie differently, so its `log` is sorted too.
fn sorted_log(mut info: Value) -> Value {
    if let Some(Value::Array(log)) = info.get_mut("log") {
        log.sort_by_key(|e| e.to_string());
    }
    info
}

#[test]
fn views_lead_info_and_backtest_match_the_golden_output() {
    let cl = Cluster::start();
    let sb = Sandbox::start("127.0.0.1:0").unwrap();
    SANDBOX.set(sb.addr().to_string()).unwrap();
    let mut c = cl.database(DB);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ex = |f: &str| root.join("examples").join(f).to_str().unwrap().to_string();
    psql(
        &cl,
        &ex("payday_us.sql"),
        &[format!("sandbox=http://{}", sb.addr())],
    );
    // Draws made the same every run: the QA sample's random condition
    // always holds, and every lead is looked up (up to the daily cap).
    // A shadow rule, so that the shadow report and rule quality have rows.
    c.batch_execute(
        r#"UPDATE iclear.rule_condition SET value = '1001' WHERE category = 'random';
           UPDATE iclear.global_rule SET lookup_percent = 100;
           INSERT INTO iclear.rule (product_id, stage, name, position, status)
           SELECT id, 'processing', 'shadow: income under 1800', 0, 'shadow'
             FROM iclear.product WHERE name = 'payday_us';
           INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
           SELECT id, 'lead_body', 'monthlyIncome', 'less', '1800' FROM iclear.rule WHERE status = 'shadow';
           INSERT INTO iclear.rule_action (rule_id, action, config)
           SELECT id, 'stop_processing', '{"message": "income under 1800"}' FROM iclear.rule
            WHERE status = 'shadow';"#,
    )
    .unwrap();
    psql(&cl, &ex("leads.sql"), &[format!("n={LEADS}")]);
    loop {
        let left: i64 = c
            .query_one("SELECT queue_depth FROM iclear.health", &[])
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        c.batch_execute("SELECT iclear.run_worker_once(100000)")
            .unwrap();
    }
    c.batch_execute("SELECT iclear.maintain()").unwrap();

    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let views: Vec<String> = c
        .query(
            "SELECT viewname::text FROM pg_views WHERE schemaname = 'iclear' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|v: &String| !NOT_REPORTS.contains(&v.as_str()))
        .collect();
    assert!(views.len() >= 8, "views: {views:?}");
    for v in &views {
        out.push((
            v.clone(),
            rows(&mut c, &format!("SELECT to_jsonb(v) FROM iclear.{v} v")),
        ));
    }
    // every filter-log row, wherever it is stored (a 0.6.0 decision holds
    // its rules' outcomes: filter_log_all reads them with the table's rows)
    let all: Option<String> = c
        .query_one("SELECT to_regclass('iclear.filter_log_all')::text", &[])
        .unwrap()
        .get(0);
    out.push((
        "filter_log rows".into(),
        rows(
            &mut c,
            &format!(
                "SELECT to_jsonb(f) FROM {} f",
                all.as_deref().unwrap_or("iclear.filter_log")
            ),
        ),
    ));
    if all.is_some() {
        // the point of the change: the rules' outcomes are not rows
        let (table, held): (i64, i64) = {
            let r = c
                .query_one(
                    "SELECT (SELECT count(*) FROM iclear.filter_log),
                            (SELECT count(*) FROM iclear.filter_log_all WHERE id IS NULL)",
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        let rule_rows: i64 = c
            .query_one("SELECT count(*) FROM iclear.filter_log WHERE kind IN ('rule', 'list', 'validation')", &[])
            .unwrap()
            .get(0);
        assert!(
            held > 1000 && rule_rows == 0,
            "filter_log {table} rows ({rule_rows} of rules), steps {held}"
        );
    }
    let infos = rows(
        &mut c,
        "SELECT iclear.lead_info(lead_id) FROM (SELECT DISTINCT lead_id FROM iclear.decision) d",
    );
    let infos = infos
        .into_iter()
        .map(|s| sorted_log(serde_json::from_str(&s).unwrap()).to_string())
        .collect();
    out.push(("lead_info".into(), infos));
    // the demo's backtest (buyers' feedback, then a draft rule)
    let bt = psql(&cl, &ex("backtest.sql"), &[]);
    let bt: Value =
        serde_json::from_slice(&bt[bt.iter().position(|b| *b == b'{').unwrap()..]).unwrap();
    out.push(("backtest".into(), vec![normalize(bt).to_string()]));

    let dir = root.join("target/reporting");
    std::fs::create_dir_all(&dir).unwrap();
    let mut golden = String::new();
    for (name, lines) in &out {
        let text = lines.join("\n");
        std::fs::write(dir.join(format!("{}.txt", name.replace(' ', "_"))), &text).unwrap();
        let md5: String = c.query_one("SELECT md5($1)", &[&text]).unwrap().get(0);
        golden += &format!("{} {} {md5}\n", name.replace(' ', "_"), lines.len());
    }
    let path = root.join("tests/golden/reporting.txt");
    if std::env::var("ICLEAR_GOLDEN").as_deref() == Ok("update") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &golden).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        golden, expected,
        "the reporting output differs from tests/golden/reporting.txt (rows in target/reporting/)"
    );
    // the reports the filter log feeds have something to compare
    for name in [
        "full_log",
        "pre_screen_reject_log",
        "rule_quality",
        "shadow_report",
        "lead_info",
    ] {
        let n = out
            .iter()
            .find(|(v, _)| v == name)
            .map_or(0, |(_, l)| l.len());
        assert!(n > 0, "{name} is empty: nothing to compare");
    }
}
