//! iClaim as a TrustedForm-v4-style consent certificate claim:
//! `POST {endpoint}/{session_id}` with HTTP Basic (account id, API token),
//! body `{"retain": {"reference", "vendor"}, "match_lead": {"email", "phone"}}`,
//! plus `insights` (properties, scans) and `verify` when the rule sets them
//! (TrustedForm v4's documented request).

use crate::http::{base64, encode, Reply};
use iclear_engine::service::IClaim;
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

pub fn body(s: &IClaim, lead_id: &str, product: &str, fields: &Map<String, Value>) -> Value {
    let phone = ["phone", "homePhone", "cellPhone"]
        .iter()
        .find_map(|f| fields.get(*f))
        .cloned()
        .unwrap_or(Value::Null);
    let mut body = json!({
        "retain": {"reference": lead_id, "vendor": product},
        "match_lead": {"email": fields.get("email").cloned().unwrap_or(Value::Null), "phone": phone},
    });
    // insights (properties, page scans) and verify, as the rule asks
    for (k, v) in s.request_extras() {
        body[k] = v;
    }
    body
}

/// TrustedForm v4's answers (its OpenAPI file; src/services/fixtures):
/// `outcome` success or failure (HTTP 200) is an answer. The documented
/// errors about the certificate are definitive, a claim that failed: 400
/// (malformed id), 404 and 410 (expired or unknown), 405 (not claimable),
/// 422 (claimed too many times); they become `outcome: failure` with the
/// vendor's reason and status. Account problems (401, 402, 403), 5xx, 429,
/// an `error` outcome and a body that is not JSON are no response.
pub fn parse(r: Reply) -> Result<Value, (String, bool)> {
    let body: Result<Value, _> = serde_json::from_str(&r.body);
    let reason = |v: &Value| {
        v.get("reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason")
            .to_string()
    };
    match r.status {
        401..=403 => Err((
            format!(
                "HTTP {}: account problem ({})",
                r.status,
                body.as_ref()
                    .map(reason)
                    .unwrap_or_else(|_| "no reason".into())
            ),
            false,
        )),
        400 | 404 | 405 | 410 | 422 => Ok(json!({
            "outcome": "failure",
            "reason": body.as_ref().map(reason).unwrap_or_else(|_| format!("HTTP {}", r.status)),
            "http_status": r.status,
        })),
        200 => {
            let v = body.map_err(|e| (format!("HTTP 200: the answer is not JSON: {e}"), false))?;
            match v.get("outcome").and_then(Value::as_str) {
                Some("success") | Some("failure") => Ok(v),
                _ => Err((
                    format!(
                        "HTTP 200: outcome {} ({})",
                        v.get("outcome").unwrap_or(&Value::Null),
                        reason(&v)
                    ),
                    false,
                )),
            }
        }
        status => Err((
            format!(
                "HTTP {status}: {}",
                body.as_ref()
                    .map(reason)
                    .unwrap_or_else(|_| "no answer".into())
            ),
            status >= 500 || status == 429,
        )),
    }
}
