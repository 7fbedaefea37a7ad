//! The engine's questions answered from Postgres.

use super::{exec, one, INT8, TEXT};
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

    /// One scalar probe per list: statements with array parameters get a
    /// custom plan (re-planned on every call), scalar ones a cached generic plan.
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        probes
            .iter()
            .filter(|(id, value)| {
                one::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM iclear.list_entry WHERE list_id = $1 AND value = $2)",
                    &[INT8, TEXT],
                    &[(*id).into(), value.as_str().into()],
                )
                .unwrap_or(false)
            })
            .map(|(id, _)| *id)
            .collect()
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
        let now = Utc::now();
        let mut caps: Vec<(&str, String, i64)> = Vec::new();
        if let Some(l) = rule.caps.daily {
            caps.push(("daily", now.format("%Y-%m-%d").to_string(), l));
        }
        if let Some(l) = rule.caps.monthly {
            caps.push(("monthly", now.format("%Y-%m").to_string(), l));
        }
        if let Some(l) = rule.caps.per_source {
            // A lead without a source counts against the "no source" bucket.
            caps.push((
                "source",
                source_id.map(|s| s.to_string()).unwrap_or_default(),
                l,
            ));
        }
        for (period, key, limit) in &caps {
            exec(
                "INSERT INTO iclear.rule_cap_usage (rule_id, period, period_key) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[INT8, TEXT, TEXT],
                &[rule.id.into(), (*period).into(), key.as_str().into()],
            );
            let used: i64 = one(
                "SELECT used FROM iclear.rule_cap_usage
                  WHERE rule_id = $1 AND period = $2 AND period_key = $3 FOR UPDATE",
                &[INT8, TEXT, TEXT],
                &[rule.id.into(), (*period).into(), key.as_str().into()],
            )
            .unwrap_or(0);
            if used >= *limit {
                return false;
            }
        }
        for (period, key, _) in &caps {
            exec(
                "UPDATE iclear.rule_cap_usage SET used = used + 1
                  WHERE rule_id = $1 AND period = $2 AND period_key = $3",
                &[INT8, TEXT, TEXT],
                &[rule.id.into(), (*period).into(), key.as_str().into()],
            );
        }
        true
    }
}
