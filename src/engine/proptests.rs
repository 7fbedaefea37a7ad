//! Property tests: whatever a publisher posts or an operator saves, the
//! engine answers with a value or an error naming the key, never a panic
//! (review finding 10). Inputs are arbitrary JSON of bounded size.

use crate::conditions::Condition;
use crate::envelope::Envelope;
use crate::placeholders::{check_template, render, Vars};
use crate::service::{Settings, SERVICES};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_%{}]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of the keys that matter, holding arbitrary values.
fn object_with(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(keys), json(), 0..keys.len())
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

const SETTING_KEYS: &[&str] = &[
    "api_key",
    "api_token",
    "account_id",
    "strictness",
    "reject_fraud_score_gte",
    "reject_mobile",
    "country",
    "add_to_list",
    "sync_timeout_s",
    "async_timeout_s",
    "cache_days",
    "signature_enabled",
    "signature_template",
    "signature_lifetime_s",
    "reject_signature_missing",
    "ip_field",
    "phone_field",
    "user_agent_field",
    "advanced",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelopes_parse_or_name_a_key(v in prop_oneof![json(), object_with(crate::envelope::KEYS)]) {
        if let Err(e) = Envelope::parse(&v) {
            prop_assert!(e.to_string().starts_with("invalid lead: \""));
        }
    }

    #[test]
    fn settings_parse_or_name_a_setting(service in prop::sample::select(SERVICES),
                                        v in prop_oneof![json(), object_with(SETTING_KEYS)]) {
        if let Err(e) = Settings::parse(service, &v) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn templates_render_whatever_the_lead(t in "(.{0,8}(\\{%[a-zA-Z_]{0,16}%\\})?){0,6}",
                                          fields in prop::collection::btree_map("[a-zA-Z_]{0,8}", json(), 0..6)) {
        let fields: Map<String, Value> = fields.into_iter().collect();
        let params = Map::new();
        let vars = Vars {
            fields: &fields,
            params: &params,
            lead_id: "L1",
            product_id: 1,
            publisher_id: None,
            channel_id: Some(7),
            source_id: None,
            date: "2026-12-01",
        };
        let _ = check_template(&t);
        let _ = render(&t, &vars);
    }

    #[test]
    fn regex_conditions_compile_or_are_refused(pattern in ".{0,24}", actual in json()) {
        if let Ok(c) = Condition::new(1, "lead_body", "email", "regex", Value::String(pattern)) {
            let _ = c.eval(&actual);
        }
    }

    #[test]
    fn any_condition_saves_or_is_refused(category in "[a-z_]{0,12}", parameter in ".{0,16}",
                                          operator in prop::sample::select(&[
                                              "equals", "not_equals", "greater", "greater_or_equal", "less",
                                              "less_or_equal", "contains", "not_contains", "starts_with",
                                              "ends_with", "in", "not_in", "regex", "is_empty", "is_not_empty", "x",
                                          ][..]),
                                          value in json(), actual in json()) {
        for category in [category.as_str(), "lead_body", "tpar", "counter", "random", "rule"] {
            if let Ok(c) = Condition::new(1, category, &parameter, operator, value.clone()) {
                let _ = c.eval(&actual);
            }
        }
    }
}
