//! The service adapters of design §5: each builds its vendor's request,
//! makes it with a bounded timeout and parses the answer into the engine's
//! `CallResult`. No Postgres here: the store calls `call` from a thread.

pub mod http;
pub mod iclaim;
pub mod ipqs;
pub mod sandbox;
pub mod sms;

use iclear_engine::facts::{CallResult, ServiceCall};
use iclear_engine::global::redact;
use iclear_engine::settings::Settings;
use serde_json::{json, Value};

/// Run one lookup. Never panics on a vendor's answer; credentials never
/// reach the returned request or reason.
pub fn call(c: &ServiceCall) -> CallResult {
    let s = &c.rule.settings;
    let endpoint = c.rule.endpoint.as_str();
    let (url, result, body) = match s {
        Settings::IpAnalysis(ip) => {
            let url = ipqs::ip_url(endpoint, ip, c.value, c.fields);
            let r = http::get(&url, c.timeout_s);
            (url, r.map(ipqs::parse), None)
        }
        Settings::PhoneAnalysis(p) => {
            let url = ipqs::phone_url(endpoint, p, c.value);
            let r = http::get(&url, c.timeout_s);
            (url, r.map(ipqs::parse), None)
        }
        Settings::IClaim(ic) => {
            let url = iclaim::url(endpoint, c.value);
            let body = iclaim::body(c.lead_id, c.product, c.fields);
            let r = http::post_json(
                &url,
                &iclaim::authorization(ic),
                &body.to_string(),
                c.timeout_s,
            );
            (url, r.map(iclaim::parse), Some(body))
        }
        Settings::VerificationHistory(_) => {
            return CallResult::NoResponse {
                reason: "verification_history has no HTTP adapter".into(),
                timed_out: false,
                retryable: false,
                request: Value::Null,
            }
        }
    };
    let mut request = json!({
        "method": if body.is_some() { "POST" } else { "GET" },
        "url": redact(&url, s),
    });
    if let Some(b) = body {
        request["body"] = b;
    }
    match result {
        Ok(Ok(data)) => CallResult::Response { data, request },
        Ok(Err((reason, retryable))) => CallResult::NoResponse {
            reason: redact(&reason, s),
            timed_out: false,
            retryable,
            request,
        },
        Err(f) => CallResult::NoResponse {
            reason: redact(
                &if f.timed_out {
                    format!("timed out after {} s", c.timeout_s)
                } else {
                    f.message
                },
                s,
            ),
            timed_out: f.timed_out,
            retryable: true,
            request,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iclear_engine::global::{GlobalRule, GlobalRuleDoc};
    use serde_json::Map;

    fn rule(service: &str, endpoint: String, settings: Value) -> GlobalRule {
        let doc: GlobalRuleDoc = serde_json::from_value(json!({"id": 1, "service": service,
            "status": "active", "execution": "sync", "lookup_percent": 100,
            "run_time": "before_filtration", "run_on": "ping_and_post", "run_on_silent_ping": false,
            "no_response": "continue", "settings": settings, "endpoint": endpoint}))
        .unwrap();
        doc.build().unwrap()
    }

    fn run(rule: &GlobalRule, value: &str, fields: Value, timeout_s: u8) -> CallResult {
        let fields: Map<String, Value> = fields.as_object().unwrap().clone();
        call(&ServiceCall {
            rule,
            value,
            lead_id: "L-1",
            product: "p",
            fields: &fields,
            timeout_s,
        })
    }

    #[test]
    fn ip_protocol_against_the_sandbox() {
        let sb = sandbox::Sandbox::start("127.0.0.1:0").unwrap();
        let r = rule(
            "ip_analysis",
            format!("{}/ip", sb.base_url()),
            json!({"api_key": "SECRET123", "strictness": 1, "user_agent_field": "userAgent"}),
        );
        match run(&r, "10.1.3.77", json!({"userAgent": "Mozilla/5.0 (X)"}), 2) {
            CallResult::Response { data, request } => {
                assert_eq!(data["fraud_score"], 77);
                assert_eq!(data["country_code"], "CA");
                assert_eq!(data["mobile"], true);
                let url = request["url"].as_str().unwrap();
                assert!(!url.contains("SECRET123"), "{url}");
                assert!(url.contains("/***/10.1.3.77?strictness=1&user_agent=Mozilla%2F5.0"));
            }
            other => panic!("{other:?}"),
        }
        // HTTP 200 with success:false is no response, and final
        match run(&r, "192.0.2.2", json!({}), 2) {
            CallResult::NoResponse {
                reason,
                timed_out,
                retryable,
                ..
            } => {
                assert!(reason.contains("success: false"), "{reason}");
                assert!(!timed_out && !retryable);
            }
            other => panic!("{other:?}"),
        }
        // HTTP 500 is no response, worth a retry
        assert!(matches!(
            run(&r, "192.0.2.3", json!({}), 2),
            CallResult::NoResponse {
                retryable: true,
                timed_out: false,
                ..
            }
        ));
        // the timeout is bounded
        let t = std::time::Instant::now();
        assert!(matches!(
            run(&r, "192.0.2.1", json!({}), 1),
            CallResult::NoResponse {
                timed_out: true,
                retryable: true,
                ..
            }
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(4));
        assert!(sb.count("ip") >= 4);
    }

    #[test]
    fn phone_and_iclaim_protocols_against_the_sandbox() {
        let sb = sandbox::Sandbox::start("127.0.0.1:0").unwrap();
        let p = rule(
            "phone_analysis",
            format!("{}/phone", sb.base_url()),
            json!({"api_key": "k", "country": ["US", "CA"]}),
        );
        // digits ...: 7th last 2 (Denver), 6th 3 (Bandwidth), 5th 2 (VOIP), 4th 1 (prepaid), 3rd 9 (inactive)
        match run(&p, "5552321995", json!({}), 2) {
            CallResult::Response { data, request } => {
                assert_eq!(data["line_type"], "VOIP");
                assert_eq!(data["VOIP"], true);
                assert_eq!(data["prepaid"], true);
                assert_eq!(data["active"], false);
                assert_eq!(data["carrier"], "Bandwidth");
                assert_eq!(data["timezone"], "America/Denver");
                assert_eq!(data["fraud_score"], 95);
                assert!(request["url"]
                    .as_str()
                    .unwrap()
                    .ends_with("?country[]=US&country[]=CA"));
            }
            other => panic!("{other:?}"),
        }
        let ic = rule(
            "iclaim",
            format!("{}/iclaim", sb.base_url()),
            json!({"account_id": "acct", "api_token": "tok-secret"}),
        );
        match run(&ic, "ok-123", json!({"email": "a@b.co"}), 2) {
            CallResult::Response { data, request } => {
                assert_eq!(data["outcome"], "success");
                assert_eq!(data["retain"]["reference"], "L-1");
                assert_eq!(request["body"]["match_lead"]["email"], "a@b.co");
                assert!(!request.to_string().contains("tok-secret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&ic, "fail-1", json!({}), 2),
            CallResult::Response { ref data, .. } if data["outcome"] == "failure"
        ));
        assert!(matches!(
            run(&ic, "err-1", json!({}), 2),
            CallResult::NoResponse {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn sandbox_is_loopback_only() {
        assert!(sandbox::Sandbox::start("0.0.0.0:0").is_err());
    }
}
