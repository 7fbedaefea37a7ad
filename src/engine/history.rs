//! Duplicate and velocity checks over the lead history (condition category
//! `history`): what a condition asks (which fields, how many earlier leads,
//! within how long, of which products and statuses), and how a lead's
//! values become the key the history is kept under. The store keeps the
//! history (keyed digests of these values) and counts it; the engine only
//! asks.

use crate::envelope::value_text;
use crate::error::ConfigError;
use crate::keys::{normalize_list_value, normalize_phone};
use serde_json::{Map, Value};

/// The longest window a condition may ask for: 400 days (the history is
/// kept for the longest window any condition asks for, and no longer).
pub const MAX_SECONDS: i64 = 400 * 86_400;
/// The most fields one key may join.
pub const MAX_FIELDS: usize = 5;
/// The statuses a lead may be counted with.
pub const STATUSES: &[&str] = &["accepted", "rejected", "paused"];

/// Which products' leads a condition counts.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryScope {
    /// The lead's own product (the default).
    Product,
    /// Every product of this database.
    All,
    /// The named products.
    Products(Vec<String>),
}

/// A `history` condition: `count` or more earlier leads with the same
/// normalised values of `fields` within the last `seconds`, in `scope`,
/// decided with one of `statuses`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryWindow {
    /// The fields, sorted: `email+homePhone` and `homePhone+email` are one key.
    pub fields: Vec<String>,
    pub count: i64,
    pub seconds: i64,
    pub scope: HistoryScope,
    pub statuses: Vec<String>,
}

/// The fields of a `history` parameter (`email`, `email+homePhone`),
/// sorted, or an error naming it.
pub fn key_fields(parameter: &str) -> Result<Vec<String>, ConfigError> {
    let mut fields: Vec<String> = parameter.split('+').map(|f| f.trim().to_string()).collect();
    if fields.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            "parameter",
            "must be lead fields joined by + (email, email+homePhone)",
        ));
    }
    fields.sort();
    fields.dedup();
    if fields.len() > MAX_FIELDS {
        return Err(ConfigError::new(
            "parameter",
            format!("joins more than {MAX_FIELDS} fields"),
        ));
    }
    Ok(fields)
}

/// The canonical name of a key: its sorted fields joined by `+`.
pub fn key_name(fields: &[String]) -> String {
    fields.join("+")
}

impl HistoryWindow {
    /// Parse and check a condition's value; errors name the key.
    pub fn parse(parameter: &str, value: &Value) -> Result<HistoryWindow, ConfigError> {
        let fields = key_fields(parameter)?;
        let o = value.as_object().ok_or_else(|| {
            ConfigError::new(
                "value",
                r#"must be an object: {"count": N, "seconds": S, "scope": "product", "statuses": ["accepted"]}"#,
            )
        })?;
        for k in o.keys() {
            if !["count", "seconds", "scope", "statuses"].contains(&k.as_str()) {
                return Err(ConfigError::new(
                    format!("value.{k}"),
                    "is not a key of a history condition (expected count, seconds, scope, statuses)",
                ));
            }
        }
        let int = |k: &str, lo: i64, hi: i64| -> Result<i64, ConfigError> {
            let v = o
                .get(k)
                .ok_or_else(|| ConfigError::new(format!("value.{k}"), "is required"))?;
            v.as_i64().filter(|n| (lo..=hi).contains(n)).ok_or_else(|| {
                ConfigError::new(
                    format!("value.{k}"),
                    format!("must be a whole number from {lo} to {hi}"),
                )
            })
        };
        let count = int("count", 0, 1_000_000)?;
        let seconds = int("seconds", 1, MAX_SECONDS)?;
        let scope = match o.get("scope") {
            None => HistoryScope::Product,
            Some(Value::String(s)) if s == "product" => HistoryScope::Product,
            Some(Value::String(s)) if s == "all" => HistoryScope::All,
            Some(Value::Array(a)) if !a.is_empty() => HistoryScope::Products(
                a.iter()
                    .map(|p| {
                        p.as_str()
                            .filter(|p| !p.is_empty())
                            .map(str::to_string)
                            .ok_or_else(|| {
                                ConfigError::new("value.scope", "must list product names")
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => {
                return Err(ConfigError::new(
                    "value.scope",
                    r#"must be "product", "all" or a list of product names"#,
                ))
            }
        };
        let statuses = match o.get("statuses") {
            None => vec!["accepted".to_string()],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .filter(|s| STATUSES.contains(s))
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ConfigError::new(
                                "value.statuses",
                                format!("must list statuses of: {}", STATUSES.join(", ")),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::new(
                    "value.statuses",
                    format!("must list statuses of: {}", STATUSES.join(", ")),
                ))
            }
        };
        Ok(HistoryWindow {
            fields,
            count,
            seconds,
            scope,
            statuses,
        })
    }
}

/// A value as the history compares it: a phone field (its name holds
/// "phone") by its digits (`normalize_phone`), anything else trimmed and
/// lowercased, as list values are. None: no value.
pub fn normalize(field: &str, value: &Value) -> Option<String> {
    let text = value_text(value)?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if crate::keys::is_phone_field(field) {
        return normalize_phone(text);
    }
    Some(normalize_list_value(text))
}

/// The lead's normalised values of `fields`, in their order; None when it
/// lacks one (a lead without an email is no one's duplicate by email).
pub fn values_of(fields: &[String], lead: &Map<String, Value>) -> Option<Vec<String>> {
    fields
        .iter()
        .map(|f| lead.get(f).and_then(|v| normalize(f, v)))
        .collect()
}

/// The keyed digest the history keeps a key's values under: SHA-256 of
/// the install's secret, the key's name and the values, its first 8 bytes
/// as a bigint. Without the secret a digest cannot be matched to an email or a
/// phone by trying candidates (SECURITY.md "The lead history").
pub fn digest(secret: &[u8], key: &str, values: &[String]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(secret);
    h.update(b"history\x1e");
    h.update(key.as_bytes());
    for v in values {
        h.update(b"\x1f");
        h.update(v.as_bytes());
    }
    // 64 bits: a bigint key is a third of a 32-digit text one in the
    // history's index (WAL and pages per lead); under the install's secret
    // no one can aim at a collision, and a chance one, with 10^8 leads
    // kept, comes once in 10^11 reads
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_window_is_checked_key_by_key() {
        let w = HistoryWindow::parse(
            "homePhone + email",
            &json!({"count": 1, "seconds": 2592000, "statuses": ["accepted"]}),
        )
        .unwrap();
        assert_eq!(w.fields, vec!["email", "homePhone"]);
        assert_eq!(w.scope, HistoryScope::Product);
        let bad = |v: Value, key: &str| {
            let e = HistoryWindow::parse("email", &v).unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad(json!({"seconds": 60}), "value.count");
        bad(json!({"count": 1}), "value.seconds");
        bad(json!({"count": 1, "seconds": 0}), "value.seconds");
        bad(
            json!({"count": 1, "seconds": MAX_SECONDS + 1}),
            "value.seconds",
        );
        bad(
            json!({"count": 1, "seconds": 60, "scope": "galaxy"}),
            "value.scope",
        );
        bad(
            json!({"count": 1, "seconds": 60, "statuses": ["sold"]}),
            "value.statuses",
        );
        bad(
            json!({"count": 1, "seconds": 60, "window": 3}),
            "value.window",
        );
        bad(json!(5), "value");
        assert!(key_fields("email++phone").is_err());
        assert!(key_fields("a+b+c+d+e+f").is_err());
        let all = HistoryWindow::parse(
            "userIp",
            &json!({"count": 5, "seconds": 300, "scope": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(
            all.scope,
            HistoryScope::Products(vec!["a".into(), "b".into()])
        );
        assert_eq!(all.statuses, vec!["accepted"]);
    }

    #[test]
    fn values_are_normalised_as_the_history_keeps_them() {
        let lead =
            json!({"email": " Ann@Example.COM ", "homePhone": "+1 (555) 010-0199", "zip": ""});
        let lead = lead.as_object().unwrap();
        assert_eq!(
            values_of(&["email".into(), "homePhone".into()], lead),
            Some(vec!["ann@example.com".into(), "5550100199".into()])
        );
        assert_eq!(values_of(&["zip".into()], lead), None, "empty is no value");
        assert_eq!(values_of(&["nope".into()], lead), None);
        // keyed: another install's secret makes another digest
        let v = vec!["ann@example.com".to_string()];
        assert_eq!(digest(b"k1", "email", &v), digest(b"k1", "email", &v));
        assert_ne!(digest(b"k1", "email", &v), digest(b"k2", "email", &v));
        assert_ne!(digest(b"k1", "email", &v), digest(b"k1", "userIp", &v));
    }
}
