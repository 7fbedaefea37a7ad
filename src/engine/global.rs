//! Global Rules (docs/settings.md) and what a service's answer means under its
//! settings (seeds 000, 003, 004): pure, so every setting is unit-tested
//! without Postgres or HTTP. The HTTP itself belongs to the adapters.

use crate::envelope::value_text;
use crate::error::ConfigError;
use crate::rule_parts::RuleCaps;
use crate::settings::{
    FlagWeights, IpAnalysis, MobileReject, PhoneAnalysis, PhoneCriteria, Settings,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    Sync,
    Async,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTime {
    BeforeFiltration,
    AfterFiltration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    Ping,
    Post,
    PingAndPost,
}

/// One `iclear.global_rule` row with its service's registry entry.
#[derive(Debug, Clone)]
pub struct GlobalRule {
    pub id: i64,
    pub service: String,
    pub active: bool,
    /// `service.subscription = 'enabled'`
    pub subscribed: bool,
    pub cost: f64,
    pub endpoint: String,
    pub execution: Execution,
    pub lookup_percent: u32,
    pub run_time: RunTime,
    pub run_on: RunOn,
    pub run_on_silent_ping: bool,
    pub reject_on_no_response: bool,
    pub settings: Settings,
    /// The per-rule cap ("a cap on the number of leads processed per global rule").
    pub caps: RuleCaps,
}

#[derive(Deserialize)]
pub struct GlobalRuleDoc {
    id: i64,
    service: String,
    status: String,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    endpoint: Option<String>,
    execution: String,
    lookup_percent: u32,
    run_time: String,
    run_on: String,
    run_on_silent_ping: bool,
    no_response: String,
    settings: Value,
    #[serde(default)]
    daily_limit: Option<i64>,
    #[serde(default)]
    monthly_limit: Option<i64>,
}

fn bad(setting: &str, v: &str) -> ConfigError {
    ConfigError::new(setting, format!("unknown value {v:?}"))
}

impl GlobalRuleDoc {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn build(self) -> Result<GlobalRule, ConfigError> {
        let settings = Settings::parse(&self.service, &self.settings)?;
        let execution = match self.execution.as_str() {
            "sync" => Execution::Sync,
            "async" => Execution::Async,
            "on_demand" => Execution::OnDemand,
            v => return Err(bad("execution", v)),
        };
        if self.lookup_percent > 100 {
            return Err(ConfigError::new(
                "lookup_percent",
                "must be between 0 and 100",
            ));
        }
        Ok(GlobalRule {
            id: self.id,
            active: self.status == "active",
            subscribed: self.subscription.as_deref() != Some("disabled"),
            cost: self.cost.unwrap_or(0.0),
            endpoint: self.endpoint.unwrap_or_default(),
            execution,
            lookup_percent: self.lookup_percent,
            run_time: match self.run_time.as_str() {
                "before_filtration" => RunTime::BeforeFiltration,
                "after_filtration" => RunTime::AfterFiltration,
                v => return Err(bad("run_time", v)),
            },
            run_on: match self.run_on.as_str() {
                "ping" => RunOn::Ping,
                "post" => RunOn::Post,
                "ping_and_post" => RunOn::PingAndPost,
                v => return Err(bad("run_on", v)),
            },
            run_on_silent_ping: self.run_on_silent_ping,
            reject_on_no_response: match self.no_response.as_str() {
                "continue" => false,
                "reject" => true,
                v => return Err(bad("no_response", v)),
            },
            settings,
            caps: RuleCaps {
                daily: self.daily_limit,
                monthly: self.monthly_limit,
                per_source: None,
            },
            service: self.service,
        })
    }
}

/// Phone numbers are looked up by their digits ("+1 (555) 010-0199" and
/// "15550100199" are one number).
pub fn phone_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// What the lookup is about: the value sent to the vendor and the cache key.
/// None when the lead lacks the field (the lookup cannot run).
pub fn lookup_key(settings: &Settings, fields: &Map<String, Value>) -> Option<(String, String)> {
    lookup_key_as_given(settings, fields).map(|(value, key)| (value, crate::facts::stored_key(key)))
}

fn lookup_key_as_given(
    settings: &Settings,
    fields: &Map<String, Value>,
) -> Option<(String, String)> {
    let text = |f: &str| {
        fields
            .get(f)
            .and_then(value_text)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match settings {
        // strictness and the user agent change the vendor's answer (mobile
        // comes from the user agent), so they are part of the key
        Settings::IpAnalysis(s) => text(&s.ip_field).map(|ip| {
            let ua = s.user_agent_field.as_deref().and_then(text).map(|ua| {
                let h = sha2::Sha256::digest(ua.as_bytes());
                format!("|ua{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
            });
            let key = format!("{ip}|s{}{}", s.strictness, ua.unwrap_or_default());
            (ip, key)
        }),
        Settings::PhoneAnalysis(s) => {
            let d = text(&s.phone_field)
                .map(|p| phone_digits(&p))
                .filter(|d| !d.is_empty())?;
            let key = format!("{d}|{}", s.country.join(",").to_uppercase());
            Some((d, key))
        }
        Settings::IClaim(s) => text(&s.session_id_field).map(|id| (id.clone(), id)),
        Settings::VerificationHistory(_) => None,
    }
}

/// The lead fields an adapter sends besides the key (kept in an async job
/// instead of the whole lead body).
pub fn call_fields(settings: &Settings, fields: &Map<String, Value>) -> Map<String, Value> {
    let names: Vec<&str> = match settings {
        Settings::IpAnalysis(s) => s.user_agent_field.iter().map(String::as_str).collect(),
        Settings::IClaim(_) => vec!["email", "phone", "homePhone", "cellPhone"],
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter_map(|n| fields.get(n).map(|v| (n.to_string(), v.clone())))
        .collect()
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

fn num(v: &Value, k: &str) -> Option<i64> {
    let x = v.get(k)?;
    x.as_i64()
        .or_else(|| x.as_f64().map(|f| f.round() as i64))
        .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
}

fn flag(v: &Value, k: &str) -> Option<bool> {
    match v.get(k)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(value_text)
}

fn one_of(list: &[String], v: Option<String>) -> Option<String> {
    let v = v?;
    list.iter()
        .any(|x| x.eq_ignore_ascii_case(v.trim()))
        .then_some(v)
}

/// Evaluate a vendor answer. Each enabled criterion is checked on its own
/// and any one that holds rejects (or lists) the lead; the first that holds
/// is the reason.
pub fn evaluate(settings: &Settings, data: &Value) -> Verdict {
    match settings {
        Settings::IpAnalysis(s) => evaluate_ip(s, data),
        Settings::PhoneAnalysis(s) => evaluate_phone(s, data),
        Settings::IClaim(_) => Verdict {
            reject: match text(data, "outcome").as_deref() {
                Some("success") => None,
                _ => Some(format!(
                    "iclaim: consent certificate not claimed ({})",
                    text(data, "reason").unwrap_or_else(|| "no reason given".into())
                )),
            },
            ..Verdict::default()
        },
        Settings::VerificationHistory(_) => Verdict::default(),
    }
}

fn evaluate_ip(s: &IpAnalysis, d: &Value) -> Verdict {
    let score = num(d, "fraud_score");
    let mut reasons = Vec::new();
    if s.reject_fraud_score_gte > 0 {
        if let Some(sc) = score.filter(|sc| *sc >= s.reject_fraud_score_gte.into()) {
            reasons.push(format!(
                "ip_analysis: fraud score {sc} >= {}",
                s.reject_fraud_score_gte
            ));
        }
    }
    match (s.reject_mobile, flag(d, "mobile")) {
        (Some(MobileReject::Mobile), Some(true)) => {
            reasons.push("ip_analysis: the device is mobile".into())
        }
        (Some(MobileReject::NotMobile), Some(false)) => {
            reasons.push("ip_analysis: the device is not mobile".into())
        }
        _ => {}
    }
    if let Some(c) = one_of(&s.reject_countries, text(d, "country_code")) {
        reasons.push(format!("ip_analysis: IP from rejected country {c}"));
    }
    let add_to_lists = match &s.add_to_list {
        Some(a) => match (a.fraud_score_gte, score) {
            (Some(gte), Some(sc)) if gte > 0 && sc >= gte.into() => a.list_ids.clone(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    Verdict {
        reject: reasons.into_iter().next(),
        add_to_lists,
        score,
        score_parts: None,
    }
}

/// The phone criteria (reject_* settings or an "Add to PL/DNPL" block) that
/// hold for this answer, as human-readable reasons.
/// Seed 004's overall fraud score for one block of criteria (reject, or
/// Add to PL/DNPL): the vendor's `fraud_score` plus the weight of each of the
/// block's enabled variables that holds, at most 100, with its parts. Line
/// types, countries, carriers and time zones are separate criteria.
fn overall_score(c: &PhoneCriteria, w: &FlagWeights, d: &Value) -> (i64, Value) {
    let base = num(d, "fraud_score").unwrap_or(0).clamp(0, 100);
    let mut parts = json!({"fraud_score": base});
    let mut total = base;
    // each variable holds on its risky value (docs/architecture.md "Services and the worker")
    for (on, key, risky, name, weight) in [
        (c.invalid, "valid", false, "invalid", w.invalid),
        (c.inactive, "active", false, "inactive", w.inactive),
        (c.prepaid, "prepaid", true, "prepaid", w.prepaid),
        (c.voip, "VOIP", true, "voip", w.voip),
        (c.spammer, "spammer", true, "spammer", w.spammer),
    ] {
        if on && flag(d, key) == Some(risky) {
            parts[name] = weight.into();
            total += i64::from(weight);
        }
    }
    (total.min(100), parts)
}

fn phone_hits(c: &PhoneCriteria, w: &FlagWeights, d: &Value) -> Vec<String> {
    let mut hits = Vec::new();
    let (score, parts) = overall_score(c, w, d);
    // threshold 0: "never reject the lead"
    if let Some(gte) = c.fraud_score_gte.filter(|g| *g > 0) {
        if score >= gte.into() {
            let held: Vec<&str> = parts
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.as_str())
                .filter(|k| *k != "fraud_score")
                .collect();
            hits.push(if held.is_empty() {
                format!("fraud score {score} >= {gte}")
            } else {
                format!("fraud score {score} >= {gte} ({})", held.join(", "))
            });
        }
    }
    for (list, key, what) in [
        (&c.line_types, "line_type", "line type"),
        (&c.countries, "country", "country"),
        (&c.carriers, "carrier", "carrier"),
        (&c.time_zones, "timezone", "time zone"),
    ] {
        if let Some(v) = one_of(list, text(d, key)) {
            hits.push(format!("{what} {v}"));
        }
    }
    hits
}

fn evaluate_phone(s: &PhoneAnalysis, d: &Value) -> Verdict {
    let reject = PhoneCriteria {
        fraud_score_gte: Some(s.reject_fraud_score_gte),
        invalid: s.reject_invalid,
        inactive: s.reject_inactive,
        prepaid: s.reject_prepaid,
        voip: s.reject_voip,
        spammer: s.reject_spammer,
        line_types: s.reject_line_types.clone(),
        countries: s.reject_countries.clone(),
        carriers: s.reject_carriers.clone(),
        time_zones: s.reject_time_zones.clone(),
        list_ids: Vec::new(),
    };
    let w = &s.flag_weights;
    let add_to_lists = match &s.add_to_list {
        Some(a) if !phone_hits(a, w, d).is_empty() => a.list_ids.clone(),
        _ => Vec::new(),
    };
    let (score, parts) = overall_score(&reject, w, d);
    Verdict {
        reject: phone_hits(&reject, w, d)
            .into_iter()
            .next()
            .map(|r| format!("phone_analysis: {r}")),
        add_to_lists,
        score: Some(score),
        score_parts: Some(parts),
    }
}

/// Every list id a rule's settings name (checked to exist at INSERT).
pub fn settings_list_ids(settings: &Settings) -> Vec<i64> {
    match settings {
        Settings::IpAnalysis(s) => s
            .add_to_list
            .as_ref()
            .map(|a| a.list_ids.clone())
            .unwrap_or_default(),
        Settings::PhoneAnalysis(s) => s
            .add_to_list
            .as_ref()
            .map(|a| a.list_ids.clone())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The request as logged: never a credential.
pub fn redact(text: &str, settings: &Settings) -> String {
    let secrets: Vec<&str> = match settings {
        Settings::IpAnalysis(s) => vec![s.api_key.as_str()],
        Settings::PhoneAnalysis(s) => vec![s.api_key.as_str()],
        Settings::IClaim(s) => vec![s.api_token.as_str()],
        Settings::VerificationHistory(_) => Vec::new(),
    };
    // the key as written and as it appears percent-encoded in a URL
    secrets
        .into_iter()
        .filter(|s| s.len() >= 3)
        .flat_map(|s| [percent_encoded(s), s.to_string()])
        .fold(text.to_string(), |t, s| t.replace(&s, "***"))
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

/// The consent evidence an iClaim answer carries. An `expires_at` that is
/// not an RFC 3339 time is dropped (the whole answer is kept as evidence).
pub fn evidence(data: &Value) -> Value {
    let expires = data
        .pointer("/retain/results/expires_at")
        .and_then(Value::as_str)
        .filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    json!({
        "outcome": text(data, "outcome").unwrap_or_else(|| "error".into()),
        "expires_at": expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(service: &str, v: Value) -> Settings {
        Settings::parse(service, &v).unwrap()
    }

    fn reject(service: &str, settings: Value, data: Value) -> Option<String> {
        evaluate(&s(service, settings), &data).reject
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
            evaluate(&st, &json!({"fraud_score": 91})).add_to_lists,
            vec![4, 5]
        );
        assert!(evaluate(&st, &json!({"fraud_score": 89}))
            .add_to_lists
            .is_empty());
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
        let v = evaluate(&st, &json!({"fraud_score": 50, "VOIP": true}));
        assert!(v.reject.is_none());
        assert_eq!(v.score, Some(80));
        assert_eq!(v.score_parts, Some(json!({"fraud_score": 50, "voip": 30})));
        let v = evaluate(&st, &json!({"fraud_score": 60, "VOIP": true}));
        assert_eq!(
            v.reject.as_deref(),
            Some("phone_analysis: fraud score 90 >= 90 (voip)")
        );
        // capped at 100
        let v = evaluate(&st, &json!({"fraud_score": 95, "VOIP": true}));
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
        assert_eq!(evaluate(&st, &json!({"VOIP": true})).add_to_lists, vec![7]);
        // the block's own threshold: 0 never lists on the score
        let never = s(
            "phone_analysis",
            json!({"api_key": "k", "add_to_list": {"voip": true, "list_ids": [7]}}),
        );
        assert!(evaluate(&never, &json!({"VOIP": true, "fraud_score": 99}))
            .add_to_lists
            .is_empty());
        assert_eq!(
            evaluate(&st, &json!({"line_type": "voip"})).add_to_lists,
            vec![7]
        );
        assert!(
            evaluate(&st, &json!({"VOIP": false, "line_type": "Mobile"}))
                .add_to_lists
                .is_empty()
        );
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
        assert_eq!(evidence(&ok)["expires_at"], "2031-11-21T00:00:00Z");
        let bad = json!({"outcome": "success", "retain": {"results": {"expires_at": ""}}});
        assert_eq!(evidence(&bad)["expires_at"], Value::Null);
    }

    #[test]
    fn keys_and_redaction() {
        let ip = s(
            "ip_analysis",
            json!({"api_key": "SECRETKEY", "strictness": 1}),
        );
        let f = json!({"userIp": " 8.8.8.8 "});
        let (v, k) = lookup_key(&ip, f.as_object().unwrap()).unwrap();
        assert_eq!((v.as_str(), k.as_str()), ("8.8.8.8", "8.8.8.8|s1"));
        assert!(lookup_key(&ip, &Map::new()).is_none());
        let ph = s("phone_analysis", json!({"api_key": "k", "country": ["us"]}));
        let f = json!({"homePhone": "+1 (555) 010-0199"});
        let (v, k) = lookup_key(&ph, f.as_object().unwrap()).unwrap();
        assert_eq!((v.as_str(), k.as_str()), ("15550100199", "15550100199|US"));
        assert_eq!(
            redact("GET http://x/ip/SECRETKEY/8.8.8.8", &ip),
            "GET http://x/ip/***/8.8.8.8"
        );
        let odd = s("ip_analysis", json!({"api_key": "k/y+z"}));
        assert_eq!(redact("http://x/ip/k%2Fy%2Bz/1", &odd), "http://x/ip/***/1");
        // the user agent is part of an IP key
        let ua = s(
            "ip_analysis",
            json!({"api_key": "k", "user_agent_field": "userAgent"}),
        );
        let f = json!({"userIp": "8.8.8.8", "userAgent": "Mozilla/5.0 (iPhone)"});
        let (_, k) = lookup_key(&ua, f.as_object().unwrap()).unwrap();
        assert!(
            k.starts_with("8.8.8.8|s0|ua") && k.len() == "8.8.8.8|s0|ua".len() + 8,
            "{k}"
        );
    }
}
