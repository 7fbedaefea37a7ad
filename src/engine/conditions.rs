//! Rule conditions: categories, operators and their evaluation.
//!
//! String comparisons are case-insensitive. Numeric operators compare numbers
//! and are false, with a trace note, when either side is not a number.

use crate::error::ConfigError;
use regex::Regex;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    LeadBody,
    LeadParam,
    Service,
    Random,
    Rule,
    Counter,
    Redirect,
    /// Earlier leads with the same values (`history.rs`): duplicates and
    /// velocity.
    History,
}

impl Category {
    pub const ALL: &'static [&'static str] = &[
        "lead_body",
        "lead_param",
        "service",
        "random",
        "rule",
        "counter",
        "redirect",
        "history",
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL[self as usize]
    }

    pub fn parse(s: &str) -> Result<Category, ConfigError> {
        Ok(match s {
            "lead_body" => Category::LeadBody,
            "lead_param" => Category::LeadParam,
            "service" => Category::Service,
            "random" => Category::Random,
            "rule" => Category::Rule,
            "counter" => Category::Counter,
            "redirect" => Category::Redirect,
            "history" => Category::History,
            _ => {
                return Err(ConfigError::new(
                    "category",
                    format!(
                        "unknown category {s:?} (expected one of: {})",
                        Self::ALL.join(", ")
                    ),
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    Regex,
    IsEmpty,
    IsNotEmpty,
    /// A phone number libphonenumber knows as assigned (`checks.rs`).
    IsValidPhone,
    /// A value that is there and is not such a number (rules have no NOT:
    /// this is the one a rejecting rule uses).
    IsInvalidPhone,
    /// An email of a disposable-email domain (`checks.rs`).
    IsDisposableEmail,
}

impl Operator {
    pub const ALL: &'static [&'static str] = &[
        "equals",
        "not_equals",
        "greater",
        "greater_or_equal",
        "less",
        "less_or_equal",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "in",
        "not_in",
        "regex",
        "is_empty",
        "is_not_empty",
        "is_valid_phone",
        "is_invalid_phone",
        "is_disposable_email",
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL[self as usize]
    }

    pub fn parse(s: &str) -> Result<Operator, ConfigError> {
        use Operator::*;
        Ok(match s {
            "equals" => Equals,
            "not_equals" => NotEquals,
            "greater" => Greater,
            "greater_or_equal" => GreaterOrEqual,
            "less" => Less,
            "less_or_equal" => LessOrEqual,
            "contains" => Contains,
            "not_contains" => NotContains,
            "starts_with" => StartsWith,
            "ends_with" => EndsWith,
            "in" => In,
            "not_in" => NotIn,
            "regex" => Regex,
            "is_empty" => IsEmpty,
            "is_not_empty" => IsNotEmpty,
            "is_valid_phone" => IsValidPhone,
            "is_invalid_phone" => IsInvalidPhone,
            "is_disposable_email" => IsDisposableEmail,
            _ => {
                return Err(ConfigError::new(
                    "operator",
                    format!(
                        "unknown operator {s:?} (expected one of: {})",
                        Self::ALL.join(", ")
                    ),
                ))
            }
        })
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            Operator::Greater | Operator::GreaterOrEqual | Operator::Less | Operator::LessOrEqual
        )
    }
}

/// The lead parameters a `lead_param` condition may read (plus `tpar.<key>`).
pub const LEAD_PARAMS: &[&str] = &[
    "publisher_id",
    "channel_id",
    "source_id",
    "stage",
    "method",
    "silent",
    "status",
];

#[derive(Debug, Clone)]
pub struct Condition {
    pub id: i64,
    pub category: Category,
    pub parameter: String,
    pub operator: Operator,
    pub value: Value,
    /// Compiled once at configuration load (`regex` operator only).
    pub regex: Option<Regex>,
    /// The value holds placeholders (`{%publisherId%}`, ...), rendered for
    /// each lead before comparing (seeds: "Show available placeholders").
    pub templated: bool,
    /// A `history` condition's window; its `value` is then the count the
    /// operator compares the number of earlier leads with.
    pub history: Option<crate::history::HistoryWindow>,
}

/// The template strings of a condition value: the value, or an in/not_in
/// list's elements.
fn templates(v: &Value) -> Vec<&str> {
    fn one(v: &Value) -> Option<&str> {
        v.as_str().filter(|s| s.contains("{%"))
    }
    match v {
        Value::Array(a) => a.iter().filter_map(one).collect(),
        v => one(v).into_iter().collect(),
    }
}

/// A condition value with its placeholders rendered for a lead.
pub fn render_value(v: &Value, vars: &crate::placeholders::Vars) -> Value {
    use crate::placeholders::render;
    match v {
        Value::String(s) => Value::String(render(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_value(x, vars)).collect()),
        v => v.clone(),
    }
}

impl Condition {
    /// Build and validate a condition; errors name the setting.
    pub fn new(
        id: i64,
        category: &str,
        parameter: &str,
        operator: &str,
        value: Value,
    ) -> Result<Condition, ConfigError> {
        let category = Category::parse(category)?;
        let operator = Operator::parse(operator)?;
        let parameter = parameter.trim().to_string();
        let mut value = value;
        let mut history = None;
        if category == Category::History {
            let window = crate::history::HistoryWindow::parse(&parameter, &value)?;
            if !operator.is_numeric() {
                return Err(ConfigError::new(
                    "operator",
                    "must be a numeric operator for a history condition (greater_or_equal, ...)",
                ));
            }
            value = Value::from(window.count);
            history = Some(window);
        }
        match category {
            Category::Random if !parameter.is_empty() => {
                return Err(ConfigError::new(
                    "parameter",
                    "must be empty for the random category (a number 0-1000 is drawn)",
                ))
            }
            Category::Random => {}
            _ if parameter.is_empty() => {
                return Err(ConfigError::new(
                    "parameter",
                    "is required for this category",
                ))
            }
            Category::LeadParam => {
                let ok = LEAD_PARAMS.contains(&parameter.as_str())
                    || parameter
                        .strip_prefix("tpar.")
                        .is_some_and(|k| !k.is_empty());
                if !ok {
                    return Err(ConfigError::new(
                        "parameter",
                        format!(
                            "unknown lead parameter {parameter:?} (expected one of: {}, or tpar.<key>)",
                            LEAD_PARAMS.join(", ")
                        ),
                    ));
                }
            }
            Category::Service => {
                let (svc, field) = parameter.split_once('.').unwrap_or(("", ""));
                if !crate::service::SERVICES.contains(&svc) || field.is_empty() {
                    return Err(ConfigError::new(
                        "parameter",
                        format!(
                            "must be <service>.<response field> with service one of: {}",
                            crate::service::SERVICES.join(", ")
                        ),
                    ));
                }
            }
            Category::Rule => {
                if parameter.parse::<i64>().is_err() {
                    return Err(ConfigError::new("parameter", "must be a rule id"));
                }
            }
            Category::Counter => match parameter.split_once(':') {
                Some((name, key)) if !name.is_empty() && !key.is_empty() => {
                    crate::placeholders::check_template(key)
                        .map_err(|e| ConfigError::new("parameter", e))?;
                }
                _ => {
                    return Err(ConfigError::new(
                        "parameter",
                        "must be <counter name>:<key template>",
                    ))
                }
            },
            Category::LeadBody | Category::Redirect | Category::History => {}
        }
        let mut regex = None;
        // a regex is a pattern, not a template
        let templated = operator != Operator::Regex && !templates(&value).is_empty();
        for t in templates(&value).into_iter().filter(|_| templated) {
            crate::placeholders::check_template(t).map_err(|e| ConfigError::new("value", e))?;
        }
        match operator {
            Operator::In | Operator::NotIn => {
                let ok = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(|v| !v.is_array() && !v.is_object()));
                if !ok {
                    return Err(ConfigError::new(
                        "value",
                        "must be a JSON array of scalars for in/not_in",
                    ));
                }
            }
            Operator::IsEmpty
            | Operator::IsNotEmpty
            | Operator::IsValidPhone
            | Operator::IsInvalidPhone
            | Operator::IsDisposableEmail => {}
            Operator::Regex => {
                let pat = value
                    .as_str()
                    .ok_or_else(|| ConfigError::new("value", "must be a string (the regex)"))?;
                regex = Some(
                    regex::RegexBuilder::new(pat)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| ConfigError::new("value", format!("bad regex: {e}")))?,
                );
            }
            op if op.is_numeric() => {
                if number(&value).is_none() && !templated {
                    return Err(ConfigError::new(
                        "value",
                        "must be a number for a numeric operator",
                    ));
                }
            }
            _ => {
                if value.is_array() || value.is_object() || value.is_null() {
                    return Err(ConfigError::new(
                        "value",
                        "must be a string, number or boolean",
                    ));
                }
            }
        }
        Ok(Condition {
            id,
            category,
            parameter,
            operator,
            value,
            regex,
            templated,
            history,
        })
    }

    /// Evaluate against the actual value (Null when absent).
    /// Returns the result and an optional trace note.
    pub fn eval(&self, actual: &Value) -> (bool, Option<String>) {
        evaluate(self.operator, actual, &self.value, self.regex.as_ref())
    }

    /// Evaluate against `expected`, this condition's value rendered for the lead.
    pub fn eval_rendered(&self, actual: &Value, expected: &Value) -> (bool, Option<String>) {
        evaluate(self.operator, actual, expected, self.regex.as_ref())
    }
}

/// A JSON value as a number: numbers, and strings that parse as one.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A JSON value as comparable text: lowercase; null and containers are "".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_lowercase(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => !a.is_null() && text(a) == text(b),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

pub fn evaluate(
    op: Operator,
    actual: &Value,
    expected: &Value,
    re: Option<&Regex>,
) -> (bool, Option<String>) {
    use Operator::*;
    let t = || text(actual);
    let e = || text(expected);
    match op {
        Equals => (equal(actual, expected), None),
        NotEquals => (!equal(actual, expected), None),
        Greater | GreaterOrEqual | Less | LessOrEqual => match (number(actual), number(expected)) {
            (Some(a), Some(x)) => (
                match op {
                    Greater => a > x,
                    GreaterOrEqual => a >= x,
                    Less => a < x,
                    _ => a <= x,
                },
                None,
            ),
            _ => (
                false,
                Some(format!(
                    "not a number: actual {actual}, expected {expected}"
                )),
            ),
        },
        Contains => (!actual.is_null() && t().contains(&e()), None),
        NotContains => (actual.is_null() || !t().contains(&e()), None),
        StartsWith => (!actual.is_null() && t().starts_with(&e()), None),
        EndsWith => (!actual.is_null() && t().ends_with(&e()), None),
        In => (
            expected
                .as_array()
                .is_some_and(|a| a.iter().any(|x| equal(actual, x))),
            None,
        ),
        NotIn => (
            !expected
                .as_array()
                .is_some_and(|a| a.iter().any(|x| equal(actual, x))),
            None,
        ),
        Regex => match (re, actual) {
            (_, Value::Null) => (false, None),
            (Some(r), _) => (
                r.is_match(&match actual {
                    Value::String(s) => s.clone(),
                    other => text(other),
                }),
                None,
            ),
            (None, _) => (false, Some("regex not compiled".into())),
        },
        IsEmpty => (is_empty(actual), None),
        IsNotEmpty => (!is_empty(actual), None),
        IsValidPhone => (!actual.is_null() && crate::checks::valid_phone(&t()), None),
        IsInvalidPhone => (!is_empty(actual) && !crate::checks::valid_phone(&t()), None),
        IsDisposableEmail => (
            !actual.is_null() && crate::checks::disposable_email(&t()),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(op: &str, actual: Value, expected: Value) -> bool {
        let c = Condition::new(1, "lead_body", "x", op, expected).unwrap();
        c.eval(&actual).0
    }

    #[test]
    fn every_operator() {
        assert!(ev("is_valid_phone", json!("(201) 555-0123"), Value::Null));
        assert!(!ev("is_valid_phone", json!("999-555-0123"), Value::Null));
        assert!(!ev("is_valid_phone", Value::Null, Value::Null));
        assert!(ev("is_invalid_phone", json!("311-555-0123"), Value::Null));
        assert!(
            !ev("is_invalid_phone", json!(""), Value::Null),
            "no phone is not an invalid one"
        );
        assert!(!ev("is_invalid_phone", json!("2015550123"), Value::Null));
        assert!(ev(
            "is_disposable_email",
            json!("x@yopmail.com"),
            Value::Null
        ));
        assert!(!ev(
            "is_disposable_email",
            json!("x@gmail.com"),
            Value::Null
        ));
        assert!(ev("equals", json!("ABC@x.com"), json!("abc@X.com")));
        assert!(ev("equals", json!("5"), json!(5.0)));
        assert!(!ev("equals", Value::Null, json!("")));
        assert!(ev("not_equals", json!("a"), json!("b")));
        assert!(ev("not_equals", Value::Null, json!("b")));
        assert!(ev("greater", json!("10"), json!(9)));
        assert!(!ev("greater", json!(9), json!(9)));
        assert!(ev("greater_or_equal", json!(9), json!(9)));
        assert!(ev("less", json!(1.5), json!(2)));
        assert!(ev("less_or_equal", json!(2), json!("2")));
        assert!(!ev("less_or_equal", json!(3), json!(2)));
        assert!(ev("contains", json!("Hello World"), json!("WORLD")));
        assert!(!ev("contains", Value::Null, json!("")));
        assert!(ev("not_contains", json!("abc"), json!("z")));
        assert!(ev("starts_with", json!("555-1234"), json!("555")));
        assert!(ev(
            "ends_with",
            json!("x@Mailinator.com"),
            json!("@mailinator.COM")
        ));
        assert!(ev("in", json!("CA"), json!(["ny", "ca"])));
        assert!(ev("in", json!(3), json!([1, 2, "3"])));
        assert!(!ev("in", json!("tx"), json!(["ny", "ca"])));
        assert!(ev("not_in", json!("tx"), json!(["ny", "ca"])));
        assert!(ev("regex", json!("Test123"), json!("^test\\d+$")));
        assert!(!ev("regex", json!("x"), json!("^\\d+$")));
        assert!(ev("is_empty", json!("  "), Value::Null));
        assert!(ev("is_empty", Value::Null, Value::Null));
        assert!(!ev("is_empty", json!(0), Value::Null));
        assert!(ev("is_not_empty", json!("a"), Value::Null));
    }

    #[test]
    fn names_round_trip() {
        for name in Operator::ALL {
            assert_eq!(Operator::parse(name).unwrap().as_str(), *name);
        }
        for name in Category::ALL {
            assert_eq!(Category::parse(name).unwrap().as_str(), *name);
        }
    }

    #[test]
    fn numeric_operator_on_text_is_false_with_note() {
        let c = Condition::new(1, "lead_body", "age", "greater", json!(18)).unwrap();
        let (r, note) = c.eval(&json!("eighteen"));
        assert!(!r);
        assert!(note.unwrap().contains("not a number"));
        let (r, note) = c.eval(&Value::Null);
        assert!(!r && note.is_some());
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = [
            ("nope", "x", "equals", json!(1), "category"),
            ("lead_body", "x", "like", json!(1), "operator"),
            ("lead_body", "x", "regex", json!("(unclosed"), "value"),
            ("lead_body", "x", "in", json!("a"), "value"),
            ("lead_body", "x", "greater", json!("abc"), "value"),
            ("lead_body", "", "equals", json!(1), "parameter"),
            ("lead_param", "zip", "equals", json!(1), "parameter"),
            ("service", "fraud_score", "greater", json!(1), "parameter"),
            ("rule", "abc", "equals", json!(true), "parameter"),
            ("counter", "seen", "greater", json!(1), "parameter"),
            ("random", "x", "greater", json!(1), "parameter"),
            ("lead_body", "x", "equals", json!({"a": 1}), "value"),
        ];
        for (cat, p, op, v, setting) in bad {
            let e = Condition::new(1, cat, p, op, v.clone()).unwrap_err();
            assert_eq!(e.setting, setting, "{cat} {p} {op} {v}");
        }
        assert!(Condition::new(1, "lead_param", "tpar.sub1", "equals", json!("x")).is_ok());
        assert!(Condition::new(
            1,
            "service",
            "ip_analysis.fraud_score",
            "greater",
            json!(80)
        )
        .is_ok());
        assert!(Condition::new(
            1,
            "counter",
            "seen:{%productField_email%}",
            "greater",
            json!(1)
        )
        .is_ok());
        assert!(Condition::new(1, "random", "", "less", json!(500)).is_ok());
    }
}
