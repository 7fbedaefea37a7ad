//! The tracking webhook of "Run action from Tracking": `POST {endpoint}` with
//! `{"event", "payload", "lead_id", "product"}`; any 2xx is delivered, 5xx,
//! 429 and transport errors are retried by the queue, other statuses fail.

use iclear_engine::facts::CallResult;
use serde_json::Value;

pub fn send(endpoint: &str, body: &Value) -> CallResult {
    crate::webhook(endpoint, body, body.clone())
}
