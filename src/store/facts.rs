//! The engine's questions answered from Postgres.

use super::{exec, one};
use chrono::{DateTime, Utc};
use iclear_engine::config::Rule;
use iclear_engine::facts::Facts;

pub struct PgFacts {
    pub source_created_at: Option<DateTime<Utc>>,
}

impl Facts for PgFacts {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn list_contains(&mut self, list_id: i64, value: &str) -> bool {
        one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM iclear.list_entry WHERE list_id = $1 AND value = $2)",
            &[list_id.into(), value.into()],
        )
        .unwrap_or(false)
    }

    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        one::<i64>(
            "SELECT value FROM iclear.counter WHERE name = $1 AND key = $2",
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

    /// Caps count in UTC days and months. The usage rows are locked before
    /// they are compared, so concurrent sessions queue here and a cap is
    /// never exceeded; nothing is counted unless every cap has room.
    fn take_rule_cap(&mut self, rule: &Rule, source_id: Option<i64>) -> bool {
        let now = Utc::now();
        let mut periods: Vec<String> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut limits: Vec<i64> = Vec::new();
        let mut add = |p: &str, k: String, l: i64| {
            periods.push(p.into());
            keys.push(k);
            limits.push(l);
        };
        if let Some(l) = rule.caps.daily {
            add("daily", now.format("%Y-%m-%d").to_string(), l);
        }
        if let Some(l) = rule.caps.monthly {
            add("monthly", now.format("%Y-%m").to_string(), l);
        }
        if let Some(l) = rule.caps.per_source {
            // A lead without a source counts against the "no source" bucket.
            add(
                "source",
                source_id.map(|s| s.to_string()).unwrap_or_default(),
                l,
            );
        }
        exec(
            "INSERT INTO iclear.rule_cap_usage (rule_id, period, period_key)
             SELECT $1, p, k FROM unnest($2::text[], $3::text[]) AS t(p, k)
             ON CONFLICT DO NOTHING",
            &[rule.id.into(), periods.clone().into(), keys.clone().into()],
        );
        let room: bool = one(
            "WITH locked AS (
               SELECT u.period, u.used FROM iclear.rule_cap_usage u
                WHERE u.rule_id = $1 AND (u.period, u.period_key) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                ORDER BY u.period FOR UPDATE)
             SELECT coalesce(bool_and(locked.used < l.lim), false)
               FROM locked JOIN unnest($2::text[], $4::bigint[]) AS l(p, lim) ON l.p = locked.period",
            &[rule.id.into(), periods.clone().into(), keys.clone().into(), limits.into()],
        )
        .unwrap_or(false);
        if room {
            exec(
                "UPDATE iclear.rule_cap_usage SET used = used + 1
                  WHERE rule_id = $1 AND (period, period_key) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
                &[rule.id.into(), periods.into(), keys.into()],
            );
        }
        room
    }
}
