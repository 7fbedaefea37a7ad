//! The attached-table path (docs/architecture.md "Attaching"): a row becomes a lead envelope, and the
//! decision becomes a patch the trigger applies to NEW.

use crate::lead_id::new_lead_id;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `rejected` and `on_error` are validated here and read by the trigger
/// (sql/finalize.sql, iclear.lead_trigger).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AttachOptions {
    #[serde(default)]
    pub id_column: Option<String>,
    #[serde(default)]
    pub fields_column: Option<String>,
    #[serde(default)]
    pub params_column: Option<String>,
    #[serde(default)]
    pub rejected: Option<Rejected>,
    #[serde(default)]
    pub on_error: Option<OnError>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Rejected {
    Keep,
    Skip,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Store,
    Raise,
}

impl AttachOptions {
    pub fn parse(v: &Value) -> Result<AttachOptions, String> {
        let o: AttachOptions =
            serde_json::from_value(v.clone()).map_err(|e| format!("iclear.attach options: {e}"))?;
        if o.fields_column.is_some() && o.fields_column == o.params_column {
            return Err(
                "iclear.attach options: fields_column and params_column must differ".into(),
            );
        }
        Ok(o)
    }

    pub fn id_column(&self) -> &str {
        self.id_column.as_deref().unwrap_or("id")
    }
}

/// Columns that map to envelope keys rather than lead body fields.
const ENVELOPE_COLUMNS: &[&str] = &[
    "publisher_id",
    "channel_id",
    "source_id",
    "stage",
    "method",
    "silent",
    "campaigns_remaining",
    "source_created_at",
];
/// Columns that receive the outcome.
const OUTCOME_COLUMNS: &[&str] = &["iclear_status", "iclear_decision"];

/// Build the envelope for `row` (the row as `to_jsonb(NEW)`).
pub fn envelope(product: &str, opts: &AttachOptions, row: &Map<String, Value>) -> Value {
    let skip = |k: &str| {
        k == opts.id_column()
            || Some(k) == opts.fields_column.as_deref()
            || Some(k) == opts.params_column.as_deref()
            || ENVELOPE_COLUMNS.contains(&k)
            || OUTCOME_COLUMNS.contains(&k)
    };
    let mut fields = match opts.fields_column.as_deref().and_then(|c| row.get(c)) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    // Scalar columns are lead body fields and win over the jsonb body; null
    // columns are absent fields; other jsonb/array columns are not lead data.
    for (k, v) in row {
        if !skip(k) && !v.is_null() && !v.is_object() && !v.is_array() {
            fields.insert(k.clone(), v.clone());
        }
    }
    let mut env = json!({"product": product, "fields": fields});
    if let Some(id) = row.get(opts.id_column()).filter(|v| !v.is_null()) {
        env["lead_id"] = id.clone();
    }
    if let Some(p) = opts
        .params_column
        .as_deref()
        .and_then(|c| row.get(c))
        .filter(|v| !v.is_null())
    {
        env["params"] = p.clone();
    }
    for k in ENVELOPE_COLUMNS {
        if let Some(v) = row.get(*k).filter(|v| !v.is_null()) {
            env[*k] = v.clone();
        }
    }
    env
}

/// The patch for NEW: changed fields back into their columns (or into the
/// jsonb body), the params column, and the outcome columns.
pub fn patch(
    opts: &AttachOptions,
    row: &Map<String, Value>,
    env: &Value,
    decision: &Value,
) -> Value {
    let mut patch = Map::new();
    let no_fields = Map::new();
    let before = env["fields"].as_object().unwrap_or(&no_fields);
    let mut body = match opts.fields_column.as_deref().and_then(|c| row.get(c)) {
        Some(Value::Object(m)) => Some(m.clone()),
        _ => None,
    };
    let mut body_changed = false;
    if let Some(after) = decision["fields"].as_object() {
        for (k, v) in after {
            if before.get(k) == Some(v) {
                continue;
            }
            if row.contains_key(k) && !OUTCOME_COLUMNS.contains(&k.as_str()) {
                patch.insert(k.clone(), v.clone());
            } else if opts.fields_column.is_some() {
                body.get_or_insert_with(Map::new)
                    .insert(k.clone(), v.clone());
                body_changed = true;
            }
        }
    }
    if let (true, Some(c), Some(b)) = (body_changed, &opts.fields_column, body) {
        patch.insert(c.clone(), Value::Object(b));
    }
    if let Some(c) = &opts.params_column {
        let params_before = env.get("params");
        let unchanged = match params_before {
            Some(p) => decision["params"] == *p,
            None => decision["params"].as_object().is_some_and(Map::is_empty),
        };
        if !unchanged {
            patch.insert(c.clone(), decision["params"].clone());
        }
    }
    patch.insert("iclear_status".into(), decision["status"].clone());
    patch.insert("iclear_decision".into(), outcome(decision));
    Value::Object(patch)
}

/// What a row's `iclear_decision` column gets: the decision without its
/// trace (often most of its size) and without fields and params (written
/// back into the row's columns); iclear.decision keeps the whole decision.
pub fn outcome(decision: &Value) -> Value {
    Value::Object(
        decision
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "trace" | "fields" | "params"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The decision recorded for a row whose processing failed.
pub fn error_decision(
    product: &str,
    opts: &AttachOptions,
    row: &Map<String, Value>,
    message: &str,
) -> (String, Value, Value) {
    let lead_id = match row.get(opts.id_column()) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => new_lead_id(),
    };
    let env = envelope(product, opts, row);
    let decision = iclear_engine::pipeline::error_decision(
        &lead_id,
        product,
        row.get("stage").and_then(Value::as_str).unwrap_or("post"),
        message,
        env["fields"].clone(),
        env.get("params").cloned().unwrap_or(json!({})),
    );
    (lead_id, env, decision)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn maps_columns_and_patches_changes() {
        let opts = AttachOptions::parse(&json!({"fields_column": "body", "params_column": "tpar"}))
            .unwrap();
        let row = json!({"id": 5, "email": "A@x.com", "publisher_id": 12, "body": {"zip": "9"},
                         "tpar": {"sub": "1"}, "iclear_status": null, "meta": [1]});
        let row = row.as_object().unwrap();
        let env = envelope("p", &opts, row);
        assert_eq!(env["lead_id"], json!(5));
        assert_eq!(env["publisher_id"], json!(12));
        assert_eq!(env["fields"], json!({"zip": "9", "email": "A@x.com"}));
        assert_eq!(env["params"], json!({"sub": "1"}));
        let decision = json!({"status": "accepted", "fields": {"zip": "9", "email": "a@x.com", "new": "n"},
                              "params": {"sub": "2"}});
        let p = patch(&opts, row, &env, &decision);
        assert_eq!(p["email"], json!("a@x.com"));
        assert_eq!(p["body"], json!({"zip": "9", "new": "n"}));
        assert_eq!(p["tpar"], json!({"sub": "2"}));
        assert_eq!(p["iclear_status"], json!("accepted"));
        assert_eq!(
            p["iclear_decision"],
            json!({"status": "accepted"}),
            "no fields, params or trace"
        );
    }

    #[test]
    fn options_are_strict() {
        assert!(AttachOptions::parse(&json!({"id_col": "x"}))
            .unwrap_err()
            .contains("id_col"));
        assert!(AttachOptions::parse(&json!({"rejected": "drop"})).is_err());
        assert!(
            AttachOptions::parse(&json!({"fields_column": "a", "params_column": "a"})).is_err()
        );
    }
}
