//! iClaim as a TrustedForm-v4-style consent certificate claim:
//! `POST {endpoint}/{session_id}` with HTTP Basic (account id, API token),
//! body `{"retain": {"reference", "vendor"}, "match_lead": {"email", "phone"}}`.

use crate::http::{base64, encode, Reply};
use iclear_engine::settings::IClaim;
use serde_json::{json, Map, Value};

pub fn url(endpoint: &str, session_id: &str) -> String {
    format!("{}/{}", endpoint.trim_end_matches('/'), encode(session_id))
}

pub fn authorization(s: &IClaim) -> String {
    format!(
        "Basic {}",
        base64(format!("{}:{}", s.account_id, s.api_token).as_bytes())
    )
}

pub fn body(lead_id: &str, product: &str, fields: &Map<String, Value>) -> Value {
    let phone = ["phone", "homePhone", "cellPhone"]
        .iter()
        .find_map(|f| fields.get(*f))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "retain": {"reference": lead_id, "vendor": product},
        "match_lead": {"email": fields.get("email").cloned().unwrap_or(Value::Null), "phone": phone},
    })
}

/// `outcome` success or failure is an answer; error (or anything else) is none.
pub fn parse(r: Reply) -> Result<Value, (String, bool)> {
    if r.status == 401 || r.status == 403 {
        return Err((format!("HTTP {}: credentials refused", r.status), false));
    }
    let v: Value = serde_json::from_str(&r.body).map_err(|e| {
        (
            format!("HTTP {}: the answer is not JSON: {e}", r.status),
            r.status >= 500,
        )
    })?;
    match v.get("outcome").and_then(Value::as_str) {
        Some("success") | Some("failure") => Ok(v),
        _ => Err((
            format!(
                "HTTP {}: outcome {} ({})",
                r.status,
                v.get("outcome").unwrap_or(&Value::Null),
                v.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason")
            ),
            r.status >= 500 || r.status == 429,
        )),
    }
}
