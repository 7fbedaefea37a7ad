//! The SMS adapter of `pause_for_verification`: a generic JSON webhook.
//! `POST {endpoint}` with `{"to", "text", "reference"}`; any 2xx is sent.

use iclear_engine::facts::CallResult;
use serde_json::json;

/// Send one message. The logged request hides the code and any query
/// string of the endpoint (webhook URLs often carry a token there).
pub fn send(endpoint: &str, to: &str, text: &str, reference: &str, code: &str) -> CallResult {
    let body = json!({"to": to, "text": text, "reference": reference});
    let logged = json!({"to": to, "text": text.replace(code, "******"), "reference": reference});
    crate::webhook(endpoint, &body, logged)
}
