//! The job queue's SQL (`iclear.job`): claiming due jobs with a lease
//! (`FOR UPDATE SKIP LOCKED`), marking them, and the worker's bookkeeping
//! and upkeep. The worker (src/worker.rs) decides what to do with them.

use super::{exec, query_value, INT8, TEXT};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// A claimed job.
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub product_id: i64,
    pub lead_id: String,
    pub payload: Value,
    pub attempts: i32,
}

/// Claim up to `limit` due jobs (queued and due, or running with an expired
/// lease), leased for `lease_s` seconds. A job whose lease expired after its
/// last allowed attempt (its worker died every time) is failed instead of
/// being called again.
pub fn claim(limit: i64, max_attempts: i32, lease_s: i64) -> Vec<Job> {
    exec(
        "UPDATE iclear.job SET status = 'failed', leased_until = NULL, updated_at = now(),
                last_error = coalesce(last_error || '; ', '') || 'lease expired after the last attempt'
          WHERE status = 'running' AND leased_until < now() AND attempts >= $1",
        &[INT8],
        &[i64::from(max_attempts).into()],
    );
    let doc: Option<JsonB> = query_value(
        "WITH c AS (
            UPDATE iclear.job j
               SET status = 'running', attempts = j.attempts + 1, updated_at = now(),
                   leased_until = now() + make_interval(secs => $2)
             WHERE j.id IN (SELECT id FROM iclear.job
                             WHERE (status = 'queued' AND run_after <= now())
                                OR (status = 'running' AND leased_until < now())
                             ORDER BY run_after, id
                             LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING j.id, j.kind, j.product_id, j.lead_id, j.payload, j.attempts)
         SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id), '[]') FROM c",
        &[INT8, INT8],
        &[limit.into(), lease_s.into()],
    );
    let rows = doc.map(|d| d.0).unwrap_or(Value::Null);
    rows.as_array()
        .map(|a| {
            a.iter()
                .map(|r| Job {
                    id: r["id"].as_i64().unwrap_or(0),
                    kind: r["kind"].as_str().unwrap_or("").to_string(),
                    product_id: r["product_id"].as_i64().unwrap_or(0),
                    lead_id: r["lead_id"].as_str().unwrap_or("").to_string(),
                    payload: r["payload"].clone(),
                    attempts: r["attempts"].as_i64().unwrap_or(1) as i32,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Mark a job; false when this claim no longer owns it (nothing else is written then).
pub fn mark(job: &Job, status: &str, error: Option<&str>) -> bool {
    query_value::<i64>(
        "UPDATE iclear.job
            SET status = $3, last_error = $4, leased_until = NULL, updated_at = now(),
                run_after = CASE WHEN $3 = 'queued'
                                 THEN now() + make_interval(secs => least(600, 10 * 2 ^ (attempts - 1)))
                                 ELSE run_after END
          WHERE id = $1 AND status = 'running' AND attempts = $2
         RETURNING id",
        &[INT8, INT8, TEXT, TEXT],
        &[
            job.id.into(),
            i64::from(job.attempts).into(),
            status.into(),
            error.into(),
        ],
    )
    .is_some()
}

/// Give back a job this claim took and never started (the worker is
/// stopping): queued again, due now, its attempt not counted.
pub fn release(job: &Job) {
    exec(
        "UPDATE iclear.job SET status = 'queued', attempts = attempts - 1, leased_until = NULL,
                run_after = now(), updated_at = now()
          WHERE id = $1 AND status = 'running' AND attempts = $2",
        &[INT8, INT8],
        &[job.id.into(), i64::from(job.attempts).into()],
    );
}

/// Is iclear, at this library's version, created in the worker's database?
pub fn extension_ready() -> bool {
    // an older version is waiting for ALTER EXTENSION UPDATE: wait with it
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'iclear' AND extversion = $1)",
        &[env!("CARGO_PKG_VERSION").into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

thread_local! {
    static PRUNED: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Fold the append-only counter and cap rows (every round); prune the lead
/// history and check the alert rules about once a minute (a velocity window
/// may be minutes long; each prune and each check reads the newest block
/// ranges of their tables).
pub fn fold() {
    exec(
        "SELECT iclear.fold_counters(), iclear.fold_cap_uses()",
        &[],
        &[],
    );
    // a store keeps its leases of the hub's global caps topped up (a hub
    // that does not answer costs this round at most iclear.hub_timeout)
    // and takes its decisions and list additions to it
    if let super::config::HubRole::Store(_) = super::config::hub_role() {
        exec(
            "SELECT iclear.refresh_cap_leases(), iclear.push_to_hub()",
            &[],
            &[],
        );
    }
    let due = PRUNED
        .get()
        .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
    if due && super::config::schema_at_least(6) {
        exec(
            "SELECT iclear.prune_history(), iclear.check_alerts()",
            &[],
            &[],
        );
        PRUNED.set(Some(std::time::Instant::now()));
    }
}

/// Daily upkeep: partitions and retention (iclear.maintain()), and done
/// jobs older than 7 days.
pub fn upkeep() {
    exec("SELECT iclear.maintain()", &[], &[]);
    exec(
        "DELETE FROM iclear.job WHERE status = 'done' AND updated_at < now() - interval '7 days'",
        &[],
        &[],
    );
    // a phone's SMS windows (iclear.sms_window, at most a week) once past
    exec(
        "DELETE FROM iclear.cap_use WHERE scope = 'phone' AND at < now() - interval '8 days'",
        &[],
        &[],
    );
}
