//! Engine evaluation alone (no Postgres): leads/s and rules/s for 20, 100 and
//! 1,000 active rules, with the trace off and full.
//! Run: make bench-engine (cargo bench -p iclear-engine --bench rules).

use chrono::{DateTime, Utc};
use iclear_engine::config::ProductConfig;
use iclear_engine::envelope::Envelope;
use iclear_engine::facts::{CallResult, Facts, HistoryQuery, JobSpec, RuleSlot, ServiceCall};
use iclear_engine::global::GlobalRule;
use iclear_engine::pipeline::{process_traced, TraceLevel};
use iclear_engine::service::verification_history::SmsRecord;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};

struct NoDb;

impl Facts for NoDb {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn lists_containing(&mut self, _: &[(i64, String)]) -> Vec<i64> {
        Vec::new()
    }
    fn counter_value(&mut self, _: &str, _: &str) -> i64 {
        0
    }
    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        None
    }
    fn random_0_1000(&mut self) -> i64 {
        500
    }
    fn history_count(&mut self, _: &HistoryQuery) -> i64 {
        0
    }
    fn take_rule_cap(&mut self, _: &RuleSlot) -> bool {
        true
    }
    fn roll_percent(&mut self) -> u32 {
        0
    }
    fn cached(&mut self, _: &str, _: &str, _: Option<u32>) -> Option<Value> {
        None
    }
    fn take_service_cap(&mut self, _: &GlobalRule, _: Option<&RuleSlot>) -> Option<String> {
        None
    }
    fn call_service(&mut self, _: &ServiceCall) -> CallResult {
        CallResult::NoResponse {
            reason: "no services in this benchmark".into(),
            timed_out: false,
            retryable: false,
            request: Value::Null,
        }
    }
    fn enqueue(&mut self, _: &JobSpec) -> i64 {
        0
    }
    fn signature_recorded_at(&mut self, _: &str) -> Result<Option<DateTime<Utc>>, String> {
        Ok(None)
    }
    fn sms_verified(&mut self, _: &str, _: &str) -> Result<Option<SmsRecord>, String> {
        Ok(None)
    }
    fn start_sms_verification(&mut self, _: &str, _: &str, _: &str) -> Result<Option<i64>, String> {
        Ok(None)
    }
}

/// A realistic mix: equality, set membership, numeric, regex and text
/// conditions; most rules do not match (as in production), some tag.
fn rules(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = i as i64 + 1;
            let conds = match i % 5 {
                0 => json!([{"id": id * 10, "category": "lead_body", "parameter": "state", "operator": "in",
                             "value": ["NY", "VT", "WV", "AR", "MD", "PA"]}]),
                1 => json!([{"id": id * 10, "category": "lead_body", "parameter": "monthlyIncome", "operator": "less", "value": 1000 + i},
                            {"id": id * 10 + 1, "category": "lead_body", "parameter": "age", "operator": "greater_or_equal", "value": 18}]),
                2 => json!([{"id": id * 10, "category": "lead_body", "parameter": "email", "operator": "regex",
                             "value": format!("@(mailinator|yopmail|trash{i})\\.")}]),
                3 => json!([{"id": id * 10, "category": "lead_param", "parameter": "publisher_id", "operator": "equals", "value": 1000 + i},
                            {"id": id * 10 + 1, "category": "lead_body", "parameter": "firstName", "operator": "equals", "value": "test"}]),
                _ => json!([{"id": id * 10, "category": "lead_body", "parameter": "email", "operator": "ends_with", "value": "@gmail.com"}]),
            };
            json!({"id": id, "stage": "processing", "name": format!("rule {id}"), "conditions": conds,
                   "actions": [{"id": id, "action": "lead_tags", "config": {"mode": "add", "tags": [format!("t{}", i % 7)]}}]})
        })
        .collect()
}

fn main() {
    let lead = Envelope::parse(
        &json!({"product": "p", "publisher_id": 12, "source_id": 77, "fields": {
        "email": "maria.garcia@gmail.com", "firstName": "Maria", "state": "CA", "age": 34,
        "monthlyIncome": 4200, "loanAmount": 800, "homePhone": "2125550123"}}),
    )
    .unwrap();
    println!(
        "{:>6} {:>6} {:>12} {:>14} {:>10}",
        "rules", "trace", "leads/s", "rules/s", "µs/lead"
    );
    for n in [20usize, 100, 1000] {
        let cfg = ProductConfig::from_json(
            json!({"id": 1, "name": "p", "kind": "post", "rules": rules(n), "lists": []}),
        )
        .unwrap();
        for (name, level) in [("off", TraceLevel::Off), ("full", TraceLevel::Full)] {
            // warm up, then run for a fixed time
            for _ in 0..200 {
                black_box(process_traced(&cfg, &lead, "L", &mut NoDb, level));
            }
            let budget = Duration::from_millis(700);
            let start = Instant::now();
            let mut leads = 0u64;
            while start.elapsed() < budget {
                for _ in 0..50 {
                    black_box(process_traced(&cfg, &lead, "L", &mut NoDb, level));
                }
                leads += 50;
            }
            let secs = start.elapsed().as_secs_f64();
            let lps = leads as f64 / secs;
            println!(
                "{:>6} {:>6} {:>12.0} {:>14.0} {:>10.1}",
                n,
                name,
                lps,
                lps * n as f64,
                1e6 / lps
            );
        }
    }
}
