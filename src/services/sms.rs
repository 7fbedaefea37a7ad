//! The SMS adapter of `pause_for_verification`: a generic JSON webhook.
//! `POST {endpoint}` with `{"to", "text", "reference"}`; any 2xx is sent.

use crate::http;
use iclear_engine::facts::CallResult;
use serde_json::json;

/// Send one message. The logged request hides the code and any query
/// string of the endpoint (webhook URLs often carry a token there).
pub fn send(endpoint: &str, to: &str, text: &str, reference: &str, code: &str) -> CallResult {
    let body = json!({"to": to, "text": text, "reference": reference});
    let shown = endpoint.split('?').next().unwrap_or("");
    let request = json!({"method": "POST", "url": shown,
                         "body": {"to": to, "text": text.replace(code, "******"), "reference": reference}});
    match http::post_json(endpoint, "", &body.to_string(), 5) {
        Ok(r) if (200..300).contains(&r.status) => CallResult::Response {
            data: crate::without_nul(
                serde_json::from_str(&r.body).unwrap_or_else(|_| json!({"status": r.status})),
            ),
            request,
        },
        Ok(r) => CallResult::NoResponse {
            reason: format!("HTTP {}", r.status),
            timed_out: false,
            retryable: r.status >= 500 || r.status == 429,
            request,
        },
        Err(f) => CallResult::NoResponse {
            reason: f.message.replace(endpoint, shown),
            timed_out: f.timed_out,
            retryable: true,
            request,
        },
    }
}
