//! The engine's questions answered from Postgres.

use super::cap_limits::{describe, global_caps, period_caps, rule_slot_caps};
use super::caps::{self, Scope};
use super::local_time::Zone;
use super::probe::{self, text_datum, Probe, Snap};
use super::{columns, query_value, spent, INT8, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::facts::{CallResult, Facts, HistoryQuery, JobSpec, RuleSlot, ServiceCall};
use iclear_engine::global::GlobalRule;
use iclear_engine::service::verification_history::SmsRecord;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgBuiltInOids};
use pgrx::JsonB;
use serde_json::Value;
use std::collections::HashMap;

pub struct PgFacts {
    pub source_created_at: Option<DateTime<Utc>>,
    /// The product's time zone: its caps count its local days.
    pub zone: Zone,
    /// The cap slots of each global rule's latest `take_service_cap`.
    pub takes: HashMap<i64, u64>,
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

/// Which probes' lists hold their value. One statement for up to 8 probes,
/// an EXISTS column each: cheaper than a statement per probe, and than
/// joining an unnest of the probes. Reads only.
pub fn lists_containing(probes: &[(i64, String)]) -> Vec<i64> {
    if probes.is_empty() {
        return Vec::new();
    }
    if let Some(t) = probe::target(c"list_entry", c"list_entry_pkey") {
        return probe::with_snapshot(Snap::Statement, || {
            let mut p = Probe::open(&t, 2);
            let found = probes
                .iter()
                .filter(|(id, value)| {
                    p.seek(&[
                        (pg_sys::F_INT8EQ, (*id).into()),
                        (pg_sys::F_TEXTEQ, text_datum(value)),
                    ]);
                    p.next()
                })
                .map(|(id, _)| *id)
                .collect();
            p.close();
            found
        });
    }
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

/// A text datum in the current memory context, which outlives the probe.
/// The counter's committed total plus its increments, read by index as the
/// statement below reads them; None when a table cannot be probed.
fn counter_by_probe(name: &str, key: &str) -> Option<i64> {
    let total = probe::target(c"counter_total", c"counter_pkey")?;
    let deltas = probe::target(c"counter_delta", c"counter_delta_key")?;
    let keys = [
        (pg_sys::F_TEXTEQ, text_datum(name)),
        (pg_sys::F_TEXTEQ, text_datum(key)),
    ];
    // both tables as of one moment: the worker moves increments from one
    // to the other
    Some(probe::with_snapshot(Snap::Latest, || {
        let mut sum = 0i64;
        for (t, column) in [(&total, c"value"), (&deltas, c"by")] {
            let attnum = probe::column(t, column);
            let mut p = Probe::open(t, 2);
            p.seek(&keys);
            while p.next() {
                sum += p.get::<i64>(attnum).unwrap_or(0);
            }
            p.close();
        }
        sum
    }))
}

/// Wait, up to `wait`, until no other open transaction writes an increment
/// of the key (polled, as `wait_xact_lock`: no cycle of waits can form).
fn increments_settled(name: &str, key: &str, wait: std::time::Duration) {
    let Some(deltas) = probe::target(c"counter_delta", c"counter_delta_key") else {
        return;
    };
    let keys = [
        (pg_sys::F_TEXTEQ, text_datum(name)),
        (pg_sys::F_TEXTEQ, text_datum(key)),
    ];
    super::poll(wait, || {
        probe::dirty(&deltas, &keys) != probe::Found::BeingWritten
    });
}

/// The key locks a lead took past its transaction's budget are given back
/// when the lead is done with (`store::end_lead`); not while an ERROR
/// unwinds, whose abort releases them.
impl Drop for PgFacts {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            super::end_lead();
        }
    }
}

impl Facts for PgFacts {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        lists_containing(probes)
    }

    /// A counter read by a condition: its committed value and increments,
    /// read after taking the key's lock, held until this lead's transaction
    /// ends. A second lead reading the same key (a duplicate posted at the
    /// same moment) waits for the first to commit and then sees its
    /// increment. Increments themselves take no lock (`counter_delta` rows),
    /// so a hot counter never makes leads wait. The wait is bounded by
    /// `iclear.counter_lock_wait`: a multi-row transaction that reads two
    /// keys in the other order than another cannot deadlock with it.
    /// A transaction past its budget of key locks (a bulk load) gives the
    /// key back when its lead ends: its increment is then waited for as
    /// a row being written, within the same bound (`increments_settled`).
    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        let started = std::time::Instant::now();
        let wait = crate::gucs::counter_lock_wait();
        super::wait_xact_lock(super::LOCK_COUNTER, &[name, key], wait.as_millis() as u64);
        if super::bulk_writers_open() {
            increments_settled(name, key, wait.saturating_sub(started.elapsed()));
        }
        if !super::config::schema_at_least(5) {
            return query_value::<i64>(
                "SELECT value FROM iclear.counter WHERE name = $1 AND key = $2",
                &[TEXT, TEXT],
                &[name.into(), key.into()],
            )
            .unwrap_or(0);
        }
        if let Some(value) = counter_by_probe(name, key) {
            return value;
        }
        super::latest(|| {
            query_value::<i64>(
                "SELECT (coalesce((SELECT value FROM iclear.counter_total WHERE name = $1 AND key = $2), 0)
                       + coalesce((SELECT sum(by) FROM iclear.counter_delta WHERE name = $1 AND key = $2), 0))::int8",
                &[TEXT, TEXT],
                &[name.into(), key.into()],
            )
        })
        .unwrap_or(0)
    }

    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        self.source_created_at
    }

    fn history_count(&mut self, q: &HistoryQuery) -> i64 {
        if !super::config::schema_at_least(6) {
            return 0;
        }
        super::history::count(q)
    }

    fn random_0_1000(&mut self) -> i64 {
        rand::random_range(0..=1000)
    }

    /// A slot of each of the rule's caps (daily, monthly, per source), or
    /// none: see `caps.rs`. Never waits for another lead.
    fn take_rule_cap(&mut self, slot: &RuleSlot) -> bool {
        let caps = rule_slot_caps(slot, Utc::now(), self.zone);
        caps::take(&caps).0.is_none()
    }

    fn local_date(&self, _time_zone: &str) -> String {
        // (the zone was resolved from the same name when the facts were made)
        self.zone.date_of(Utc::now()).format("%Y-%m-%d").to_string()
    }

    fn roll_percent(&mut self) -> u32 {
        rand::random_range(0..100)
    }

    fn cached(&mut self, service: &str, key: &str, max_age_days: Option<u32>) -> Option<Value> {
        query_value::<JsonB>(
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

    /// A slot of the global rule's own caps and of its service's global
    /// caps, or none. The slots are remembered for `call_service`: a request
    /// that is sent keeps them counted even if the lead rolls back.
    fn take_service_cap(&mut self, rule: &GlobalRule, also: Option<&RuleSlot>) -> Option<String> {
        let now = Utc::now();
        let mut caps = period_caps(Scope::GlobalRule, rule.id, &rule.caps, now, self.zone);
        caps.extend(global_caps(&rule.service, now));
        if let Some(slot) = also {
            caps.extend(rule_slot_caps(slot, now, self.zone));
        }
        match caps::take(&caps) {
            (Some(full), _) => Some(describe(&full, &rule.service)),
            (None, take) => {
                self.takes.insert(rule.id, take);
                None
            }
        }
    }

    /// The request is recorded on disk before it is sent (`spent.rs`), with
    /// the cap slots it pays for, and no lock is held while it runs.
    fn call_service(&mut self, call: &ServiceCall) -> CallResult {
        use crate::remote::{run_all, OwnedCall, Work};
        let paid = self
            .takes
            .remove(&call.rule.id)
            .map(caps::mark_sent)
            .unwrap_or_default();
        // (a 0.4.0 schema, until ALTER EXTENSION UPDATE, has no sent_mark)
        let spent = super::config::schema_at_least(5).then(|| {
            spent::before_send(call, &paid)
                .unwrap_or_else(|e| crate::errors::Error::Internal(e).raise())
        });
        let result = run_all(vec![Work::Lookup(Box::new(OwnedCall::of(call)))], 1)
            .pop()
            .expect("one call, one result");
        match (&result, spent) {
            (CallResult::Response { data, request }, Some(s)) => s.answered(request, Some(data)),
            (CallResult::NoResponse { request, .. }, Some(s)) => s.answered(request, None),
            (_, None) => {}
        }
        result
    }

    fn enqueue(&mut self, job: &JobSpec) -> i64 {
        let mut payload = job.payload.clone();
        payload["global_rule_id"] = job.global_rule_id.into();
        query_value::<i64>(
            "INSERT INTO iclear.job (kind, product_id, lead_id, payload)
             VALUES ('lookup', $1, $2, $3::jsonb) RETURNING id",
            &[INT8, TEXT, TEXT],
            &[
                job.product_id.into(),
                job.lead_id.as_str().into(),
                payload.to_string().into(),
            ],
        )
        .unwrap_or_else(|| {
            crate::errors::Error::Internal("iclear: the async job was not queued".into()).raise()
        })
    }

    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String> {
        super::verification::signature_recorded_at(signature)
    }

    fn sms_verified(&mut self, product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
        super::verification::sms_verified(product, phone)
    }

    fn sms_code_digest(&mut self, product: &str, phone: &str, code: &str) -> String {
        super::verification::sms_code_digest(product, phone, code)
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
