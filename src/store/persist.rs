//! Persisting a decision, its filter-log rows and its effects, in the
//! caller's transaction.

use super::exec;
use iclear_engine::pipeline::{Effect, LogEntry};
use pgrx::JsonB;
use serde_json::{json, Value};

pub struct Record<'a> {
    pub lead_id: &'a str,
    pub product_id: Option<i64>,
    pub stage: &'a str,
    pub status: &'a str,
    pub envelope: &'a Value,
    pub decision: &'a Value,
    pub log: &'a [LogEntry],
}

/// One statement writes the decision and all its log rows.
pub fn save(r: &Record) {
    let log: Vec<Value> = r
        .log
        .iter()
        .map(|e| {
            json!({"stage": e.stage, "origin": e.origin, "kind": e.kind, "ref_id": e.ref_id,
                   "name": e.name, "outcome": e.outcome, "detail": e.detail})
        })
        .collect();
    exec(
        "WITH d AS (INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision)
                    VALUES ($1, $2, $3, $4, $5, $6))
         INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name, outcome, detail)
         SELECT $1, $2, x.stage, x.origin, x.kind, x.ref_id, x.name, x.outcome, x.detail
           FROM jsonb_to_recordset($7) AS x(stage text, origin text, kind text, ref_id bigint,
                                            name text, outcome text, detail jsonb)",
        &[
            r.lead_id.into(),
            r.product_id.into(),
            r.stage.into(),
            r.status.into(),
            JsonB(r.envelope.clone()).into(),
            JsonB(r.decision.clone()).into(),
            JsonB(Value::Array(log)).into(),
        ],
    );
}

pub fn apply(effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::AddToList { list_id, value } => exec(
                "INSERT INTO iclear.list_entry (list_id, value, added_by) VALUES ($1, $2, 'iclear')
                 ON CONFLICT DO NOTHING",
                &[(*list_id).into(), value.as_str().into()],
            ),
            // Atomic under concurrency: the row lock serialises increments.
            Effect::IncrementCounter { name, key, by } => exec(
                "INSERT INTO iclear.counter (name, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (name, key) DO UPDATE
                 SET value = iclear.counter.value + EXCLUDED.value, updated_at = now()",
                &[name.as_str().into(), key.as_str().into(), (*by).into()],
            ),
        }
    }
}
