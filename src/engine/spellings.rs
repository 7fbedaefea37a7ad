//! The spellings the engine accepts for each enumerated column, in one
//! table. An engine test checks each list against the parser that reads the
//! column; a pg_test checks it against the column's SQL CHECK list, so the
//! two never drift apart.

/// (table.column, the values the engine knows)
pub const COLUMNS: &[(&str, &[&str])] = &[
    ("product.kind", &["post", "pingpost"]),
    ("rule.stage", STAGES),
    ("rule_category.stage", STAGES),
    ("rule.status", &["active", "paused", "shadow"]),
    ("rule.logical_operator", &["and", "or"]),
    ("rule.method", &["POST", "FORM"]),
    ("list.kind", &["pl", "dnpl"]),
    ("global_rule.status", &["active", "paused"]),
    ("global_rule.execution", &["sync", "async", "on_demand"]),
    (
        "global_rule.run_time",
        &["before_filtration", "after_filtration"],
    ),
    ("global_rule.run_on", &["ping", "post", "ping_and_post"]),
    ("global_rule.no_response", &["continue", "reject"]),
    ("product_field.type", crate::validation::TYPES),
    (
        "service.name",
        &[
            "ip_analysis",
            "phone_analysis",
            "iclaim",
            "verification_history",
            "sms",
            "tracking",
        ],
    ),
];

const STAGES: &[&str] = &[
    "pre_validation",
    "processing",
    "after_processing",
    "redirect",
];

#[cfg(test)]
mod tests {
    use super::COLUMNS;
    use crate::config::{ProductConfig, RuleStage};
    use crate::envelope::Method;
    use serde_json::{json, Value};

    /// A product document with one rule, list, global rule and field, with
    /// each (path, value) of `patches` set.
    fn product_with(patches: &[(&str, Value)]) -> Result<ProductConfig, String> {
        let mut doc = json!({"id": 1, "name": "p", "kind": "post",
            "rules": [{"id": 1, "stage": "processing", "name": "r"}],
            "lists": [{"id": 1, "name": "l", "kind": "pl", "field": "email"}],
            "global_rules": [{"id": 1, "service": "ip_analysis", "status": "active", "subscription": "enabled",
                              "execution": "sync", "lookup_percent": 100, "run_time": "before_filtration",
                              "run_on": "ping_and_post", "run_on_silent_ping": false, "no_response": "continue",
                              "settings": {"api_key": "k"}}],
            "fields": [{"id": 1, "name": "f", "type": "text"}]});
        for (path, value) in patches {
            let at: Vec<&str> = path.split('.').collect();
            let mut target: &mut Value = &mut doc;
            for k in &at[..at.len() - 1] {
                target = match k.parse::<usize>() {
                    Ok(i) => &mut target[i],
                    Err(_) => &mut target[*k],
                };
            }
            target[at[at.len() - 1]] = value.clone();
        }
        ProductConfig::from_json(doc).map_err(|e| e.to_string())
    }

    fn product(path: &str, value: &str) -> Result<ProductConfig, String> {
        product_with(&[(path, value.into())])
    }

    /// The engine's reading of `column` = `value`: Ok when it knows it.
    fn parse(column: &str, value: &str) -> Option<Result<(), String>> {
        let ok = |r: Result<ProductConfig, String>| Some(r.map(|_| ()));
        match column {
            "product.kind" => ok(product("kind", value)),
            "rule.stage" | "rule_category.stage" => Some(
                RuleStage::parse(value)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            "rule.logical_operator" => ok(product("rules.0.logical_operator", value)),
            "rule.method" => Some(
                Method::parse(value)
                    .map(|_| ())
                    .ok_or_else(|| value.to_string()),
            ),
            "list.kind" => ok(product("lists.0.kind", value)),
            "global_rule.execution" => ok(product("global_rules.0.execution", value)),
            "global_rule.run_time" => ok(product("global_rules.0.run_time", value)),
            "global_rule.run_on" => ok(product("global_rules.0.run_on", value)),
            "global_rule.no_response" => ok(product("global_rules.0.no_response", value)),
            // (an enum field lists its values)
            "product_field.type" => ok(product_with(&[
                ("fields.0.type", value.into()),
                (
                    "fields.0.allowed",
                    if value == "enum" {
                        json!(["a"])
                    } else {
                        Value::Null
                    },
                ),
            ])),
            // statuses are filtered by the store's query, service names by
            // the settings registry and the SMS and tracking adapters
            _ => None,
        }
    }

    #[test]
    fn each_spelling_is_what_its_parser_accepts() {
        for (column, values) in COLUMNS {
            for v in *values {
                if let Some(r) = parse(column, v) {
                    assert!(r.is_ok(), "{column} = {v:?}: {r:?}");
                }
            }
            if let Some(r) = parse(column, "bogus") {
                assert!(r.is_err(), "{column} accepts an unlisted value");
            }
        }
        // the global-rule services are the settings registry's
        let services = COLUMNS
            .iter()
            .find(|(c, _)| *c == "service.name")
            .unwrap()
            .1;
        assert!(crate::service::SERVICES
            .iter()
            .all(|s| services.contains(s)));
    }
}
