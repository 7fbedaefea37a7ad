//! The lead envelope (docs/contract.md): parsed strictly, so that a typo or a wrong
//! type is an error naming the key rather than a silent default.

use crate::error::InputError;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Ping,
    Post,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ping => "ping",
            Stage::Post => "post",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Form,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Form => "FORM",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s.to_ascii_uppercase().as_str() {
            "POST" => Some(Method::Post),
            "FORM" => Some(Method::Form),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub product: String,
    pub lead_id: Option<String>,
    pub stage: Stage,
    pub silent: bool,
    pub method: Method,
    pub publisher_id: Option<i64>,
    pub channel_id: Option<i64>,
    pub source_id: Option<i64>,
    pub fields: Map<String, Value>,
    pub params: Map<String, Value>,
    pub campaigns_remaining: Option<i64>,
    /// When the lead store created the lead's source ("All New" targeting).
    pub source_created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Process a lead that already has a final decision again, rather than
    /// return that decision (a re-post is otherwise idempotent).
    pub reprocess: bool,
}

/// The limits of a lead (review finding 10). A lead past one is refused
/// with an error naming the limit, before any work is done for it, so a
/// hostile lead costs bounded memory and time.
pub mod limits {
    /// The whole envelope: its jsonb (`iclear_process`) or, for an attached
    /// row, the text of its fields and params together.
    pub const LEAD_BYTES: usize = 1 << 20;
    /// Keys of `fields`, and of `params`, each.
    pub const FIELDS: usize = 1_000;
    /// One field or param value, as text; and one key.
    pub const VALUE_BYTES: usize = 64 << 10;
    pub const KEY_BYTES: usize = 256;
    /// `product` and `lead_id`.
    pub const ID_BYTES: usize = 256;
}

pub(crate) const KEYS: &[&str] = &[
    "product",
    "lead_id",
    "stage",
    "silent",
    "method",
    "publisher_id",
    "channel_id",
    "source_id",
    "fields",
    "params",
    "campaigns_remaining",
    "source_created_at",
    "reprocess",
];

impl Envelope {
    /// Parse and validate a lead envelope.
    pub fn parse(v: &Value) -> Result<Envelope, InputError> {
        let obj = v
            .as_object()
            .ok_or_else(|| InputError::new("lead", "must be a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(InputError::new(
                k.clone(),
                format!(
                    "is not a lead envelope key (expected one of: {})",
                    KEYS.join(", ")
                ),
            ));
        }
        let product = match obj.get("product") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(InputError::new("product", "is required"))
            }
            Some(_) => return Err(InputError::new("product", "must be a string")),
        };
        let lead_id = match obj.get("lead_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(InputError::new("lead_id", "must not be empty"))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Some(_) => return Err(InputError::new("lead_id", "must be a string or an integer")),
        };
        let stage = match obj.get("stage") {
            None | Some(Value::Null) => Stage::Post,
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "ping" => Stage::Ping,
                "post" => Stage::Post,
                _ => return Err(InputError::new("stage", "must be \"ping\" or \"post\"")),
            },
            Some(_) => return Err(InputError::new("stage", "must be \"ping\" or \"post\"")),
        };
        let silent = match obj.get("silent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(InputError::new("silent", "must be a boolean")),
        };
        let reprocess = match obj.get("reprocess") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(InputError::new("reprocess", "must be a boolean")),
        };
        let method = match obj.get("method") {
            None | Some(Value::Null) => Method::Post,
            Some(Value::String(s)) => Method::parse(s)
                .ok_or_else(|| InputError::new("method", "must be \"POST\" or \"FORM\""))?,
            Some(_) => return Err(InputError::new("method", "must be \"POST\" or \"FORM\"")),
        };
        for (key, id) in [("product", Some(&product)), ("lead_id", lead_id.as_ref())] {
            if id.is_some_and(|s| s.len() > limits::ID_BYTES) {
                return Err(InputError::new(
                    key,
                    format!("is longer than the limit of {} bytes", limits::ID_BYTES),
                ));
            }
        }
        let fields = object(obj, "fields")?;
        let params = object(obj, "params")?;
        let mut total = 0;
        for (name, map) in [("fields", &fields), ("params", &params)] {
            if map.len() > limits::FIELDS {
                return Err(InputError::new(
                    name,
                    format!(
                        "has {} keys, over the limit of {}",
                        map.len(),
                        limits::FIELDS
                    ),
                ));
            }
            for (k, v) in map.iter() {
                if name == "fields" && (v.is_object() || v.is_array()) {
                    return Err(InputError::new(
                        format!("{name}.{k}"),
                        "must be a string, number, boolean or null",
                    ));
                }
                if k.len() > limits::KEY_BYTES {
                    return Err(InputError::new(
                        format!("{name}.{}...", truncated(k)),
                        format!(
                            "is a key longer than the limit of {} bytes",
                            limits::KEY_BYTES
                        ),
                    ));
                }
                let len = match v {
                    Value::String(s) => s.len(),
                    Value::Object(_) | Value::Array(_) => v.to_string().len(),
                    _ => 0,
                };
                if len > limits::VALUE_BYTES {
                    return Err(InputError::new(
                        format!("{name}.{k}"),
                        format!(
                            "is {len} bytes, over the limit of {} bytes per value",
                            limits::VALUE_BYTES
                        ),
                    ));
                }
                total += k.len() + len;
            }
        }
        if total > limits::LEAD_BYTES {
            return Err(InputError::new(
                "lead",
                format!(
                    "has {total} bytes of fields and params, over the limit of {} bytes",
                    limits::LEAD_BYTES
                ),
            ));
        }
        Ok(Envelope {
            product,
            lead_id,
            stage,
            silent,
            reprocess,
            method,
            publisher_id: id(obj, "publisher_id")?,
            channel_id: id(obj, "channel_id")?,
            source_id: id(obj, "source_id")?,
            fields,
            params,
            campaigns_remaining: match id(obj, "campaigns_remaining")? {
                Some(n) if n < 0 => {
                    return Err(InputError::new(
                        "campaigns_remaining",
                        "must not be negative",
                    ))
                }
                n => n,
            },
            source_created_at: match obj.get("source_created_at") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(
                    chrono::DateTime::parse_from_rfc3339(s.trim())
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|_| {
                            InputError::new(
                                "source_created_at",
                                "must be an RFC 3339 timestamp (2026-11-21T12:00:00Z)",
                            )
                        })?,
                ),
                Some(_) => {
                    return Err(InputError::new(
                        "source_created_at",
                        "must be an RFC 3339 timestamp (2026-11-21T12:00:00Z)",
                    ))
                }
            },
        })
    }

    /// The lead body value of `field` as text ("" when absent or null).
    pub fn field_text(&self, field: &str) -> Option<String> {
        self.fields.get(field).and_then(value_text)
    }
}

/// The first characters of a long key, for an error message.
fn truncated(k: &str) -> &str {
    let mut end = 40.min(k.len());
    while !k.is_char_boundary(end) {
        end -= 1;
    }
    &k[..end]
}

/// Text of a scalar JSON value; None for null, objects and arrays.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn object(obj: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, InputError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(InputError::new(key, "must be a JSON object")),
    }
}

fn id(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, InputError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| InputError::new(key, "must be an integer")),
        // Form posts deliver ids as text; accept digits only.
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| InputError::new(key, "must be an integer")),
        Some(_) => Err(InputError::new(key, "must be an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_full_envelope() {
        let e = Envelope::parse(&json!({
            "product": "payday_us", "lead_id": 17, "stage": "ping", "silent": true,
            "method": "form", "publisher_id": 12, "channel_id": "3", "source_id": 77,
            "fields": {"email": "a@b.com"}, "params": {"verificationCode": "1"},
            "campaigns_remaining": 0
        }))
        .unwrap();
        assert_eq!(e.lead_id.as_deref(), Some("17"));
        assert_eq!(e.stage, Stage::Ping);
        assert_eq!(e.method, Method::Form);
        assert_eq!(e.channel_id, Some(3));
        assert!(e.silent);
        assert_eq!(e.campaigns_remaining, Some(0));
        assert_eq!(e.field_text("email").as_deref(), Some("a@b.com"));
    }

    #[test]
    fn defaults_are_post_and_not_silent() {
        let e = Envelope::parse(&json!({"product": "p"})).unwrap();
        assert_eq!(e.stage, Stage::Post);
        assert_eq!(e.method, Method::Post);
        assert!(!e.silent && e.fields.is_empty() && e.lead_id.is_none());
    }

    #[test]
    fn limits_are_refused_naming_the_limit() {
        let refused = |v: Value| Envelope::parse(&v).unwrap_err().to_string();
        let many: Map<String, Value> = (0..10_000).map(|i| (format!("f{i}"), json!(i))).collect();
        let e = refused(json!({"product": "p", "fields": many}));
        assert!(
            e.contains("\"fields\"") && e.contains("limit of 1000"),
            "{e}"
        );
        let e = refused(json!({"product": "p", "fields": {"note": "x".repeat(100 << 10)}}));
        assert!(
            e.contains("fields.note") && e.contains("limit of 65536"),
            "{e}"
        );
        let e = refused(json!({"product": "p", "lead_id": "x".repeat(300)}));
        assert!(e.contains("lead_id") && e.contains("limit of 256"), "{e}");
        let e = refused(json!({"product": "p", "params": {"k".repeat(300): "v"}}));
        assert!(
            e.contains("params.kkkk") && e.contains("limit of 256"),
            "{e}"
        );
        let big: Map<String, Value> = (0..20)
            .map(|i| (format!("f{i}"), json!("x".repeat(60 << 10))))
            .collect();
        let e = refused(json!({"product": "p", "fields": big}));
        assert!(
            e.contains("\"lead\"") && e.contains("limit of 1048576"),
            "{e}"
        );
        // at the limits, a lead is accepted
        let ok: Map<String, Value> = (0..1000).map(|i| (format!("f{i}"), json!("v"))).collect();
        assert!(Envelope::parse(&json!({"product": "p", "fields": ok})).is_ok());
        let one = json!({"product": "p", "fields": {"note": "x".repeat(64 << 10)}});
        assert!(Envelope::parse(&one).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"fields": {}}), "product"),
            (json!({"product": 5}), "product"),
            (json!({"product": "p", "fields": "x"}), "fields"),
            (json!({"product": "p", "params": [1]}), "params"),
            (
                json!({"product": "p", "publisher_id": "abc"}),
                "publisher_id",
            ),
            (json!({"product": "p", "publisher_id": 1.5}), "publisher_id"),
            (json!({"product": "p", "stage": "final"}), "stage"),
            (json!({"product": "p", "silent": "yes"}), "silent"),
            (json!({"product": "p", "method": "GET"}), "method"),
            (
                json!({"product": "p", "fields": {"a": {"b": 1}}}),
                "fields.a",
            ),
            (json!({"product": "p", "feilds": {}}), "feilds"),
            (
                json!({"product": "p", "campaigns_remaining": -1}),
                "campaigns_remaining",
            ),
            (json!({"product": "p", "lead_id": ""}), "lead_id"),
            (json!([1]), "lead"),
        ];
        for (v, key) in cases {
            let err = Envelope::parse(&v).unwrap_err();
            assert_eq!(err.key, key, "{v}");
            assert!(err.to_string().contains(key));
        }
    }
}
