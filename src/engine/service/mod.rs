//! One module per service: each owns its settings and their validation, the
//! lookup key and the lead fields it sends, the verdict on an answer, and
//! the credentials hidden from logs. `Settings` is the one place that
//! dispatches on the service; the vendors' HTTP protocols belong to the
//! adapters (`iclear-services`).

mod answer;
pub mod iclaim;
pub mod ip_analysis;
pub mod phone_analysis;
pub mod verification_history;

pub use iclaim::IClaim;
pub use ip_analysis::{IpAddToList, IpAnalysis, MobileReject};
pub use phone_analysis::{FlagWeights, PhoneAnalysis, PhoneCriteria};
pub use verification_history::{Combined, VerificationHistory};

use crate::envelope::value_text;
use crate::error::ConfigError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const SERVICES: &[&str] = &[
    "ip_analysis",
    "phone_analysis",
    "iclaim",
    "verification_history",
];

/// A global rule's typed `settings`: unknown keys and out-of-range values
/// are refused when the rule is saved.
#[derive(Debug, Clone)]
pub enum Settings {
    IpAnalysis(IpAnalysis),
    PhoneAnalysis(PhoneAnalysis),
    IClaim(IClaim),
    VerificationHistory(VerificationHistory),
}

/// What the pipeline asks of every service. The defaults are a service
/// with no vendor lookup (Verification History reads Postgres).
pub(crate) trait Service {
    /// The secrets to hide wherever a request is logged.
    fn credentials(&self) -> Vec<&str> {
        Vec::new()
    }

    /// The first credential the service needs that is not set.
    fn missing_credential(&self) -> Option<&'static str> {
        None
    }

    /// The lead field that holds what is looked up.
    fn lookup_field(&self) -> Option<&str> {
        None
    }

    /// The answer as conditions and set_fields_from_service read it
    /// (`<service>.<key>`): the answer itself, unless a service lifts
    /// nested values to its top level.
    fn condition_view(&self, data: &Value) -> Value {
        data.clone()
    }

    /// The value sent and the cache key, from the lookup field's trimmed,
    /// non-empty `value`; `text` reads any other lead field.
    fn lookup_key(
        &self,
        _value: String,
        _text: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        None
    }

    /// The other lead fields the adapter sends.
    fn call_fields(&self) -> Vec<&str> {
        Vec::new()
    }

    /// What an answer means under the settings.
    fn verdict(&self, _answer: &Value) -> Verdict {
        Verdict::default()
    }

    /// The lists the settings name (checked to exist when saved).
    fn list_ids(&self) -> Vec<i64> {
        Vec::new()
    }

    /// The "Advanced Settings" and `cache_days` of a cached vendor lookup.
    fn advanced(&self) -> Option<(&Advanced, u32)> {
        None
    }
}

/// What a service's answer means for the lead under the rule's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Why the lead is rejected (None: it passes).
    pub reject: Option<String>,
    /// "Add to PL/DNPL": the lists the lead goes on.
    pub add_to_lists: Vec<i64>,
    pub score: Option<i64>,
    /// What the score is made of (Phone Number Analysis: the vendor's
    /// fraud score and each enabled variable that held).
    pub score_parts: Option<Value>,
}

impl Settings {
    /// Parse and validate the settings of `service`.
    pub fn parse(service: &str, v: &Value) -> Result<Settings, ConfigError> {
        match service {
            "ip_analysis" => IpAnalysis::parse(v).map(Settings::IpAnalysis),
            "phone_analysis" => PhoneAnalysis::parse(v).map(Settings::PhoneAnalysis),
            "iclaim" => IClaim::parse(v).map(Settings::IClaim),
            "verification_history" => {
                VerificationHistory::parse(v).map(Settings::VerificationHistory)
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

    fn service(&self) -> &dyn Service {
        match self {
            Settings::IpAnalysis(s) => s,
            Settings::PhoneAnalysis(s) => s,
            Settings::IClaim(s) => s,
            Settings::VerificationHistory(s) => s,
        }
    }

    /// The first credential this service needs that is not set. Credentials
    /// are set by an admin apart from the settings (README, "Roles and
    /// privileges"), so a rule may exist before its key: it does not call
    /// the vendor then, and logs why.
    pub fn missing_credential(&self) -> Option<&'static str> {
        self.service().missing_credential()
    }

    /// What the lookup is about: the value sent to the vendor and the cache
    /// key. None when the lead lacks the field (the lookup cannot run).
    pub fn lookup_key(&self, fields: &Map<String, Value>) -> Option<(String, String)> {
        let text = |f: &str| {
            fields
                .get(f)
                .and_then(value_text)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let service = self.service();
        let value = text(service.lookup_field()?)?;
        service
            .lookup_key(value, &text)
            .map(|(value, key)| (value, crate::keys::stored_key(key)))
    }

    /// The cache key of an already extracted lookup value (an async job
    /// keeps the value, not the lead); None for a service without a cache.
    pub fn key_of_value(&self, value: &str) -> Option<(String, String)> {
        self.advanced()?;
        let mut fields = Map::new();
        fields.insert(
            self.service().lookup_field()?.to_string(),
            Value::String(value.to_string()),
        );
        self.lookup_key(&fields)
    }

    /// The lead fields an adapter sends besides the key (kept in an async
    /// job instead of the whole lead body).
    pub fn call_fields(&self, fields: &Map<String, Value>) -> Map<String, Value> {
        self.service()
            .call_fields()
            .into_iter()
            .filter_map(|n| fields.get(n).map(|v| (n.to_string(), v.clone())))
            .collect()
    }

    /// Evaluate a vendor answer. Each enabled criterion is checked on its
    /// own and any one that holds rejects (or lists) the lead; the first
    /// that holds is the reason.
    pub fn verdict(&self, answer: &Value) -> Verdict {
        self.service().verdict(answer)
    }

    /// The answer as conditions read it (`Service::condition_view`).
    pub fn condition_view(&self, data: &Value) -> Value {
        self.service().condition_view(data)
    }

    /// Every list id the settings name (checked to exist at INSERT).
    pub fn list_ids(&self) -> Vec<i64> {
        self.service().list_ids()
    }

    /// The "Advanced Settings" and `cache_days` of a cached vendor lookup.
    pub fn advanced(&self) -> Option<(&Advanced, u32)> {
        self.service().advanced()
    }

    /// How long the worker waits for an async lookup.
    pub fn async_timeout_s(&self) -> u8 {
        self.advanced().map_or(5, |(a, _)| a.async_timeout_s)
    }

    pub fn verification_history(&self) -> Option<&VerificationHistory> {
        match self {
            Settings::VerificationHistory(v) => Some(v),
            _ => None,
        }
    }

    /// The request as logged: never a credential, as written or as it
    /// appears percent-encoded in a URL.
    pub fn redact(&self, text: &str) -> String {
        self.service()
            .credentials()
            .into_iter()
            .filter(|s| s.len() >= 3)
            .flat_map(|s| [percent_encoded(s), s.to_string()])
            .fold(text.to_string(), |t, s| t.replace(&s, "***"))
    }
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

const ADVANCED: &[&str] = &[
    "local_only",
    "local_fail_run_async",
    "sync_timeout_s",
    "async_timeout_s",
    "after_timeout_run_async",
];

fn check_advanced(a: &Advanced) -> Result<(), ConfigError> {
    range("settings.sync_timeout_s", a.sync_timeout_s.into(), 1, 5)?;
    range("settings.async_timeout_s", a.async_timeout_s.into(), 1, 5)
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

fn range(setting: &str, v: u32, lo: u32, hi: u32) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::new(
            setting,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

fn non_empty(setting: &str, s: &str) -> Result<(), ConfigError> {
    if s.trim().is_empty() {
        return Err(ConfigError::new(setting, "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn s(service: &str, v: Value) -> Settings {
        Settings::parse(service, &v).unwrap()
    }

    fn reject(service: &str, settings: Value, data: Value) -> Option<String> {
        s(service, settings).verdict(&data).reject
    }

    #[test]
    fn ip_fraud_score_threshold_zero_never_rejects() {
        let d = json!({"success": true, "fraud_score": 100});
        assert!(reject("ip_analysis", json!({"api_key": "k"}), d.clone()).is_none());
        let st = json!({"api_key": "k", "reject_fraud_score_gte": 75});
        assert!(reject("ip_analysis", st.clone(), json!({"fraud_score": 74})).is_none());
        assert_eq!(
            reject("ip_analysis", st, json!({"fraud_score": 75})).unwrap(),
            "ip_analysis: fraud score 75 >= 75"
        );
    }

    #[test]
    fn ip_mobile_and_countries() {
        let m = json!({"api_key": "k", "reject_mobile": "mobile"});
        let nm = json!({"api_key": "k", "reject_mobile": "not_mobile"});
        assert!(reject("ip_analysis", m.clone(), json!({"mobile": true})).is_some());
        assert!(reject("ip_analysis", m, json!({"mobile": false})).is_none());
        assert!(reject("ip_analysis", nm.clone(), json!({"mobile": false})).is_some());
        assert!(reject("ip_analysis", nm, json!({"mobile": true})).is_none());
        let c = json!({"api_key": "k", "reject_countries": ["CA", "mx"]});
        assert!(reject("ip_analysis", c.clone(), json!({"country_code": "MX"})).is_some());
        assert!(reject("ip_analysis", c, json!({"country_code": "US"})).is_none());
    }

    #[test]
    fn ip_add_to_list_by_score() {
        let st = s(
            "ip_analysis",
            json!({"api_key": "k", "add_to_list": {"fraud_score_gte": 90, "list_ids": [4, 5]}}),
        );
        assert_eq!(
            st.verdict(&json!({"fraud_score": 91})).add_to_lists,
            vec![4, 5]
        );
        assert!(st
            .verdict(&json!({"fraud_score": 89}))
            .add_to_lists
            .is_empty());
    }

    /// Issue 26: iClaim's insights, scans and verify, each a criterion
    /// named by its setting, read from TrustedForm v4's documented answers
    /// (src/services/fixtures).
    #[test]
    fn iclaim_insights_scans_and_verify_reject_by_name() {
        let composite: Value = serde_json::from_str(include_str!(
            "../../services/fixtures/trustedform_v4_docs_example_composite.json"
        ))
        .unwrap();
        let verify_failed: Value = serde_json::from_str(include_str!(
            "../../services/fixtures/trustedform_v4_failure_verify_consent_language.json"
        ))
        .unwrap();
        let scan_failed: Value = serde_json::from_str(include_str!(
            "../../services/fixtures/trustedform_v4_failure_page_scan.json"
        ))
        .unwrap();
        let base = json!({"account_id": "a", "api_token": "t"});
        let with = |extra: Value| {
            let mut v = base.clone();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        // the composite: age 76,287 s, typed, example.com, its scan failed
        let r = |settings: Value, d: &Value| reject("iclaim", settings, d.clone());
        assert!(
            r(base.clone(), &composite).is_none(),
            "no criteria: its outcome is success"
        );
        let why = r(
            with(json!({"insights": {"max_age_seconds": 3600}})),
            &composite,
        )
        .unwrap();
        assert!(why.contains("insights.max_age_seconds"), "{why}");
        assert!(r(
            with(json!({"insights": {"max_age_seconds": 100000}})),
            &composite
        )
        .is_none());
        assert!(r(
            with(
                json!({"insights": {"require_typing": true, "reject_bot_detected": true,
                                              "min_seconds_on_page": 60,
                                              "allowed_domains": ["example.com"]}})
            ),
            &composite
        )
        .is_none());
        let why = r(
            with(json!({"insights": {"allowed_domains": ["acme.com"]}})),
            &composite,
        )
        .unwrap();
        assert!(why.contains("insights.allowed_domains"), "{why}");
        let why = r(
            with(json!({"insights": {"min_seconds_on_page": 2000}})),
            &composite,
        )
        .unwrap();
        assert!(why.contains("insights.min_seconds_on_page"), "{why}");
        let mut bot = composite.clone();
        bot["insights"]["properties"]["bot_detected"] = true.into();
        let why = r(
            with(json!({"insights": {"reject_bot_detected": true}})),
            &bot,
        )
        .unwrap();
        assert!(why.contains("insights.reject_bot_detected"), "{why}");
        let mut pasted = composite.clone();
        pasted["insights"]["properties"]["form_input_method"] = json!(["paste"]);
        let why = r(with(json!({"insights": {"require_typing": true}})), &pasted).unwrap();
        assert!(why.contains("insights.require_typing"), "{why}");
        // scans: the composite's required "offer" was not found
        let why = r(with(json!({"scans": {"required": ["offer"]}})), &composite).unwrap();
        assert!(why.contains("scans") && why.contains("offer"), "{why}");
        let why = r(with(json!({"scans": {"required": ["x"]}})), &scan_failed).unwrap();
        assert!(why.contains("make a claim on Production"), "{why}");
        // verify: the vendor's failure, named
        let why = r(
            with(json!({"verify": {"advertiser_name": "Acme"}})),
            &verify_failed,
        )
        .unwrap();
        assert!(
            why.contains("verify") && why.contains("language_approved"),
            "{why}"
        );
        // without the setting, the vendor's failure is a failed claim
        let why = r(base.clone(), &verify_failed).unwrap();
        assert!(why.contains("not claimed"), "{why}");
        // conditions read the properties and results at the top level
        let view = s("iclaim", base.clone()).condition_view(&composite);
        assert_eq!(view["bot_detected"], false);
        assert_eq!(view["age_seconds"], 76287);
        assert_eq!(view["scans_success"], false);
        assert_eq!(view["verify_success"], true);
        // settings checked, naming the key
        for (bad, key) in [
            (
                json!({"insights": {"max_age_seconds": -1}}),
                "settings.insights.max_age_seconds",
            ),
            (json!({"scans": {}}), "settings.scans"),
            (
                json!({"verify": {"opt_in_types_allowed": ["shouted"]}}),
                "settings.verify.opt_in_types_allowed",
            ),
            (
                json!({"verify": {"min_contrast_ratio": 40}}),
                "settings.verify.min_contrast_ratio",
            ),
        ] {
            let e = Settings::parse("iclaim", &with(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
        // the request, in TrustedForm v4's shape
        let Settings::IClaim(ic) = s(
            "iclaim",
            with(json!({
            "insights": {"max_age_seconds": 60, "properties": ["page_url"]},
            "scans": {"required": ["home security system"], "forbidden": ["free"]},
            "verify": {"advertiser_name": "Acme Inc.", "min_font_size_px": 16, "min_contrast_ratio": 7,
                       "opt_in_types_allowed": ["manual"]}})),
        ) else {
            unreachable!()
        };
        let extra = Value::Object(ic.request_extras());
        assert_eq!(extra["insights"]["scans"]["forbidden"], json!(["free"]));
        assert!(extra["insights"]["properties"]
            .as_array()
            .unwrap()
            .contains(&json!("page_url")));
        assert!(extra["insights"]["properties"]
            .as_array()
            .unwrap()
            .contains(&json!("bot_detected")));
        assert_eq!(extra["verify"]["min_font_size_px_required"], 16);
        assert_eq!(extra["verify"]["min_contrast_ratio_required"], 7.0);
    }

    /// Issue 26: the compliance flags of IPQS's phone answer, each its own
    /// criterion named in the reason (whatever the score), and under "Add
    /// to PL/DNPL", so a litigator's number goes on the DNPL. The real
    /// answer of the fixtures (all false) rejects on none.
    #[test]
    fn phone_compliance_flags_reject_and_list_by_name() {
        for (setting, answer, named) in [
            ("do_not_call", json!({"do_not_call": true}), "do_not_call"),
            (
                "litigator",
                json!({"tcpa_blacklist": true}),
                "tcpa_blacklist",
            ),
            ("leaked", json!({"leaked": true}), "leaked"),
            ("sms_pumping", json!({"sms_pumping": true}), "sms_pumping"),
            (
                "recently_recycled",
                json!({"number_recycling": {"recently_recycled": true}}),
                "number_recycling.recently_recycled",
            ),
        ] {
            let mut on = json!({"api_key": "k"});
            on[format!("reject_{setting}")] = true.into();
            let why = reject("phone_analysis", on.clone(), answer.clone())
                .unwrap_or_else(|| panic!("{setting}"));
            assert!(why.contains(named), "{why}");
            // off: no reject; on, with the flag false: no reject
            assert!(reject("phone_analysis", json!({"api_key": "k"}), answer.clone()).is_none());
            let fixture = json!({"do_not_call": false, "tcpa_blacklist": false, "leaked": false,
                                 "number_recycling": {"recently_recycled": null}});
            assert!(reject("phone_analysis", on, fixture).is_none(), "{setting}");
            let mut list = json!({"api_key": "k", "add_to_list": {"list_ids": [7]}});
            list["add_to_list"][setting] = true.into();
            assert_eq!(
                s("phone_analysis", list).verdict(&answer).add_to_lists,
                vec![7]
            );
        }
    }

    /// Seed 004: each enabled variable that holds adds its weight (100 by
    /// default) to the vendor's fraud score, capped at 100; the total meets
    /// the threshold; threshold 0 never rejects.
    #[test]
    fn phone_each_enabled_flag_adds_to_the_score_on_the_risky_value_only() {
        for (key, setting, risky) in [
            ("valid", "reject_invalid", false),
            ("active", "reject_inactive", false),
            ("prepaid", "reject_prepaid", true),
            ("VOIP", "reject_voip", true),
            ("spammer", "reject_spammer", true),
        ] {
            let mut on = json!({"api_key": "k", "reject_fraud_score_gte": 90});
            on[setting] = true.into();
            let mut d = json!({"success": true, "fraud_score": 10});
            d[key] = risky.into();
            assert!(
                reject("phone_analysis", on.clone(), d.clone()).is_some(),
                "{setting}"
            );
            // threshold 0: never reject
            let mut never = on.clone();
            never["reject_fraud_score_gte"] = 0.into();
            assert!(
                reject("phone_analysis", never, d.clone()).is_none(),
                "{setting}"
            );
            // disabled: the risky value adds nothing
            assert!(reject(
                "phone_analysis",
                json!({"api_key": "k", "reject_fraud_score_gte": 90}),
                d
            )
            .is_none());
            let mut safe = json!({"fraud_score": 10});
            safe[key] = (!risky).into();
            assert!(reject("phone_analysis", on, safe).is_none(), "{setting}");
        }
        // weights: VOIP adds 30 to the vendor's 50 (80 < 90), or to 60 (90)
        let st = s(
            "phone_analysis",
            json!({"api_key": "k", "reject_fraud_score_gte": 90, "reject_voip": true,
                   "flag_weights": {"voip": 30}}),
        );
        let v = st.verdict(&json!({"fraud_score": 50, "VOIP": true}));
        assert!(v.reject.is_none());
        assert_eq!(v.score, Some(80));
        assert_eq!(v.score_parts, Some(json!({"fraud_score": 50, "voip": 30})));
        let v = st.verdict(&json!({"fraud_score": 60, "VOIP": true}));
        assert_eq!(
            v.reject.as_deref(),
            Some("phone_analysis: fraud score 90 >= 90 (voip)")
        );
        // capped at 100
        let v = st.verdict(&json!({"fraud_score": 95, "VOIP": true}));
        assert_eq!(v.score, Some(100));
        assert!(Settings::parse(
            "phone_analysis",
            &json!({"api_key": "k", "flag_weights": {"voip": 101}})
        )
        .is_err_and(|e| e.to_string().contains("settings.flag_weights.voip")));
        assert!(Settings::parse(
            "phone_analysis",
            &json!({"api_key": "k", "flag_weights": {"mobile": 5}})
        )
        .is_err());
    }

    #[test]
    fn phone_lists_of_values() {
        for (setting, key, hit, miss) in [
            ("reject_line_types", "line_type", "Toll Free", "Mobile"),
            ("reject_countries", "country", "CA", "US"),
            ("reject_carriers", "carrier", "Bandwidth", "Verizon"),
            (
                "reject_time_zones",
                "timezone",
                "America/Denver",
                "America/New_York",
            ),
        ] {
            let mut st = json!({"api_key": "k"});
            st[setting] = json!([hit.to_lowercase()]);
            let mut d = json!({});
            d[key] = hit.into();
            assert!(
                reject("phone_analysis", st.clone(), d).is_some(),
                "{setting}"
            );
            let mut d = json!({});
            d[key] = miss.into();
            assert!(reject("phone_analysis", st, d).is_none(), "{setting}");
        }
        let st = json!({"api_key": "k", "reject_fraud_score_gte": 85});
        assert!(reject("phone_analysis", st.clone(), json!({"fraud_score": 85})).is_some());
        assert!(reject("phone_analysis", st, json!({"fraud_score": 84})).is_none());
    }

    #[test]
    fn phone_add_to_list_criteria() {
        let st = s(
            "phone_analysis",
            json!({"api_key": "k", "add_to_list": {"voip": true, "fraud_score_gte": 50,
                                                      "line_types": ["VOIP"], "list_ids": [7]}}),
        );
        assert_eq!(st.verdict(&json!({"VOIP": true})).add_to_lists, vec![7]);
        // the block's own threshold: 0 never lists on the score
        let never = s(
            "phone_analysis",
            json!({"api_key": "k", "add_to_list": {"voip": true, "list_ids": [7]}}),
        );
        assert!(never
            .verdict(&json!({"VOIP": true, "fraud_score": 99}))
            .add_to_lists
            .is_empty());
        assert_eq!(
            st.verdict(&json!({"line_type": "voip"})).add_to_lists,
            vec![7]
        );
        assert!(st
            .verdict(&json!({"VOIP": false, "line_type": "Mobile"}))
            .add_to_lists
            .is_empty());
    }

    #[test]
    fn iclaim_outcomes() {
        let st = json!({"account_id": "a", "api_token": "t"});
        assert!(reject("iclaim", st.clone(), json!({"outcome": "success"})).is_none());
        let r = reject(
            "iclaim",
            st,
            json!({"outcome": "failure", "reason": "certificate expired"}),
        )
        .unwrap();
        assert!(r.contains("certificate expired"), "{r}");
    }

    #[test]
    fn evidence_keeps_only_a_real_expiry() {
        let ok = json!({"outcome": "success", "retain": {"results": {"expires_at": "2031-11-21T00:00:00Z"}}});
        assert_eq!(iclaim::evidence(&ok)["expires_at"], "2031-11-21T00:00:00Z");
        let bad = json!({"outcome": "success", "retain": {"results": {"expires_at": ""}}});
        assert_eq!(iclaim::evidence(&bad)["expires_at"], Value::Null);
    }

    #[test]
    fn keys_and_redaction() {
        let ip = s(
            "ip_analysis",
            json!({"api_key": "SECRETKEY", "strictness": 1}),
        );
        let f = json!({"userIp": " 8.8.8.8 "});
        let (v, k) = ip.lookup_key(f.as_object().unwrap()).unwrap();
        assert_eq!((v.as_str(), k.as_str()), ("8.8.8.8", "8.8.8.8|s1"));
        assert!(ip.lookup_key(&Map::new()).is_none());
        let ph = s("phone_analysis", json!({"api_key": "k", "country": ["us"]}));
        let f = json!({"homePhone": "+1 (555) 010-0199"});
        let (v, k) = ph.lookup_key(f.as_object().unwrap()).unwrap();
        assert_eq!((v.as_str(), k.as_str()), ("15550100199", "15550100199|US"));
        assert_eq!(
            ip.redact("GET http://x/ip/SECRETKEY/8.8.8.8"),
            "GET http://x/ip/***/8.8.8.8"
        );
        let odd = s("ip_analysis", json!({"api_key": "k/y+z"}));
        assert_eq!(odd.redact("http://x/ip/k%2Fy%2Bz/1"), "http://x/ip/***/1");
        // the user agent is part of an IP key
        let ua = s(
            "ip_analysis",
            json!({"api_key": "k", "user_agent_field": "userAgent"}),
        );
        let f = json!({"userIp": "8.8.8.8", "userAgent": "Mozilla/5.0 (iPhone)"});
        let (_, k) = ua.lookup_key(f.as_object().unwrap()).unwrap();
        assert!(
            k.starts_with("8.8.8.8|s0|ua") && k.len() == "8.8.8.8|s0|ua".len() + 8,
            "{k}"
        );
    }

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
