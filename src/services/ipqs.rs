//! IP Analysis and Phone Number Analysis as IPQualityScore's APIs:
//! `GET {endpoint}/{key}/{ip}?user_agent=..&strictness=..` and
//! `GET {endpoint}/{key}/{phone}?country[]=..`. HTTP 200 with
//! `success: false` is a failed lookup, not a pass.

use crate::http::{encode, Reply};
use iclear_engine::service::{IpAnalysis, PhoneAnalysis};
use serde_json::{Map, Value};

pub fn ip_url(endpoint: &str, s: &IpAnalysis, ip: &str, fields: &Map<String, Value>) -> String {
    let mut url = format!(
        "{}/{}/{}?strictness={}",
        endpoint.trim_end_matches('/'),
        encode(&s.api_key),
        encode(ip),
        s.strictness
    );
    let ua = s
        .user_agent_field
        .as_ref()
        .and_then(|f| fields.get(f))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    if let Some(ua) = ua {
        url.push_str("&user_agent=");
        url.push_str(&encode(ua));
    }
    url
}

pub fn phone_url(endpoint: &str, s: &PhoneAnalysis, phone: &str) -> String {
    let mut url = format!(
        "{}/{}/{}",
        endpoint.trim_end_matches('/'),
        encode(&s.api_key),
        encode(phone)
    );
    for (i, c) in s.country.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str("country[]=");
        url.push_str(&encode(c));
    }
    url
}

/// The answer, or why there is none (and whether to retry).
pub fn parse(r: Reply) -> Result<Value, (String, bool)> {
    if r.status != 200 {
        let retry = r.status >= 500 || r.status == 429;
        return Err((format!("HTTP {}", r.status), retry));
    }
    let v: Value = serde_json::from_str(&r.body)
        .map_err(|e| (format!("the answer is not JSON: {e}"), true))?;
    match v.get("success") {
        Some(Value::Bool(true)) => Ok(v),
        _ => Err((
            format!(
                "success: false ({})",
                v.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            ),
            false,
        )),
    }
}
