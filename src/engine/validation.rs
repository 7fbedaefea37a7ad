//! Product field definitions (`iclear.product_field`): the validation a
//! lead's fields meet after pre-validation and before the lists (docs/reference/settings.md:
//! pre-validation rules run "before the validation process"). Each type is
//! checked as a lead business expects: a well-formed email, a 10-digit US
//! phone, a US state code, a real date, ...

use crate::envelope::value_text;
use crate::error::ConfigError;
use chrono::NaiveDate;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

pub const TYPES: &[&str] = &[
    "text", "number", "integer", "email", "phone", "zip", "state", "date", "ip", "boolean", "enum",
];

/// US states, DC and the territories (USPS codes).
const STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "PR", "VI", "GU", "AS", "MP",
];

/// One `iclear.product_field` row as the store loads it.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldDoc {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub allowed: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct FieldRule {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<Regex>,
    pub allowed: Vec<String>,
}

impl FieldDoc {
    /// Check and build; errors name the column.
    pub fn build(self) -> Result<FieldRule, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new("name", "must name a lead field"));
        }
        if !TYPES.contains(&self.kind.as_str()) {
            return Err(ConfigError::new(
                "type",
                format!(
                    "unknown type {:?} (expected one of: {})",
                    self.kind,
                    TYPES.join(", ")
                ),
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max) {
            if lo > hi {
                return Err(ConfigError::new("min", "must not be greater than max"));
            }
        }
        let pattern = self
            .pattern
            .as_deref()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ConfigError::new("pattern", format!("bad regex: {e}")))
            })
            .transpose()?;
        let allowed = match &self.allowed {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| value_text(v).map(|t| t.to_lowercase()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ConfigError::new("allowed", "must be a JSON array of scalars"))?,
            Some(_) => {
                return Err(ConfigError::new(
                    "allowed",
                    "must be a JSON array of scalars",
                ))
            }
        };
        if self.kind == "enum" && allowed.is_empty() {
            return Err(ConfigError::new(
                "allowed",
                "must list the values of an enum field",
            ));
        }
        Ok(FieldRule {
            id: self.id,
            name: self.name.trim().to_string(),
            kind: self.kind,
            required: self.required,
            min: self.min,
            max: self.max,
            pattern,
            allowed,
        })
    }
}

fn within(what: &str, x: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    match (min, max) {
        (Some(lo), _) if x < lo => Err(format!("{what} {x} is below the minimum {lo}")),
        (_, Some(hi)) if x > hi => Err(format!("{what} {x} is above the maximum {hi}")),
        _ => Ok(()),
    }
}

/// A US phone: formatting characters only around the digits, and a number
/// of the North American Numbering Plan that libphonenumber knows as
/// assigned (`checks::valid_us_phone`), so an unassigned area code or an
/// N11 service code never reaches a paid lookup.
fn us_phone(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_digit() || " ()-.+".contains(c))
        && crate::checks::valid_us_phone(s)
}

fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && domain.rsplit('.').next().is_some_and(|tld| tld.len() >= 2)
}

fn date(s: &str) -> bool {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || NaiveDate::parse_from_str(s, "%m/%d/%Y").is_ok()
}

impl FieldRule {
    /// Why the field's value fails this definition (None: it passes).
    pub fn check(&self, v: Option<&Value>) -> Option<String> {
        let text = v.and_then(value_text).map(|t| t.trim().to_string());
        let Some(t) = text.filter(|t| !t.is_empty()) else {
            return self.required.then(|| "is required".to_string());
        };
        let bad = |what: &str| Some(format!("{t:?} is not {what}"));
        match self.kind.as_str() {
            "text" => {
                let n = t.chars().count() as f64;
                if let Err(e) = within("length", n, self.min, self.max) {
                    return Some(e);
                }
                if self.pattern.as_ref().is_some_and(|p| !p.is_match(&t)) {
                    return Some(format!("{t:?} does not match the pattern"));
                }
                None
            }
            "number" => match t.parse::<f64>().ok().filter(|x| x.is_finite()) {
                Some(x) => within("value", x, self.min, self.max).err(),
                None => bad("a number"),
            },
            "integer" => match t.parse::<i64>() {
                Ok(x) => within("value", x as f64, self.min, self.max).err(),
                Err(_) => bad("an integer"),
            },
            "email" => (!email(&t))
                .then(|| format!("{t:?} is not a well-formed email"))
                .or(None),
            "phone" => (!us_phone(&t)).then(|| format!("{t:?} is not a valid US phone number")),
            "zip" => {
                let ok = t.len() == 5 && t.bytes().all(|b| b.is_ascii_digit())
                    || t.len() == 10
                        && t.as_bytes()[5] == b'-'
                        && t.bytes()
                            .enumerate()
                            .all(|(i, b)| i == 5 || b.is_ascii_digit());
                (!ok).then(|| format!("{t:?} is not a US ZIP code"))
            }
            "state" => (!STATES.contains(&t.to_uppercase().as_str()))
                .then(|| format!("{t:?} is not a US state code")),
            "date" => {
                (!date(&t)).then(|| format!("{t:?} is not a real date (YYYY-MM-DD or MM/DD/YYYY)"))
            }
            "ip" => t
                .parse::<std::net::IpAddr>()
                .is_err()
                .then(|| format!("{t:?} is not an IP address")),
            "boolean" => (!matches!(
                t.to_lowercase().as_str(),
                "true" | "false" | "yes" | "no" | "1" | "0"
            ))
            .then(|| format!("{t:?} is not a boolean")),
            "enum" => (!self.allowed.contains(&t.to_lowercase()))
                .then(|| format!("{t:?} is not one of: {}", self.allowed.join(", "))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(kind: &str, extra: Value) -> FieldRule {
        let mut d = json!({"id": 1, "name": "f", "type": kind});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        serde_json::from_value::<FieldDoc>(d)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn each_type_as_a_lead_business_expects() {
        let cases = [
            (
                "email",
                json!({}),
                vec!["a@b.co", "jo.doe+x@mail.example.com"],
                vec!["a@b", "@b.co", "a b@c.com", "a@b.c"],
            ),
            (
                "phone",
                json!({}),
                vec!["(310) 287-0000", "13102870000", "310.287.0000"],
                vec!["310287000", "0102870000", "3101870000", "555-CALL-NOW"],
            ),
            (
                "zip",
                json!({}),
                vec!["90210", "90210-1234"],
                vec!["9021", "90210-12", "ABCDE"],
            ),
            (
                "state",
                json!({}),
                vec!["CA", "ny", "DC"],
                vec!["XX", "California"],
            ),
            (
                "date",
                json!({}),
                vec!["2026-02-28", "02/29/2024"],
                vec!["2026-02-30", "13/01/2026", "yesterday"],
            ),
            (
                "ip",
                json!({}),
                vec!["10.0.0.1", "2001:db8::1"],
                vec!["10.0.0.256", "x"],
            ),
            ("boolean", json!({}), vec!["true", "No", "1"], vec!["maybe"]),
            (
                "integer",
                json!({"min": 18, "max": 99}),
                vec!["18", "99"],
                vec!["17", "100", "18.5"],
            ),
            (
                "number",
                json!({"min": 0}),
                vec!["0", "12.5"],
                vec!["-1", "ten"],
            ),
            (
                "text",
                json!({"min": 2, "max": 4, "pattern": "^[A-Z]"}),
                vec!["Ab", "Abcd"],
                vec!["A", "Abcde", "ab"],
            ),
            (
                "enum",
                json!({"allowed": ["rent", "own"]}),
                vec!["Rent", "own"],
                vec!["other"],
            ),
        ];
        for (kind, extra, good, bad) in cases {
            let r = rule(kind, extra);
            for g in good {
                assert_eq!(r.check(Some(&json!(g))), None, "{kind} {g}");
            }
            for b in bad {
                assert!(r.check(Some(&json!(b))).is_some(), "{kind} {b} should fail");
            }
        }
        let req = rule("text", json!({"required": true}));
        assert_eq!(req.check(None).as_deref(), Some("is required"));
        assert_eq!(
            req.check(Some(&json!("  "))).as_deref(),
            Some("is required")
        );
        assert_eq!(
            rule("text", json!({})).check(None),
            None,
            "optional and absent"
        );
    }

    #[test]
    fn bad_definitions_are_refused_naming_the_column() {
        let refused = |d: Value| {
            serde_json::from_value::<FieldDoc>(d)
                .unwrap()
                .build()
                .unwrap_err()
                .setting
        };
        assert_eq!(
            refused(json!({"id": 1, "name": "f", "type": "color"})),
            "type"
        );
        assert_eq!(
            refused(json!({"id": 1, "name": "f", "type": "enum"})),
            "allowed"
        );
        assert_eq!(
            refused(json!({"id": 1, "name": "f", "type": "text", "pattern": "("})),
            "pattern"
        );
        assert_eq!(
            refused(json!({"id": 1, "name": "f", "type": "integer", "min": 5, "max": 1})),
            "min"
        );
        assert_eq!(
            refused(json!({"id": 1, "name": " ", "type": "text"})),
            "name"
        );
    }
}
