//! iClaim (docs/reference/settings.md "iClaim"): its settings, the session id it
//! claims, the lead fields it sends to match, and the consent evidence an
//! answer carries.

use super::answer::text;
use super::{parse, Service, Verdict};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IClaim {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub api_token: String,
    #[serde(default = "session_field")]
    pub session_id_field: String,
}

fn session_field() -> String {
    "iClaimSessionId".into()
}

impl IClaim {
    pub(super) fn parse(v: &Value) -> Result<IClaim, ConfigError> {
        parse(v)
    }
}

impl Service for IClaim {
    fn credentials(&self) -> Vec<&str> {
        vec![&self.api_token]
    }

    fn missing_credential(&self) -> Option<&'static str> {
        if self.account_id.trim().is_empty() {
            Some("account_id")
        } else if self.api_token.trim().is_empty() {
            Some("api_token")
        } else {
            None
        }
    }

    fn lookup_field(&self) -> Option<&str> {
        Some(&self.session_id_field)
    }

    fn lookup_key(
        &self,
        session_id: String,
        _text: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        Some((session_id.clone(), session_id))
    }

    fn call_fields(&self) -> Vec<&str> {
        vec!["email", "phone", "homePhone", "cellPhone"]
    }

    fn verdict(&self, data: &Value) -> Verdict {
        Verdict {
            reject: match text(data, "outcome").as_deref() {
                Some("success") => None,
                _ => Some(format!(
                    "iclaim: consent certificate not claimed ({})",
                    text(data, "reason").unwrap_or_else(|| "no reason given".into())
                )),
            },
            ..Verdict::default()
        }
    }
}

/// The consent evidence an iClaim answer carries. An `expires_at` that is
/// not an RFC 3339 time is dropped (the whole answer is kept as evidence).
pub fn evidence(data: &Value) -> Value {
    let expires = data
        .pointer("/retain/results/expires_at")
        .and_then(Value::as_str)
        .filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    json!({
        "outcome": text(data, "outcome").unwrap_or_else(|| "error".into()),
        "expires_at": expires,
    })
}
