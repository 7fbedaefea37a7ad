//! Which caps apply: a service's global caps (`global_cap`), a rule's or
//! global rule's daily and monthly caps, for the period containing a time,
//! and how a full cap is named in the log. `caps.rs` takes their slots.

use super::caps::{self, Cap, CapKey, Period, Scope};
use super::local_time::Zone;
use super::{query_value, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::config::RuleCaps;
use iclear_engine::facts::{PerSource, RuleSlot};
use pgrx::JsonB;
use serde_json::Value;

/// A slot of the service's global caps (`global_cap`), or the full one's
/// description: used by SMS messages (lookups take theirs with their global
/// rule's in `take_service_cap`).
pub fn take_global_caps(service: &str) -> Option<String> {
    let caps = global_caps(service, Utc::now());
    caps::take(&caps).0.map(|full| describe(&full, service))
}

/// The service's global caps for the period containing `now`, each in its
/// own time zone (the vendor's billing day).
pub fn global_caps(service: &str, now: DateTime<Utc>) -> Vec<Cap> {
    use super::config::HubRole;
    // A store spends what the hub granted it for the period; a hub's own
    // leads what the stores do not hold (docs/guide/hub.md "Shared caps").
    let role = super::config::hub_role();
    let sql = if role != HubRole::Standalone {
        "SELECT jsonb_agg(jsonb_build_array(c.id, c.period, c.start_day, c.cap_limit, c.time_zone,
                   (SELECT jsonb_object_agg(g.bucket, g.granted) FROM iclear.cap_grant g WHERE g.global_cap_id = c.id),
                   (SELECT jsonb_object_agg(l.bucket, l.held)
                      FROM (SELECT bucket, sum(granted) AS held FROM iclear.cap_lease
                             WHERE global_cap_id = c.id GROUP BY bucket) l)) ORDER BY c.id)
           FROM iclear.global_cap c WHERE c.service = $1"
    } else if super::config::schema_at_least(6) {
        "SELECT jsonb_agg(jsonb_build_array(id, period, start_day, cap_limit, time_zone) ORDER BY id)
           FROM iclear.global_cap WHERE service = $1"
    } else {
        "SELECT jsonb_agg(jsonb_build_array(id, period, start_day, cap_limit) ORDER BY id)
           FROM iclear.global_cap WHERE service = $1"
    };
    let rows: Option<JsonB> = query_value(sql, &[TEXT], &[service.into()]);
    let Some(JsonB(Value::Array(rows))) = rows else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            let period = match r[1].as_str()? {
                "daily" => Period::Daily,
                _ => Period::Monthly,
            };
            let zone = Zone::or_utc(r[4].as_str().unwrap_or("UTC"));
            let (bucket, ends) = caps::period_of(period, r[2].as_u64()? as u32, now, zone);
            let key = CapKey {
                scope: Scope::Global,
                period,
                ref_id: r[0].as_i64()?,
                bucket,
            };
            let of = |i: usize| {
                r[i].get(key.bucket_text())
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            };
            let limit = match role {
                HubRole::Store(_) => of(5),
                HubRole::Hub => (r[3].as_i64()? - of(6)).max(0),
                HubRole::Standalone => r[3].as_i64()?,
            };
            Some(Cap { key, limit, ends })
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
        Scope::Phone => match cap.key.period {
            Period::SmsSent => {
                format!("iclear.sms_max_sends ({limit} codes per phone in iclear.sms_window)")
            }
            _ => format!(
                "iclear.sms_max_failed ({limit} wrong codes per phone in iclear.sms_window)"
            ),
        },
    }
}

/// The cap of SMS codes sent to (`period` SmsSent) or wrong codes tried
/// for (SmsFailed) `phone` of `product` in the current window, keyed by a
/// digest of both (the phone itself is not kept in `cap_use`).
pub fn phone_cap(product: &str, phone: &str, period: Period) -> Cap {
    let digest: String = query_value(
        "SELECT iclear.sms_code_digest($1, $2, '')",
        &[TEXT, TEXT],
        &[product.into(), phone.into()],
    )
    .unwrap_or_default();
    let ref_id = i64::from_str_radix(digest.get(..15).unwrap_or("0"), 16).unwrap_or(0);
    let window = crate::gucs::sms_window_s().max(1);
    let bucket = Utc::now().timestamp() / window;
    let limit = match period {
        Period::SmsSent => crate::gucs::sms_max_sends(),
        _ => crate::gucs::sms_max_failed(),
    };
    Cap {
        key: CapKey {
            scope: Scope::Phone,
            period,
            ref_id,
            bucket,
        },
        limit,
        ends: (bucket + 1) * window,
    }
}

/// A rule's or global rule's daily and monthly caps (the product's local
/// days, calendar months) for the period containing `now`.
pub fn period_caps(
    scope: Scope,
    id: i64,
    caps: &RuleCaps,
    now: DateTime<Utc>,
    zone: Zone,
) -> Vec<Cap> {
    [(Period::Daily, caps.daily), (Period::Monthly, caps.monthly)]
        .into_iter()
        .filter_map(|(period, limit)| {
            let (bucket, ends) = caps::period_of(period, 1, now, zone);
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

/// The caps of an Advanced Rule's slot: its daily and monthly caps, and its
/// per-source cap in the bucket the engine chose (a source, the "no
/// source" bucket, or none when the lead's source is not counted).
pub fn rule_slot_caps(slot: &RuleSlot, now: DateTime<Utc>, zone: Zone) -> Vec<Cap> {
    let mut caps = period_caps(Scope::Rule, slot.rule_id, &slot.caps, now, zone);
    let bucket = match slot.per_source {
        PerSource::NotCounted => None,
        PerSource::Source(id) => Some(id),
        PerSource::NoSource => Some(caps::NO_SOURCE),
    };
    if let (Some(limit), Some(bucket)) = (slot.caps.per_source, bucket) {
        caps.push(Cap {
            key: CapKey {
                scope: Scope::Rule,
                period: Period::Source,
                ref_id: slot.rule_id,
                bucket,
            },
            limit,
            ends: 0,
        });
    }
    caps
}
