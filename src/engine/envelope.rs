//! The lead envelope (design §1): parsed strictly, so that a typo or a wrong
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
}

const KEYS: &[&str] = &[
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
        let method = match obj.get("method") {
            None | Some(Value::Null) => Method::Post,
            Some(Value::String(s)) => Method::parse(s)
                .ok_or_else(|| InputError::new("method", "must be \"POST\" or \"FORM\""))?,
            Some(_) => return Err(InputError::new("method", "must be \"POST\" or \"FORM\"")),
        };
        let fields = object(obj, "fields")?;
        let params = object(obj, "params")?;
        for (k, v) in fields.iter() {
            if v.is_object() || v.is_array() {
                return Err(InputError::new(
                    format!("fields.{k}"),
                    "must be a string, number, boolean or null",
                ));
            }
        }
        Ok(Envelope {
            product,
            lead_id,
            stage,
            silent,
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
        })
    }

    /// The lead body value of `field` as text ("" when absent or null).
    pub fn field_text(&self, field: &str) -> Option<String> {
        self.fields.get(field).and_then(value_text)
    }
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
