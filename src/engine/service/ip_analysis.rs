//! IP Analysis (docs/reference/settings.md "IP Analysis"): its settings, its lookup
//! key, the fields it sends, and what an answer means under the settings.

use super::answer::{flag, num, one_of, text};
use super::{check_advanced, only_keys, parse, range, Advanced, Service, Verdict, ADVANCED};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

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
    /// The lead's email and phone, sent as IPQS's transaction-scoring
    /// `billing_email` and `billing_phone` (seed 003: the score uses "IP
    /// address or device, email address, and phone number"); "" sends none.
    #[serde(default = "email_field")]
    pub email_field: String,
    #[serde(default = "phone_field")]
    pub phone_field: String,
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

fn email_field() -> String {
    "email".into()
}

fn phone_field() -> String {
    "homePhone".into()
}

const KEYS: &[&str] = &[
    "api_key",
    "ip_field",
    "user_agent_field",
    "email_field",
    "phone_field",
    "strictness",
    "cache_days",
    "reject_fraud_score_gte",
    "reject_mobile",
    "reject_countries",
    "add_to_list",
];

impl IpAnalysis {
    pub(super) fn parse(v: &Value) -> Result<IpAnalysis, ConfigError> {
        only_keys(v, &[KEYS, ADVANCED].concat())?;
        let s: IpAnalysis = parse(v)?;
        super::non_empty("settings.ip_field", &s.ip_field)?;
        range("settings.strictness", s.strictness.into(), 0, 3)?;
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

impl Service for IpAnalysis {
    fn credentials(&self) -> Vec<&str> {
        vec![&self.api_key]
    }

    fn missing_credential(&self) -> Option<&'static str> {
        self.api_key.trim().is_empty().then_some("api_key")
    }

    fn lookup_field(&self) -> Option<&str> {
        Some(&self.ip_field)
    }

    // strictness and the user agent change the vendor's answer (mobile
    // comes from the user agent), so they are part of the key
    fn lookup_key(
        &self,
        ip: String,
        text: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        // (the email and phone sent are not: a cached answer of an IP serves
        // the leads of other people behind it, as the seed's cache means to;
        // docs/reference/settings.md "IP Analysis")
        let ua = self.user_agent_field.as_deref().and_then(text).map(|ua| {
            let h = sha2::Sha256::digest(ua.as_bytes());
            format!("|ua{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
        });
        let key = format!("{ip}|s{}{}", self.strictness, ua.unwrap_or_default());
        Some((ip, key))
    }

    fn call_fields(&self) -> Vec<&str> {
        self.user_agent_field
            .iter()
            .map(String::as_str)
            .chain([self.email_field.as_str(), self.phone_field.as_str()])
            .filter(|f| !f.is_empty())
            .collect()
    }

    fn verdict(&self, d: &Value) -> Verdict {
        let score = num(d, "fraud_score");
        let mut reasons = Vec::new();
        if self.reject_fraud_score_gte > 0 {
            if let Some(sc) = score.filter(|sc| *sc >= self.reject_fraud_score_gte.into()) {
                reasons.push(format!(
                    "ip_analysis: fraud score {sc} >= {}",
                    self.reject_fraud_score_gte
                ));
            }
        }
        match (self.reject_mobile, flag(d, "mobile")) {
            (Some(MobileReject::Mobile), Some(true)) => {
                reasons.push("ip_analysis: the device is mobile".into())
            }
            (Some(MobileReject::NotMobile), Some(false)) => {
                reasons.push("ip_analysis: the device is not mobile".into())
            }
            _ => {}
        }
        if let Some(c) = one_of(&self.reject_countries, text(d, "country_code")) {
            reasons.push(format!("ip_analysis: IP from rejected country {c}"));
        }
        let add_to_lists = match &self.add_to_list {
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
