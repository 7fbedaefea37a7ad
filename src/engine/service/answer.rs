//! Reading a vendor's answer leniently: vendors send numbers as strings and
//! flags as "true", 1 or "yes", and a missing key is "not known", never a
//! pass or a fail.

use crate::envelope::value_text;
use serde_json::Value;

pub(super) fn num(v: &Value, k: &str) -> Option<i64> {
    let x = v.get(k)?;
    x.as_i64()
        .or_else(|| x.as_f64().map(|f| f.round() as i64))
        .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
}

pub(super) fn flag(v: &Value, k: &str) -> Option<bool> {
    match v.get(k)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

pub(super) fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(value_text)
}

/// The answer's value when it is one of `list` (case-insensitive).
pub(super) fn one_of(list: &[String], v: Option<String>) -> Option<String> {
    let v = v?;
    list.iter()
        .any(|x| x.eq_ignore_ascii_case(v.trim()))
        .then_some(v)
}
