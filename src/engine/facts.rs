//! What the engine asks of the world while it decides. The store answers from
//! Postgres; unit tests answer from memory. Keeping these behind a trait is
//! what lets the engine decide without touching SPI.

use crate::config::Rule;
use chrono::{DateTime, Utc};

pub trait Facts {
    fn now(&self) -> DateTime<Utc>;
    /// Which of these (list id, normalised value) pairs are on their list?
    /// Returns the ids of the lists that hold their value.
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64>;
    /// Current value of a counter (0 when absent).
    fn counter_value(&mut self, name: &str, key: &str) -> i64;
    /// When the lead's source was first seen (None when the lead has no source).
    fn source_created_at(&mut self) -> Option<DateTime<Utc>>;
    /// A uniform integer 0..=1000 ("Generate Random Number").
    fn random_0_1000(&mut self) -> i64;
    /// Count one run of a capped rule, atomically; false when a cap is full
    /// (then nothing is counted).
    fn take_rule_cap(&mut self, rule: &Rule, source_id: Option<i64>) -> bool;
}

/// List values are compared trimmed and lowercased (the store normalises
/// `list_entry.value` the same way on insert).
pub fn normalize_list_value(s: &str) -> String {
    s.trim().to_lowercase()
}
