//! IP Analysis and Phone Number Analysis as IPQualityScore's APIs:
//! `GET {endpoint}/{key}/{ip}?user_agent=..&strictness=..` and
//! `GET {endpoint}/{key}/{phone}?country[]=..`. HTTP 200 with
//! `success: false` is a failed lookup, not a pass.

use crate::http::{encode, Reply};
use iclear_engine::service::{IpAnalysis, PhoneAnalysis};
use serde_json::{Map, Value};

/// The request of an IP lookup. `shown`: as logged, with the lead's email
/// and phone masked (the key is masked by the settings' `redact`).
pub fn ip_url(
    endpoint: &str,
    s: &IpAnalysis,
    ip: &str,
    fields: &Map<String, Value>,
    shown: bool,
) -> String {
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
    // IPQS's transaction scoring: the lead's email and phone
    for (param, field) in [
        ("billing_email", &s.email_field),
        ("billing_phone", &s.phone_field),
    ] {
        let v = fields
            .get(field.as_str())
            .and_then(iclear_engine::envelope::value_text)
            .filter(|v| !field.is_empty() && !v.trim().is_empty());
        if let Some(v) = v {
            url.push('&');
            url.push_str(param);
            url.push('=');
            url.push_str(&if shown {
                "***".to_string()
            } else {
                encode(v.trim())
            });
        }
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

#[cfg(test)]
mod sends {
    use super::*;
    use serde_json::json;

    fn settings(extra: Value) -> IpAnalysis {
        let mut v = json!({"api_key": "K"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        match iclear_engine::service::Settings::parse("ip_analysis", &v).unwrap() {
            iclear_engine::service::Settings::IpAnalysis(s) => s,
            _ => unreachable!(),
        }
    }

    /// Seed 003: the score uses the IP, the email and the phone. Both go as
    /// IPQS's transaction-scoring parameters, and the log masks them.
    #[test]
    fn the_email_and_phone_are_sent_and_masked_in_the_log() {
        let fields = json!({"email": "Jo@x.com", "homePhone": "201 555 0007", "mail2": "o@x.com"});
        let fields = fields.as_object().unwrap();
        let s = settings(json!({}));
        assert_eq!(
            ip_url("http://h/ip", &s, "1.2.3.4", fields, false),
            "http://h/ip/K/1.2.3.4?strictness=0&billing_email=Jo%40x.com&billing_phone=201%20555%200007"
        );
        assert_eq!(
            ip_url("http://h/ip", &s, "1.2.3.4", fields, true),
            "http://h/ip/K/1.2.3.4?strictness=0&billing_email=***&billing_phone=***"
        );
        let s = settings(json!({"email_field": "mail2", "phone_field": ""}));
        assert_eq!(
            ip_url("http://h/ip", &s, "1.2.3.4", fields, false),
            "http://h/ip/K/1.2.3.4?strictness=0&billing_email=o%40x.com"
        );
    }
}
