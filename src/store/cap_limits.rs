//! Which caps apply: a service's global caps (`global_cap`), a rule's or
//! global rule's daily and monthly caps, for the period containing a time,
//! and how a full cap is named in the log. `caps.rs` takes their slots.

use super::caps::{self, Cap, CapKey, Period, Scope};
use super::{query_value, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::config::RuleCaps;
use pgrx::JsonB;
use serde_json::Value;

/// A slot of the service's global caps (`global_cap`), or the full one's
/// description: used by SMS messages (lookups take theirs with their global
/// rule's in `take_service_cap`).
pub fn take_global_caps(service: &str) -> Option<String> {
    let caps = global_caps(service, Utc::now());
    caps::take(&caps).0.map(|full| describe(&full, service))
}

/// The service's global caps for the period containing `now`.
pub fn global_caps(service: &str, now: DateTime<Utc>) -> Vec<Cap> {
    let rows: Option<JsonB> = query_value(
        "SELECT jsonb_agg(jsonb_build_array(id, period, start_day, cap_limit) ORDER BY id)
           FROM iclear.global_cap WHERE service = $1",
        &[TEXT],
        &[service.into()],
    );
    let Some(JsonB(Value::Array(rows))) = rows else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            let period = match r[1].as_str()? {
                "daily" => Period::Daily,
                _ => Period::Monthly,
            };
            let (bucket, ends) = caps::period_of(period, r[2].as_u64()? as u32, now);
            Some(Cap {
                key: CapKey {
                    scope: Scope::Global,
                    period,
                    ref_id: r[0].as_i64()?,
                    bucket,
                },
                limit: r[3].as_i64()?,
                ends,
            })
        })
        .collect()
}

/// How a full cap is named in the log (`detail.cap`).
pub fn describe(cap: &Cap, service: &str) -> String {
    let (period, limit) = (cap.key.period.name(), cap.limit);
    match cap.key.scope {
        Scope::Global => format!("{service} global {period} cap of {limit}"),
        Scope::GlobalRule => format!("global rule {} {period} cap of {limit}", cap.key.ref_id),
        Scope::Rule => format!("rule {} {period} cap of {limit}", cap.key.ref_id),
    }
}

/// A rule's or global rule's daily and monthly caps (UTC days, calendar
/// months) for the period containing `now`.
pub fn period_caps(scope: Scope, id: i64, caps: &RuleCaps, now: DateTime<Utc>) -> Vec<Cap> {
    [(Period::Daily, caps.daily), (Period::Monthly, caps.monthly)]
        .into_iter()
        .filter_map(|(period, limit)| {
            let (bucket, ends) = caps::period_of(period, 1, now);
            Some(Cap {
                key: CapKey {
                    scope,
                    period,
                    ref_id: id,
                    bucket,
                },
                limit: limit?,
                ends,
            })
        })
        .collect()
}
