//! The engine's questions answered from Postgres.

use super::{columns, exec, one, INT8, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::config::{Rule, RuleCaps};
use iclear_engine::facts::{CallResult, Facts, JobSpec, ServiceCall};
use iclear_engine::global::GlobalRule;
use iclear_engine::verification::SmsRecord;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgBuiltInOids;
use pgrx::JsonB;
use serde_json::Value;

pub struct PgFacts {
    pub source_created_at: Option<DateTime<Utc>>,
}

const PROBES_PER_STATEMENT: usize = 8;

/// `SELECT EXISTS (..$1, $2), EXISTS (..$3, $4), ..` for `n` probes; made
/// once per `n` and kept, like the statement's plan.
fn list_probe_sql(n: usize) -> &'static str {
    thread_local! {
        static SQL: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SQL.with_borrow_mut(|made| {
        while made.len() < n {
            let k = made.len() + 1;
            let cols: Vec<String> = (0..k)
                .map(|i| {
                    format!(
                        "EXISTS (SELECT 1 FROM iclear.list_entry WHERE list_id = ${} AND value = ${})",
                        2 * i + 1,
                        2 * i + 2
                    )
                })
                .collect();
            made.push(Box::leak(format!("SELECT {}", cols.join(", ")).into_boxed_str()));
        }
        made[n - 1]
    })
}

impl Facts for PgFacts {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// One statement for up to 8 probes, an EXISTS column each: cheaper than
    /// a statement per probe, and than joining an unnest of the probes.
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        let mut found = Vec::new();
        for chunk in probes.chunks(PROBES_PER_STATEMENT) {
            let args: Vec<DatumWithOid> = chunk
                .iter()
                .flat_map(|(id, value)| [(*id).into(), value.as_str().into()])
                .collect();
            let types: Vec<PgBuiltInOids> = chunk.iter().flat_map(|_| [INT8, TEXT]).collect();
            let hits = columns::<bool>(list_probe_sql(chunk.len()), &types, &args);
            found.extend(
                chunk
                    .iter()
                    .zip(hits)
                    .filter(|(_, hit)| *hit == Some(true))
                    .map(|((id, _), _)| *id),
            );
        }
        found
    }

    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        one::<i64>(
            "SELECT value FROM iclear.counter WHERE name = $1 AND key = $2",
            &[TEXT, TEXT],
            &[name.into(), key.into()],
        )
        .unwrap_or(0)
    }

    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        self.source_created_at
    }

    fn random_0_1000(&mut self) -> i64 {
        rand::random_range(0..=1000)
    }

    /// Caps count in UTC days and months. Each usage row is locked before it
    /// is compared (always in the order daily, monthly, source, so sessions
    /// cannot deadlock), so concurrent sessions queue here and a cap is never
    /// exceeded; nothing is counted unless every cap has room.
    fn take_rule_cap(&mut self, rule: &Rule, source_id: Option<i64>) -> bool {
        let mut caps = period_caps(&rule.caps);
        if let Some(l) = rule.caps.per_source {
            // A lead without a source counts against the "no source" bucket.
            caps.push((
                "source",
                source_id.map(|s| s.to_string()).unwrap_or_default(),
                l,
            ));
        }
        if take_usage(&RULE_USAGE, rule.id, &caps).is_some() {
            return false;
        }
        count_usage(&RULE_USAGE, rule.id, &caps);
        true
    }

    fn roll_percent(&mut self) -> u32 {
        rand::random_range(0..100)
    }

    fn cached(&mut self, service: &str, key: &str, max_age_days: Option<u32>) -> Option<Value> {
        one::<JsonB>(
            "SELECT response FROM iclear.lookup_cache
              WHERE service = $1 AND lookup_key = $2
                AND ($3 IS NULL OR fetched_at > now() - make_interval(days => $3::int))",
            &[TEXT, TEXT, INT8],
            &[
                service.into(),
                key.into(),
                max_age_days.map(i64::from).into(),
            ],
        )
        .map(|j| j.0)
    }

    /// Per-rule caps first (locked in a fixed order, as for rule caps), then
    /// the service's global caps (locked by id). A lead that takes a slot
    /// holds those rows until it commits, so concurrent sessions queue and a
    /// cap never overshoots.
    fn take_service_cap(&mut self, rule: &GlobalRule) -> Option<String> {
        let caps = period_caps(&rule.caps);
        if let Some((period, limit)) = take_usage(&GLOBAL_RULE_USAGE, rule.id, &caps) {
            return Some(format!("global rule {} {period} cap of {limit}", rule.id));
        }
        if let Some(f) = take_global_caps(&rule.service) {
            return Some(f);
        }
        count_usage(&GLOBAL_RULE_USAGE, rule.id, &caps);
        None
    }

    fn call_service(&mut self, call: &ServiceCall) -> CallResult {
        use crate::remote::{run_all, OwnedCall, Work};
        run_all(vec![Work::Lookup(Box::new(OwnedCall::of(call)))], 1)
            .pop()
            .expect("one call, one result")
    }

    fn enqueue(&mut self, job: &JobSpec) -> i64 {
        let mut payload = job.payload.clone();
        payload["global_rule_id"] = job.global_rule_id.into();
        one::<i64>(
            "INSERT INTO iclear.job (kind, product_id, lead_id, payload)
             VALUES ('lookup', $1, $2, $3::jsonb) RETURNING id",
            &[INT8, TEXT, TEXT],
            &[
                job.product_id.into(),
                job.lead_id.as_str().into(),
                payload.to_string().into(),
            ],
        )
        .unwrap_or_else(|| pgrx::error!("iclear: the async job was not queued"))
    }

    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String> {
        super::verification::signature_recorded_at(signature)
    }

    fn sms_verified(&mut self, product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
        super::verification::sms_verified(product, phone)
    }

    fn start_sms_verification(
        &mut self,
        product: &str,
        phone: &str,
        lead_id: &str,
    ) -> Result<Option<i64>, String> {
        super::verification::start_sms(product, phone, lead_id)
    }
}

/// The service's global caps (`global_cap`): locked by id, all checked, then
/// all counted. Returns the full caps (nothing counted), or None when one
/// more use fits. Used by lookups and by SMS messages.
pub fn take_global_caps(service: &str) -> Option<String> {
    let full: Option<String> = one(
        "WITH locked AS MATERIALIZED (
            SELECT period, cap_limit, current_value, period_start,
                   iclear.cap_period_start(period, start_day) AS ps
              FROM iclear.global_cap WHERE service = $1 ORDER BY id FOR UPDATE)
         SELECT string_agg(period || ' cap of ' || cap_limit, ', ') FROM locked
          WHERE CASE WHEN period_start = ps THEN current_value ELSE 0 END >= cap_limit",
        &[TEXT],
        &[service.into()],
    );
    if let Some(f) = full {
        return Some(format!("{service} global {f}"));
    }
    exec(
        "UPDATE iclear.global_cap
            SET current_value = CASE WHEN period_start = iclear.cap_period_start(period, start_day)
                                     THEN current_value + 1 ELSE 1 END,
                period_start = iclear.cap_period_start(period, start_day)
          WHERE service = $1",
        &[TEXT],
        &[service.into()],
    );
    None
}

/// The daily and monthly caps as (period, UTC period key, limit).
fn period_caps(caps: &RuleCaps) -> Vec<(&'static str, String, i64)> {
    let now = Utc::now();
    let mut out = Vec::new();
    if let Some(l) = caps.daily {
        out.push(("daily", now.format("%Y-%m-%d").to_string(), l));
    }
    if let Some(l) = caps.monthly {
        out.push(("monthly", now.format("%Y-%m").to_string(), l));
    }
    out
}

/// The statements of a usage-row cap table (`rule_cap_usage`,
/// `global_rule_cap_usage`): create the period's row, lock and read it, count.
struct UsageSql {
    insert: &'static str,
    lock: &'static str,
    count: &'static str,
}

const RULE_USAGE: UsageSql = UsageSql {
    insert: "INSERT INTO iclear.rule_cap_usage (rule_id, period, period_key) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
    lock: "SELECT used FROM iclear.rule_cap_usage
            WHERE rule_id = $1 AND period = $2 AND period_key = $3 FOR UPDATE",
    count: "UPDATE iclear.rule_cap_usage SET used = used + 1
             WHERE rule_id = $1 AND period = $2 AND period_key = $3",
};

const GLOBAL_RULE_USAGE: UsageSql = UsageSql {
    insert: "INSERT INTO iclear.global_rule_cap_usage (global_rule_id, period, period_key)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    lock: "SELECT used FROM iclear.global_rule_cap_usage
            WHERE global_rule_id = $1 AND period = $2 AND period_key = $3 FOR UPDATE",
    count: "UPDATE iclear.global_rule_cap_usage SET used = used + 1
             WHERE global_rule_id = $1 AND period = $2 AND period_key = $3",
};

/// Lock each (period, key, limit) usage row in order and compare: the first
/// full cap as (period, limit), or None when all have room (nothing counted yet).
fn take_usage<'c>(
    sql: &UsageSql,
    id: i64,
    caps: &'c [(&'c str, String, i64)],
) -> Option<(&'c str, i64)> {
    for (period, key, limit) in caps {
        let args = [id.into(), (*period).into(), key.as_str().into()];
        exec(sql.insert, &[INT8, TEXT, TEXT], &args);
        let args = [id.into(), (*period).into(), key.as_str().into()];
        let used: i64 = one(sql.lock, &[INT8, TEXT, TEXT], &args).unwrap_or(0);
        if used >= *limit {
            return Some((period, *limit));
        }
    }
    None
}

/// Count one use in every locked usage row.
fn count_usage(sql: &UsageSql, id: i64, caps: &[(&str, String, i64)]) {
    for (period, key, _) in caps {
        let args = [id.into(), (*period).into(), key.as_str().into()];
        exec(sql.count, &[INT8, TEXT, TEXT], &args);
    }
}
