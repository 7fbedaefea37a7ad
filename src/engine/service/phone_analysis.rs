//! Phone Number Analysis (docs/reference/settings.md "Phone Number Analysis"): its
//! settings, its lookup key, and seed 004's overall fraud score and
//! criteria applied to an answer.

use super::answer::{flag, num, one_of, text};
use super::{check_advanced, only_keys, parse, range, Advanced, Service, Verdict, ADVANCED};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_json::{json, Value};

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
    /// Compliance flags (issue 26): each its own criterion, never part of
    /// the fraud score (a number on the do-not-call registry is not a
    /// "more fraudulent" one: it may not be called at all).
    #[serde(default)]
    pub do_not_call: bool,
    #[serde(default)]
    pub litigator: bool,
    #[serde(default)]
    pub leaked: bool,
    #[serde(default)]
    pub sms_pumping: bool,
    #[serde(default)]
    pub recently_recycled: bool,
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
    /// IPQS `do_not_call`: the number is on a do-not-call list.
    #[serde(default)]
    pub reject_do_not_call: bool,
    /// IPQS `tcpa_blacklist`: a known serial TCPA litigator.
    #[serde(default)]
    pub reject_litigator: bool,
    /// IPQS `leaked`: found in a data breach.
    #[serde(default)]
    pub reject_leaked: bool,
    /// IPQS `sms_pumping`: used for SMS pumping (toll fraud).
    #[serde(default)]
    pub reject_sms_pumping: bool,
    /// IPQS `number_recycling.recently_recycled`: reassigned to someone
    /// else, so consent given for it is not this consumer's.
    #[serde(default)]
    pub reject_recently_recycled: bool,
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
    /// holds (docs/reference/settings.md "Phone Number Analysis": the score "is accumulated based on the enabled
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

const KEYS: &[&str] = &[
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
    "reject_do_not_call",
    "reject_litigator",
    "reject_leaked",
    "reject_sms_pumping",
    "reject_recently_recycled",
    "reject_line_types",
    "reject_countries",
    "reject_carriers",
    "reject_time_zones",
    "add_to_list",
    "flag_weights",
];

impl PhoneAnalysis {
    pub(super) fn parse(v: &Value) -> Result<PhoneAnalysis, ConfigError> {
        only_keys(v, &[KEYS, ADVANCED].concat())?;
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
        super::non_empty("settings.phone_field", &s.phone_field)?;
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
        Ok(s)
    }
}

/// Phone numbers are looked up by their digits ("+1 (555) 010-0199" and
/// "15550100199" are one number).
pub fn phone_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Service for PhoneAnalysis {
    fn credentials(&self) -> Vec<&str> {
        vec![&self.api_key]
    }

    fn missing_credential(&self) -> Option<&'static str> {
        self.api_key.trim().is_empty().then_some("api_key")
    }

    fn lookup_field(&self) -> Option<&str> {
        Some(&self.phone_field)
    }

    fn lookup_key(
        &self,
        phone: String,
        _text: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        let d = Some(phone_digits(&phone)).filter(|d| !d.is_empty())?;
        let key = format!("{d}|{}", self.country.join(",").to_uppercase());
        Some((d, key))
    }

    fn verdict(&self, d: &Value) -> Verdict {
        let reject = PhoneCriteria {
            fraud_score_gte: Some(self.reject_fraud_score_gte),
            invalid: self.reject_invalid,
            inactive: self.reject_inactive,
            prepaid: self.reject_prepaid,
            voip: self.reject_voip,
            spammer: self.reject_spammer,
            do_not_call: self.reject_do_not_call,
            litigator: self.reject_litigator,
            leaked: self.reject_leaked,
            sms_pumping: self.reject_sms_pumping,
            recently_recycled: self.reject_recently_recycled,
            line_types: self.reject_line_types.clone(),
            countries: self.reject_countries.clone(),
            carriers: self.reject_carriers.clone(),
            time_zones: self.reject_time_zones.clone(),
            list_ids: Vec::new(),
        };
        let w = &self.flag_weights;
        let add_to_lists = match &self.add_to_list {
            Some(a) if !hits(a, w, d).is_empty() => a.list_ids.clone(),
            _ => Vec::new(),
        };
        let (score, parts) = overall_score(&reject, w, d);
        Verdict {
            reject: hits(&reject, w, d)
                .into_iter()
                .next()
                .map(|r| format!("phone_analysis: {r}")),
            add_to_lists,
            score: Some(score),
            score_parts: Some(parts),
        }
    }

    fn list_ids(&self) -> Vec<i64> {
        self.add_to_list
            .as_ref()
            .map(|a| a.list_ids.clone())
            .unwrap_or_default()
    }

    fn advanced(&self) -> Option<(&Advanced, u32)> {
        Some((&self.advanced, self.cache_days))
    }
}

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

/// The criteria of one block (the reject_* settings or an "Add to PL/DNPL"
/// block) that hold for this answer, as human-readable reasons.
fn hits(c: &PhoneCriteria, w: &FlagWeights, d: &Value) -> Vec<String> {
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
    // compliance flags, each a criterion of its own, named in the reason
    for (on, pointer, what) in [
        (
            c.do_not_call,
            "/do_not_call",
            "on a do-not-call list (do_not_call)",
        ),
        (
            c.litigator,
            "/tcpa_blacklist",
            "a known TCPA litigator (tcpa_blacklist)",
        ),
        (c.leaked, "/leaked", "leaked in a data breach (leaked)"),
        (
            c.sms_pumping,
            "/sms_pumping",
            "used for SMS pumping (sms_pumping)",
        ),
        (
            c.recently_recycled,
            "/number_recycling/recently_recycled",
            "a recently recycled number (number_recycling.recently_recycled)",
        ),
    ] {
        if on && d.pointer(pointer).and_then(Value::as_bool) == Some(true) {
            hits.push(what.to_string());
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
