//! Typed `global_rule.settings` per service (seeds 000, 001, 003, 004): unknown
//! keys and out-of-range values are refused when the rule is saved.

use crate::error::ConfigError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub const SERVICES: &[&str] = &[
    "ip_analysis",
    "phone_analysis",
    "iclaim",
    "verification_history",
];

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MobileReject {
    Mobile,
    NotMobile,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IpAddToList {
    pub fraud_score_gte: Option<u8>,
    #[serde(default)]
    pub list_ids: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAnalysis {
    /// A credential: kept in global_rule_credential, merged in at load; a
    /// rule without it answers "no response" (see `missing_credential`).
    #[serde(default)]
    pub api_key: String,
    #[serde(default = "ip_field")]
    pub ip_field: String,
    #[serde(default)]
    pub user_agent_field: Option<String>,
    #[serde(default)]
    pub strictness: u8,
    #[serde(default)]
    pub cache_days: u32,
    #[serde(default)]
    pub reject_fraud_score_gte: u8,
    #[serde(default)]
    pub reject_mobile: Option<MobileReject>,
    #[serde(default)]
    pub reject_countries: Vec<String>,
    #[serde(default)]
    pub add_to_list: Option<IpAddToList>,
    #[serde(flatten)]
    pub advanced: Advanced,
}

fn ip_field() -> String {
    "userIp".into()
}

/// The "Advanced Settings" block shared by IP and Phone analysis.
#[derive(Debug, Clone, Deserialize)]
pub struct Advanced {
    #[serde(default)]
    pub local_only: bool,
    #[serde(default)]
    pub local_fail_run_async: bool,
    #[serde(default = "three")]
    pub sync_timeout_s: u8,
    #[serde(default = "three")]
    pub async_timeout_s: u8,
    #[serde(default)]
    pub after_timeout_run_async: bool,
}

fn three() -> u8 {
    3
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PhoneCriteria {
    pub fraud_score_gte: Option<u8>,
    #[serde(default)]
    pub invalid: bool,
    #[serde(default)]
    pub inactive: bool,
    #[serde(default)]
    pub prepaid: bool,
    #[serde(default)]
    pub voip: bool,
    #[serde(default)]
    pub spammer: bool,
    #[serde(default)]
    pub line_types: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub carriers: Vec<String>,
    #[serde(default)]
    pub time_zones: Vec<String>,
    #[serde(default)]
    pub list_ids: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhoneAnalysis {
    /// A credential: kept in global_rule_credential, merged in at load; a
    /// rule without it answers "no response" (see `missing_credential`).
    #[serde(default)]
    pub api_key: String,
    #[serde(default = "phone_field")]
    pub phone_field: String,
    #[serde(default)]
    pub country: Vec<String>,
    #[serde(default)]
    pub cache_days: u32,
    #[serde(default)]
    pub reject_fraud_score_gte: u8,
    #[serde(default)]
    pub reject_invalid: bool,
    #[serde(default)]
    pub reject_inactive: bool,
    #[serde(default)]
    pub reject_prepaid: bool,
    #[serde(default)]
    pub reject_voip: bool,
    #[serde(default)]
    pub reject_spammer: bool,
    #[serde(default)]
    pub reject_line_types: Vec<String>,
    #[serde(default)]
    pub reject_countries: Vec<String>,
    #[serde(default)]
    pub reject_carriers: Vec<String>,
    #[serde(default)]
    pub reject_time_zones: Vec<String>,
    #[serde(default)]
    pub add_to_list: Option<PhoneCriteria>,
    /// What each enabled variable adds to the overall fraud score when it
    /// holds (docs/settings.md "Phone Number Analysis": the score "is accumulated based on the enabled
    /// variables"). 100 each by default: an enabled variable that holds
    /// reaches any threshold.
    #[serde(default)]
    pub flag_weights: FlagWeights,
    #[serde(flatten)]
    pub advanced: Advanced,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagWeights {
    #[serde(default = "full_weight")]
    pub invalid: u8,
    #[serde(default = "full_weight")]
    pub inactive: u8,
    #[serde(default = "full_weight")]
    pub prepaid: u8,
    #[serde(default = "full_weight")]
    pub voip: u8,
    #[serde(default = "full_weight")]
    pub spammer: u8,
}

impl Default for FlagWeights {
    fn default() -> Self {
        FlagWeights {
            invalid: 100,
            inactive: 100,
            prepaid: 100,
            voip: 100,
            spammer: 100,
        }
    }
}

fn full_weight() -> u8 {
    100
}

fn phone_field() -> String {
    "homePhone".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IClaim {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub api_token: String,
    #[serde(default = "session_field")]
    pub session_id_field: String,
}

fn session_field() -> String {
    "iClaimSessionId".into()
}

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
}

#[derive(Debug, Clone)]
pub enum Settings {
    IpAnalysis(IpAnalysis),
    PhoneAnalysis(PhoneAnalysis),
    IClaim(IClaim),
    VerificationHistory(VerificationHistory),
}

fn parse<T: DeserializeOwned>(v: &Value) -> Result<T, ConfigError> {
    serde_json::from_value(v.clone()).map_err(|e| ConfigError::new("settings", e.to_string()))
}

/// `serde(flatten)` cannot be combined with `deny_unknown_fields`, so the
/// services with a flattened block check their keys here.
fn only_keys(v: &Value, allowed: &[&str]) -> Result<(), ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ConfigError::new("settings", "must be a JSON object"))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ConfigError::new(
            format!("settings.{k}"),
            format!("unknown key (expected one of: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

const ADVANCED: &[&str] = &[
    "local_only",
    "local_fail_run_async",
    "sync_timeout_s",
    "async_timeout_s",
    "after_timeout_run_async",
];

fn range(setting: &str, v: u32, lo: u32, hi: u32) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::new(
            setting,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

fn check_advanced(a: &Advanced) -> Result<(), ConfigError> {
    range("settings.sync_timeout_s", a.sync_timeout_s.into(), 1, 5)?;
    range("settings.async_timeout_s", a.async_timeout_s.into(), 1, 5)
}

fn non_empty(setting: &str, s: &str) -> Result<(), ConfigError> {
    if s.trim().is_empty() {
        return Err(ConfigError::new(setting, "must not be empty"));
    }
    Ok(())
}

impl Settings {
    /// Parse and validate the settings of `service`.
    /// The first credential this service needs that is not set. Credentials
    /// are set by an admin apart from the settings (README, "Roles and
    /// privileges"), so a rule may exist before its key: it does not call
    /// the vendor then, and logs why.
    pub fn missing_credential(&self) -> Option<&'static str> {
        match self {
            Settings::IpAnalysis(s) if s.api_key.trim().is_empty() => Some("api_key"),
            Settings::PhoneAnalysis(s) if s.api_key.trim().is_empty() => Some("api_key"),
            Settings::IClaim(s) if s.account_id.trim().is_empty() => Some("account_id"),
            Settings::IClaim(s) if s.api_token.trim().is_empty() => Some("api_token"),
            _ => None,
        }
    }

    pub fn parse(service: &str, v: &Value) -> Result<Settings, ConfigError> {
        match service {
            "ip_analysis" => {
                let mut keys = vec![
                    "api_key",
                    "ip_field",
                    "user_agent_field",
                    "strictness",
                    "cache_days",
                    "reject_fraud_score_gte",
                    "reject_mobile",
                    "reject_countries",
                    "add_to_list",
                ];
                keys.extend_from_slice(ADVANCED);
                only_keys(v, &keys)?;
                let s: IpAnalysis = parse(v)?;
                non_empty("settings.ip_field", &s.ip_field)?;
                range("settings.strictness", s.strictness.into(), 0, 3)?;
                range(
                    "settings.reject_fraud_score_gte",
                    s.reject_fraud_score_gte.into(),
                    0,
                    100,
                )?;
                if let Some(a) = &s.add_to_list {
                    if let Some(f) = a.fraud_score_gte {
                        range("settings.add_to_list.fraud_score_gte", f.into(), 0, 100)?;
                    }
                }
                check_advanced(&s.advanced)?;
                Ok(Settings::IpAnalysis(s))
            }
            "phone_analysis" => {
                let mut keys = vec![
                    "api_key",
                    "phone_field",
                    "country",
                    "cache_days",
                    "reject_fraud_score_gte",
                    "reject_invalid",
                    "reject_inactive",
                    "reject_prepaid",
                    "reject_voip",
                    "reject_spammer",
                    "reject_line_types",
                    "reject_countries",
                    "reject_carriers",
                    "reject_time_zones",
                    "add_to_list",
                    "flag_weights",
                ];
                keys.extend_from_slice(ADVANCED);
                only_keys(v, &keys)?;
                let s: PhoneAnalysis = parse(v)?;
                let w = &s.flag_weights;
                for (name, weight) in [
                    ("invalid", w.invalid),
                    ("inactive", w.inactive),
                    ("prepaid", w.prepaid),
                    ("voip", w.voip),
                    ("spammer", w.spammer),
                ] {
                    range(
                        &format!("settings.flag_weights.{name}"),
                        weight.into(),
                        0,
                        100,
                    )?;
                }
                non_empty("settings.phone_field", &s.phone_field)?;
                range(
                    "settings.reject_fraud_score_gte",
                    s.reject_fraud_score_gte.into(),
                    0,
                    100,
                )?;
                if let Some(f) = s.add_to_list.as_ref().and_then(|a| a.fraud_score_gte) {
                    range("settings.add_to_list.fraud_score_gte", f.into(), 0, 100)?;
                }
                check_advanced(&s.advanced)?;
                Ok(Settings::PhoneAnalysis(s))
            }
            "iclaim" => {
                let s: IClaim = parse(v)?;
                Ok(Settings::IClaim(s))
            }
            "verification_history" => {
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
                Ok(Settings::VerificationHistory(s))
            }
            other => Err(ConfigError::new(
                "service",
                format!(
                    "unknown service {other:?} (expected one of: {})",
                    SERVICES.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_unknown_keys_and_ranges() {
        let bad = [
            (
                "ip_analysis",
                json!({"api_key": "k", "reject_fraud": 80}),
                "settings.reject_fraud",
            ),
            (
                "ip_analysis",
                json!({"api_key": "k", "sync_timeout_s": 9}),
                "settings.sync_timeout_s",
            ),
            (
                "ip_analysis",
                json!({"api_key": "k", "reject_fraud_score_gte": 101}),
                "settings.reject_fraud_score_gte",
            ),
            ("ip_analysis", json!({"api_key": 7}), "settings"),
            (
                "phone_analysis",
                json!({"api_key": "k", "async_timeout_s": 0}),
                "settings.async_timeout_s",
            ),
            ("iclaim", json!({"account_id": "a", "x": 1}), "settings"),
            (
                "verification_history",
                json!({"signature_enabled": true, "signature_template": "x"}),
                "settings.signature_template",
            ),
            (
                "verification_history",
                json!({"sms_enabled": true}),
                "settings.phone_field",
            ),
            ("whois", json!({}), "service"),
        ];
        for (svc, v, setting) in bad {
            let e = Settings::parse(svc, &v).unwrap_err();
            assert_eq!(e.setting, setting, "{svc} {v}: {e}");
        }
        assert!(Settings::parse(
            "ip_analysis",
            &json!({"api_key": "k", "reject_mobile": "not_mobile", "sync_timeout_s": 5})
        )
        .is_ok());
        assert!(Settings::parse("iclaim", &json!({"account_id": "a", "api_token": "t"})).is_ok());
        // credentials may come later (an admin sets them): saved, and named as missing
        let no_key =
            Settings::parse("ip_analysis", &json!({"reject_fraud_score_gte": 80})).unwrap();
        assert_eq!(no_key.missing_credential(), Some("api_key"));
        let half = Settings::parse("iclaim", &json!({"account_id": "a"})).unwrap();
        assert_eq!(half.missing_credential(), Some("api_token"));
        assert_eq!(
            Settings::parse("phone_analysis", &json!({"api_key": "k"}))
                .unwrap()
                .missing_credential(),
            None
        );
    }
}
