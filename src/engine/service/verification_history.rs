//! The Verification History Service (docs/reference/settings.md "Verification History"):
//! its settings, signature validation, the local SMS verification history
//! and their combined rejection logic. Pure: the store answers what was
//! recorded when, this module decides.

use super::{non_empty, parse, Service};
use crate::error::ConfigError;
use crate::keys::hex;
use crate::placeholders::{render, Vars};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Combined {
    #[default]
    Any,
    Both,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationHistory {
    #[serde(default)]
    pub combined_logic: Combined,
    #[serde(default)]
    pub signature_enabled: bool,
    #[serde(default)]
    pub signature_template: Option<String>,
    #[serde(default)]
    pub reject_signature_missing: bool,
    #[serde(default)]
    pub signature_lifetime_s: Option<i64>,
    #[serde(default)]
    pub sms_enabled: bool,
    #[serde(default)]
    pub phone_field: Option<String>,
    #[serde(default)]
    pub reject_sms_expired: bool,
    #[serde(default)]
    pub sms_code_match: bool,
    #[serde(default)]
    pub tpar_code_key: Option<String>,
    #[serde(default)]
    pub reject_sms_mismatch: bool,
    /// How long a verified phone counts (seconds; default 30 days).
    #[serde(default)]
    pub sms_lifetime_s: Option<i64>,
    /// Store the lead's signature in the history when the lead is accepted
    /// (or resumed accepted after `confirm_sms`): the seed's template lists
    /// the fields "to hash, check, and store". Off by default, as before.
    #[serde(default)]
    pub store_signature_on_accept: bool,
}

impl VerificationHistory {
    pub(super) fn parse(v: &Value) -> Result<VerificationHistory, ConfigError> {
        let s: VerificationHistory = parse(v)?;
        if s.signature_enabled {
            let t = s.signature_template.as_deref().unwrap_or("");
            let parsed: Value = serde_json::from_str(t).map_err(|e| {
                ConfigError::new(
                    "settings.signature_template",
                    format!("must be a JSON object: {e}"),
                )
            })?;
            if !parsed.is_object() {
                return Err(ConfigError::new(
                    "settings.signature_template",
                    "must be a JSON object",
                ));
            }
            crate::placeholders::check_template(t)
                .map_err(|e| ConfigError::new("settings.signature_template", e))?;
            if s.signature_lifetime_s.is_none_or(|l| l <= 0) {
                return Err(ConfigError::new(
                    "settings.signature_lifetime_s",
                    "must be a positive number of seconds",
                ));
            }
        }
        if s.sms_lifetime_s.is_some_and(|l| l <= 0) {
            return Err(ConfigError::new(
                "settings.sms_lifetime_s",
                "must be a positive number of seconds",
            ));
        }
        if s.sms_enabled {
            non_empty(
                "settings.phone_field",
                s.phone_field.as_deref().unwrap_or(""),
            )?;
            if s.sms_code_match {
                non_empty(
                    "settings.tpar_code_key",
                    s.tpar_code_key.as_deref().unwrap_or(""),
                )?;
            }
        }
        Ok(s)
    }
}

/// Read from Postgres, not through an adapter: the trait's defaults (no
/// lookup key, no credential, no verdict on an answer) hold.
impl Service for VerificationHistory {}

/// How long a verified phone counts when `sms_lifetime_s` is not set: 30 days.
pub const DEFAULT_SMS_LIFETIME_S: i64 = 30 * 86_400;

pub use crate::keys::normalize_phone;

/// Render every string of the JSON template for this lead, canonicalise
/// (object keys sorted, no whitespace, each rendered value trimmed and
/// lowercased) and hash with SHA-256. The same template and lead data give
/// the same signature on any product and any instance. Ok(None) when a
/// placeholder of the template has no value in this lead: such leads would
/// all share one signature, so they have none.
pub fn signature(template: &str, vars: &Vars) -> Result<Option<String>, String> {
    let t: Value = serde_json::from_str(template)
        .map_err(|e| format!("signature_template is not JSON: {e}"))?;
    let mut complete = true;
    let rendered = render_strings(&t, vars, &mut complete);
    if !complete {
        return Ok(None);
    }
    // serde_json's map is ordered by key: this is the canonical text
    let canonical = serde_json::to_string(&rendered).map_err(|e| e.to_string())?;
    Ok(Some(hex(&Sha256::digest(canonical.as_bytes()))))
}

fn render_strings(v: &Value, vars: &Vars, complete: &mut bool) -> Value {
    match v {
        Value::String(s) => {
            let r = render(s, vars).trim().to_lowercase();
            if s.contains("{%") && r.is_empty() {
                *complete = false;
            }
            Value::String(r)
        }
        Value::Array(a) => a
            .iter()
            .map(|x| render_strings(x, vars, complete))
            .collect(),
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| (k.clone(), render_strings(x, vars, complete)))
            .collect(),
        other => other.clone(),
    }
}

/// A verified phone in the SMS history.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsRecord {
    pub verified_at: DateTime<Utc>,
    pub code: String,
}

/// What the history says about one lead: for each enabled check, what was found.
pub struct Findings<'a> {
    /// Signature enabled: when it was last recorded (None: never).
    pub signature: Option<Option<DateTime<Utc>>>,
    /// SMS enabled: the phone's latest verified record (None: none).
    pub sms: Option<Option<SmsRecord>>,
    /// The SMS code posted with the lead (tPar), when code match is on.
    pub posted_code: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VhVerdict {
    /// The lead fails verification (under the combined logic).
    pub fail: bool,
    pub reason: Option<String>,
    pub detail: Value,
}

/// Apply the seed's rules. A check "fails" only through its reject settings:
/// - signature: "Reject if signature expired or missing" and no record
///   younger than `signature_lifetime_s`;
/// - SMS: "Reject if record expired" and no verified record younger than
///   `sms_lifetime_s` (a missing record is expired), or "Reject if SMS
///   mismatch" with code match on and the posted code not the stored one.
///
/// With both checks enabled, `combined_logic` any rejects when either fails,
/// both only when both fail; with one enabled, it alone decides.
pub fn evaluate(s: &VerificationHistory, now: DateTime<Utc>, f: &Findings) -> VhVerdict {
    let fresh = |at: &DateTime<Utc>, lifetime: i64| (now - *at).num_seconds() <= lifetime;
    let mut detail = json!({});
    let sig_fail = f.signature.as_ref().map(|rec| {
        let lifetime = s.signature_lifetime_s.unwrap_or(0);
        let state = match rec {
            None => "missing",
            Some(at) if fresh(at, lifetime) => "valid",
            Some(_) => "expired",
        };
        detail["signature"] = state.into();
        s.reject_signature_missing && state != "valid"
    });
    let sms_fail = f.sms.as_ref().map(|rec| {
        let lifetime = s.sms_lifetime_s.unwrap_or(DEFAULT_SMS_LIFETIME_S);
        let state = match rec {
            None => "missing",
            Some(r) if fresh(&r.verified_at, lifetime) => "verified",
            Some(_) => "expired",
        };
        detail["sms"] = state.into();
        let expired = s.reject_sms_expired && state != "verified";
        let mismatch = s.sms_code_match && {
            let stored = rec.as_ref().map(|r| r.code.as_str());
            let ok = matches!((stored, f.posted_code), (Some(a), Some(b)) if a == b.trim());
            detail["sms_code"] = if ok { "match" } else { "mismatch" }.into();
            !ok
        };
        expired || (mismatch && s.reject_sms_mismatch)
    });
    let fail = match (sig_fail, sms_fail) {
        (Some(a), Some(b)) => match s.combined_logic {
            Combined::Any => a || b,
            Combined::Both => a && b,
        },
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => false,
    };
    let reason = fail.then(|| {
        let mut why = Vec::new();
        if sig_fail == Some(true) {
            why.push(format!(
                "signature {}",
                detail["signature"].as_str().unwrap_or("")
            ));
        }
        if sms_fail == Some(true) {
            let mut w = format!("SMS verification {}", detail["sms"].as_str().unwrap_or(""));
            if detail["sms_code"] == "mismatch" {
                w.push_str(", code mismatch");
            }
            why.push(w);
        }
        format!("verification_history: {}", why.join(" and "))
    });
    VhVerdict {
        fail,
        reason,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Settings;
    use chrono::TimeZone;
    use serde_json::Map;

    fn vh(v: Value) -> VerificationHistory {
        match Settings::parse("verification_history", &v).unwrap() {
            Settings::VerificationHistory(s) => s,
            _ => unreachable!(),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn ago(s: i64) -> DateTime<Utc> {
        now() - chrono::Duration::seconds(s)
    }

    fn vars<'a>(fields: &'a Map<String, Value>, params: &'a Map<String, Value>) -> Vars<'a> {
        Vars {
            fields,
            params,
            lead_id: "L",
            product_id: 1,
            publisher_id: None,
            channel_id: None,
            source_id: None,
            date: "2026-11-21",
        }
    }

    #[test]
    fn phones_normalise_to_their_digits() {
        for p in [
            "+1 (555) 010-0199",
            "15550100199",
            "555.010.0199",
            "5550100199",
        ] {
            assert_eq!(normalize_phone(p).as_deref(), Some("5550100199"), "{p}");
        }
        assert_eq!(
            normalize_phone("+44 20 7946 0958").as_deref(),
            Some("442079460958")
        );
        assert_eq!(normalize_phone("n/a"), None);
    }

    #[test]
    fn signatures_are_canonical_and_portable() {
        let p = Map::new();
        let f1 = json!({"email": " A@B.com ", "homePhone": "5550100199", "other": "x"});
        let f2 = json!({"homePhone": "5550100199", "email": "a@b.com"});
        let t1 =
            r#"{"email": "{%productField_email%}", "homePhone": "{%productField_homePhone%}"}"#;
        // same template, keys in another order, on another product: same signature
        let t2 = r#"{"homePhone":"{%productField_homePhone%}","email":"{%productField_email%}"}"#;
        let s1 = signature(t1, &vars(f1.as_object().unwrap(), &p))
            .unwrap()
            .unwrap();
        let mut v2 = vars(f2.as_object().unwrap(), &p);
        v2.product_id = 2;
        let s2 = signature(t2, &v2).unwrap().unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 64);
        // the hash of the canonical text, so other implementations can match it
        let canonical = r#"{"email":"a@b.com","homePhone":"5550100199"}"#;
        assert_eq!(s1, hex(&Sha256::digest(canonical.as_bytes())));
        let f3 = json!({"email": "c@b.com", "homePhone": "5550100199"});
        assert_ne!(
            Some(s1),
            signature(t1, &vars(f3.as_object().unwrap(), &p)).unwrap()
        );
        // a lead without the template's values has no signature
        let f4 = json!({"email": "a@b.com", "homePhone": "  "});
        assert_eq!(signature(t1, &vars(f4.as_object().unwrap(), &p)), Ok(None));
    }

    #[test]
    fn signature_lifetime_boundary() {
        let s = vh(
            json!({"signature_enabled": true, "signature_template": "{\"e\": \"x\"}",
                          "reject_signature_missing": true, "signature_lifetime_s": 3600}),
        );
        let f = |rec| Findings {
            signature: Some(rec),
            sms: None,
            posted_code: None,
        };
        assert!(
            !evaluate(&s, now(), &f(Some(ago(3600)))).fail,
            "exactly the lifetime: valid"
        );
        assert!(
            evaluate(&s, now(), &f(Some(ago(3601)))).fail,
            "one second more: expired"
        );
        let v = evaluate(&s, now(), &f(None));
        assert!(v.fail);
        assert_eq!(
            v.reason.as_deref(),
            Some("verification_history: signature missing")
        );
        // without "reject if expired or missing" the check never fails
        let lax = vh(
            json!({"signature_enabled": true, "signature_template": "{\"e\": \"x\"}",
                            "signature_lifetime_s": 3600}),
        );
        assert!(!evaluate(&lax, now(), &f(None)).fail);
    }

    #[test]
    fn sms_expiry_and_code_match() {
        let rec = |age, code: &str| {
            Some(SmsRecord {
                verified_at: ago(age),
                code: code.into(),
            })
        };
        let s = vh(
            json!({"sms_enabled": true, "phone_field": "homePhone", "reject_sms_expired": true,
                          "sms_lifetime_s": 600, "sms_code_match": true, "tpar_code_key": "verificationCode",
                          "reject_sms_mismatch": true}),
        );
        let f = |r, code| Findings {
            signature: None,
            sms: Some(r),
            posted_code: code,
        };
        assert!(!evaluate(&s, now(), &f(rec(600, "123456"), Some("123456"))).fail);
        assert!(
            evaluate(&s, now(), &f(rec(601, "123456"), Some("123456"))).fail,
            "expired"
        );
        assert!(
            evaluate(&s, now(), &f(None, Some("123456"))).fail,
            "missing"
        );
        let v = evaluate(&s, now(), &f(rec(10, "123456"), Some("654321")));
        assert!(v.fail);
        assert!(v.reason.unwrap().contains("code mismatch"));
        assert!(
            evaluate(&s, now(), &f(rec(10, "123456"), None)).fail,
            "no code posted"
        );
        // mismatch without "reject if SMS mismatch": passes, noted
        let lax = vh(
            json!({"sms_enabled": true, "phone_field": "homePhone", "sms_code_match": true,
                            "tpar_code_key": "verificationCode"}),
        );
        let v = evaluate(&lax, now(), &f(rec(10, "1"), Some("2")));
        assert!(!v.fail);
        assert_eq!(v.detail["sms_code"], "mismatch");
    }

    #[test]
    fn combined_any_and_both_truth_tables() {
        let base = |logic: &str| {
            vh(
                json!({"combined_logic": logic, "signature_enabled": true, "signature_template": "{\"e\": \"x\"}",
                      "reject_signature_missing": true, "signature_lifetime_s": 60,
                      "sms_enabled": true, "phone_field": "homePhone", "reject_sms_expired": true}),
            )
        };
        let findings = |sig_ok: bool, sms_ok: bool| Findings {
            signature: Some(sig_ok.then(|| ago(1))),
            sms: Some(sms_ok.then(|| SmsRecord {
                verified_at: ago(1),
                code: "1".into(),
            })),
            posted_code: None,
        };
        for (sig_ok, sms_ok, any_fails, both_fails) in [
            (true, true, false, false),
            (true, false, true, false),
            (false, true, true, false),
            (false, false, true, true),
        ] {
            let f = findings(sig_ok, sms_ok);
            assert_eq!(
                evaluate(&base("any"), now(), &f).fail,
                any_fails,
                "any {sig_ok} {sms_ok}"
            );
            assert_eq!(
                evaluate(&base("both"), now(), &f).fail,
                both_fails,
                "both {sig_ok} {sms_ok}"
            );
        }
        // one check enabled: it alone decides, whatever the combined logic
        let sig_only = vh(json!({"combined_logic": "both", "signature_enabled": true,
                                 "signature_template": "{\"e\": \"x\"}", "reject_signature_missing": true,
                                 "signature_lifetime_s": 60}));
        assert!(
            evaluate(
                &sig_only,
                now(),
                &Findings {
                    signature: Some(None),
                    sms: None,
                    posted_code: None
                }
            )
            .fail
        );
    }
}
