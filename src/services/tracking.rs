//! The tracking webhook of "Run action from Tracking": `POST {endpoint}` with
//! `{"event", "payload", "lead_id", "product"}`; any 2xx is delivered, 5xx,
//! 429 and transport errors are retried by the queue, other statuses fail.

use crate::http;
use iclear_engine::facts::CallResult;
use serde_json::{json, Value};

pub fn send(endpoint: &str, body: &Value) -> CallResult {
    // webhook URLs often carry a token in their query string: not logged
    let shown = endpoint.split('?').next().unwrap_or("");
    let request = json!({"method": "POST", "url": shown, "body": body});
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
