//! iClaim (docs/reference/settings.md "iClaim"): its settings, the session id it
//! claims, the lead fields it sends to match, and the consent evidence an
//! answer carries.

use super::answer::{flag, num, text};
use super::{parse, Service, Verdict};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IClaim {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub api_token: String,
    #[serde(default = "session_field")]
    pub session_id_field: String,
    /// TrustedForm v4 Insights: properties of the certificate, each a
    /// reject criterion (issue 26).
    #[serde(default)]
    pub insights: Option<Insights>,
    /// Page scans: wording the page must hold, and must not.
    #[serde(default)]
    pub scans: Option<Scans>,
    /// Verify: the consent language and one-to-one consent to this seller.
    #[serde(default)]
    pub verify: Option<Verify>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Insights {
    /// Reject a certificate older than this (the vendor's `age_seconds`).
    #[serde(default)]
    pub max_age_seconds: Option<i64>,
    /// Reject when the vendor detected a bot (`bot_detected`).
    #[serde(default)]
    pub reject_bot_detected: bool,
    /// Reject a consumer who spent less time on the page (`seconds_on_page`).
    #[serde(default)]
    pub min_seconds_on_page: Option<i64>,
    /// Reject unless the form was typed in (`form_input_method` has `typing`).
    #[serde(default)]
    pub require_typing: bool,
    /// Reject a certificate of a page on another domain (`domain`; a
    /// subdomain of an allowed one is allowed).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// More properties to ask for, for conditions to read (`iclaim.<name>`).
    #[serde(default)]
    pub properties: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scans {
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub forbidden: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// The seller the consent must name, one-to-one.
    #[serde(default)]
    pub advertiser_name: Option<String>,
    #[serde(default)]
    pub opt_in_types_allowed: Vec<String>,
    #[serde(default)]
    pub min_font_size_px: Option<u32>,
    #[serde(default)]
    pub min_contrast_ratio: Option<f64>,
}

/// The properties a criterion of `Insights` reads.
const CRITERIA_PROPERTIES: &[&str] = &[
    "age_seconds",
    "bot_detected",
    "seconds_on_page",
    "form_input_method",
    "domain",
];

/// The opt-in types TrustedForm documents.
const OPT_IN_TYPES: &[&str] = &["manual", "pre-selected", "non-interactive"];

fn session_field() -> String {
    "iClaimSessionId".into()
}

impl IClaim {
    pub(super) fn parse(v: &Value) -> Result<IClaim, ConfigError> {
        let s: IClaim = parse(v)?;
        if let Some(i) = &s.insights {
            for (name, n) in [
                ("max_age_seconds", i.max_age_seconds),
                ("min_seconds_on_page", i.min_seconds_on_page),
            ] {
                if n.is_some_and(|n| n < 0) {
                    return Err(ConfigError::new(
                        format!("settings.insights.{name}"),
                        "must not be negative",
                    ));
                }
            }
            if i.properties
                .iter()
                .any(|p| p.trim().is_empty() || p.len() > 64)
            {
                return Err(ConfigError::new(
                    "settings.insights.properties",
                    "must list property names",
                ));
            }
        }
        if let Some(sc) = &s.scans {
            if sc.required.is_empty() && sc.forbidden.is_empty()
                || sc
                    .required
                    .iter()
                    .chain(&sc.forbidden)
                    .any(|p| p.trim().is_empty())
            {
                return Err(ConfigError::new(
                    "settings.scans",
                    "must list required or forbidden phrases, none empty",
                ));
            }
        }
        if let Some(v) = &s.verify {
            if let Some(t) = v
                .opt_in_types_allowed
                .iter()
                .find(|t| !OPT_IN_TYPES.contains(&t.as_str()))
            {
                return Err(ConfigError::new(
                    "settings.verify.opt_in_types_allowed",
                    format!(
                        "unknown opt-in type {t:?} (expected {})",
                        OPT_IN_TYPES.join(", ")
                    ),
                ));
            }
            if v.min_contrast_ratio
                .is_some_and(|r| !(1.0..=21.0).contains(&r))
            {
                return Err(ConfigError::new(
                    "settings.verify.min_contrast_ratio",
                    "must be from 1 to 21",
                ));
            }
        }
        Ok(s)
    }

    /// What the claim asks of the vendor besides retain and match_lead, in
    /// TrustedForm v4's request shape: `insights` (properties, scans) and
    /// `verify`.
    pub fn request_extras(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        let mut insights = Map::new();
        if let Some(i) = &self.insights {
            let mut props: Vec<String> =
                CRITERIA_PROPERTIES.iter().map(|p| p.to_string()).collect();
            for p in &i.properties {
                if !props.contains(p) {
                    props.push(p.clone());
                }
            }
            insights.insert("properties".into(), json!(props));
        }
        if let Some(sc) = &self.scans {
            insights.insert(
                "scans".into(),
                json!({"required": sc.required, "forbidden": sc.forbidden}),
            );
        }
        if !insights.is_empty() {
            extra.insert("insights".into(), Value::Object(insights));
        }
        if let Some(v) = &self.verify {
            let mut verify = Map::new();
            if let Some(a) = &v.advertiser_name {
                verify.insert("advertiser_name".into(), a.clone().into());
            }
            if !v.opt_in_types_allowed.is_empty() {
                verify.insert("opt_in_types_allowed".into(), json!(v.opt_in_types_allowed));
            }
            if let Some(f) = v.min_font_size_px {
                verify.insert("min_font_size_px_required".into(), f.into());
            }
            if let Some(r) = v.min_contrast_ratio {
                verify.insert("min_contrast_ratio_required".into(), r.into());
            }
            extra.insert("verify".into(), Value::Object(verify));
        }
        extra
    }

    /// The first of this rule's own criteria that the answer fails, named
    /// by its setting: verify, then scans, then each insight.
    fn failed_criterion(&self, data: &Value) -> Option<String> {
        if self.verify.is_some() {
            if let Some(r) = data.pointer("/verify/result") {
                if r.get("success").and_then(Value::as_bool) == Some(false) {
                    let failed: Vec<&str> = r
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, v)| *k != "success" && v.as_bool() == Some(false))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    return Some(format!(
                        "consent verification failed (verify: {})",
                        if failed.is_empty() {
                            "not successful".into()
                        } else {
                            failed.join(", ")
                        }
                    ));
                }
            }
        }
        if let Some(sc) = &self.scans {
            if let Some(r) = data.pointer("/insights/scans/result") {
                let list = |p: &str| -> Vec<String> {
                    r.pointer(p)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let missing = list("/required/not_found");
                let found = list("/forbidden/found");
                let failed = r.get("success").and_then(Value::as_bool) == Some(false);
                if failed || !missing.is_empty() || !found.is_empty() {
                    let mut why = Vec::new();
                    if !missing.is_empty() {
                        why.push(format!("required not found: {}", missing.join(", ")));
                    }
                    if !found.is_empty() {
                        why.push(format!("forbidden found: {}", found.join(", ")));
                    }
                    let _ = sc;
                    return Some(format!(
                        "page scans failed (scans: {})",
                        if why.is_empty() {
                            "not successful".into()
                        } else {
                            why.join("; ")
                        }
                    ));
                }
            }
        }
        let i = self.insights.as_ref()?;
        let p = data.pointer("/insights/properties")?;
        if let (Some(max), Some(age)) = (i.max_age_seconds, num(p, "age_seconds")) {
            if age > max {
                return Some(format!(
                    "certificate is {age} s old (insights.max_age_seconds {max})"
                ));
            }
        }
        if i.reject_bot_detected && flag(p, "bot_detected") == Some(true) {
            return Some("a bot filled the form (insights.reject_bot_detected)".into());
        }
        if let (Some(min), Some(secs)) = (i.min_seconds_on_page, num(p, "seconds_on_page")) {
            if secs < min {
                return Some(format!(
                    "{secs} s on the page (insights.min_seconds_on_page {min})"
                ));
            }
        }
        if i.require_typing {
            let typed = p
                .get("form_input_method")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|m| m.as_str() == Some("typing")));
            if !typed {
                return Some("the form was not typed in (insights.require_typing)".into());
            }
        }
        if !i.allowed_domains.is_empty() {
            let domain = text(p, "domain").unwrap_or_default().to_ascii_lowercase();
            let allowed = i.allowed_domains.iter().any(|a| {
                let a = a.trim().to_ascii_lowercase();
                domain == a || domain.ends_with(&format!(".{a}"))
            });
            if !allowed {
                return Some(format!(
                    "the page's domain {domain:?} is not allowed (insights.allowed_domains)"
                ));
            }
        }
        None
    }
}

impl Service for IClaim {
    fn credentials(&self) -> Vec<&str> {
        vec![&self.api_token]
    }

    fn missing_credential(&self) -> Option<&'static str> {
        if self.account_id.trim().is_empty() {
            Some("account_id")
        } else if self.api_token.trim().is_empty() {
            Some("api_token")
        } else {
            None
        }
    }

    fn lookup_field(&self) -> Option<&str> {
        Some(&self.session_id_field)
    }

    fn lookup_key(
        &self,
        session_id: String,
        _text: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        Some((session_id.clone(), session_id))
    }

    fn call_fields(&self) -> Vec<&str> {
        vec!["email", "phone", "homePhone", "cellPhone"]
    }

    fn verdict(&self, data: &Value) -> Verdict {
        // a criterion of this rule that failed is named first, whatever the
        // outcome (the vendor answers `failure` when a scan or verify fails)
        let own = self
            .failed_criterion(data)
            .map(|why| format!("iclaim: {why}"));
        Verdict {
            reject: own.or_else(|| match text(data, "outcome").as_deref() {
                Some("success") => None,
                _ => Some(format!(
                    "iclaim: consent certificate not claimed ({})",
                    text(data, "reason").unwrap_or_else(|| "no reason given".into())
                )),
            }),
            ..Verdict::default()
        }
    }

    /// The answer with each insight property, and the scans' and verify's
    /// success, also at its top level: conditions read `iclaim.bot_detected`,
    /// `iclaim.age_seconds`, `iclaim.scans_success`, `iclaim.verify_success`.
    fn condition_view(&self, data: &Value) -> Value {
        let mut view = data.clone();
        let Some(top) = view.as_object_mut() else {
            return view;
        };
        if let Some(props) = data
            .pointer("/insights/properties")
            .and_then(Value::as_object)
        {
            for (k, v) in props {
                top.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for (name, pointer) in [
            ("scans_success", "/insights/scans/result/success"),
            ("verify_success", "/verify/result/success"),
        ] {
            if let Some(v) = data.pointer(pointer) {
                top.entry(name).or_insert_with(|| v.clone());
            }
        }
        view
    }
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
