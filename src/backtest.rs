//! `iclear.backtest`: a product's stored leads of a window replayed against
//! its configuration with `changes`, and what would have been decided
//! otherwise. Nothing is written, nothing is sent (src/store/backtest.rs
//! answers the engine's questions).

use crate::store;
use iclear_engine::envelope::Envelope;
use iclear_engine::pipeline::{self, Effect, TraceLevel};
use pgrx::datum::TimestampWithTimeZone;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Lead ids of changed decisions the result lists.
const SAMPLE: usize = 20;

/// The sections `changes` may hold, and what names an object in each.
fn identity(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "rules" | "fields" | "lists" => &["name"],
        "global_rules" => &["key"],
        "categories" => &["stage", "name"],
        "global_caps" => &["service", "period"],
        _ => return None,
    })
}

/// `changes` over an export_config document: in each section, an object
/// whose name (a global rule's key or service, a category's stage and
/// name) the document has replaces the keys it gives; any other is added.
/// `{"rules": [{"name": "x", "status": "paused"}]}` pauses rule x.
pub fn merged(mut doc: Value, changes: &Value) -> Result<Value, String> {
    let Some(sections) = changes.as_object() else {
        return Err("changes must be a JSON object".into());
    };
    for (section, items) in sections {
        let Some(id) = identity(section) else {
            return Err(format!(
                "changes.{section} is not a section (expected one of: rules, global_rules, categories, fields, lists, global_caps)"
            ));
        };
        let Some(items) = items.as_array() else {
            return Err(format!("changes.{section} must be an array"));
        };
        let name_of = |o: &Map<String, Value>| -> Vec<Value> {
            id.iter()
                .map(|k| match (*k, o.get(*k)) {
                    ("key", None) => o.get("service").cloned().unwrap_or(Value::Null),
                    (_, v) => v.cloned().unwrap_or(Value::Null),
                })
                .collect()
        };
        if !doc[section.as_str()].is_array() {
            doc[section.as_str()] = json!([]);
        }
        let target = doc[section.as_str()].as_array_mut().expect("an array");
        for (i, item) in items.iter().enumerate() {
            let Some(change) = item.as_object() else {
                return Err(format!("changes.{section}[{i}] must be a JSON object"));
            };
            let wanted = name_of(change);
            if wanted.iter().any(Value::is_null) {
                return Err(format!(
                    "changes.{section}[{i}] must name its object ({})",
                    id.join(", ")
                ));
            }
            let existing = target
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .find(|o| name_of(o) == wanted);
            match existing {
                Some(o) => o.extend(change.iter().map(|(k, v)| (k.clone(), v.clone()))),
                None => target.push(item.clone()),
            }
        }
    }
    Ok(doc)
}

fn refuse(message: String) -> ! {
    crate::errors::Error::Input(format!("iclear.backtest: {message}")).raise()
}

/// Per rule: leads it matched and leads it rejected.
#[derive(Default)]
struct RuleCount {
    matched: u64,
    rejected: u64,
}

pub fn backtest(
    product: &str,
    since: TimestampWithTimeZone,
    until: TimestampWithTimeZone,
    changes: &Value,
) -> Value {
    let Some(product_id) = store::backtest::product_id(product) else {
        refuse(format!("product {product:?} does not exist"));
    };
    let unchanged = changes.as_object().is_some_and(Map::is_empty);
    let cfg = if unchanged {
        crate::privilege::as_processor(|| store::config::load(product)).map_err(|e| e.to_string())
    } else {
        let export = store::backtest::export(product);
        let doc = merged(export, changes).unwrap_or_else(|e| refuse(e));
        store::backtest::configuration_with(&doc).map_err(|e| {
            format!(
                "the changes are refused: {}",
                e.replace(
                    "iclear.import_config: ",
                    "in the configuration with the changes, "
                )
            )
        })
    };
    let cfg = match cfg {
        Ok(Some(c)) => c,
        Ok(None) => refuse(format!("product {product:?} does not exist")),
        Err(e) => refuse(e),
    };
    let mut by_rule: BTreeMap<i64, RuleCount> = BTreeMap::new();
    let mut counters: HashMap<(String, String), i64> = HashMap::new();
    let mut history = store::backtest::ReplayHistory::new();
    let (mut leads, mut changed, mut to_rejected, mut to_accepted) = (0u64, 0u64, 0u64, 0u64);
    let (mut unanswered, mut unreadable) = (0u64, 0u64);
    let (mut returns, mut conversions, mut returns_caught, mut conversions_lost) =
        (0u64, 0u64, 0u64, 0u64);
    let mut sample = Vec::new();
    // iclear.progress, and a NOTICE every 5 s
    crate::progress::start(
        crate::progress::Command::Backtest,
        Some(product_id),
        store::backtest::count_leads(product_id, since, until),
    );
    store::backtest::for_each_lead(product_id, since, until, |lead| {
        crate::progress::update(leads as i64 + 1, None);
        let Ok(env) = Envelope::parse(&lead.envelope) else {
            unreadable += 1;
            return;
        };
        leads += 1;
        let source_created_at = env
            .source_created_at
            .or_else(|| env.source_id.and_then(store::config::source_seen_at));
        let mut facts = store::backtest::ReplayFacts {
            at: lead.at,
            lead_id: &lead.lead_id,
            answers: &lead.answers,
            counters: &counters,
            history: &history,
            source_created_at,
            draws: 0,
            unanswered: 0,
        };
        let out = pipeline::process_traced(&cfg, &env, &lead.lead_id, &mut facts, TraceLevel::Off);
        // a lookup the lead needed without an answer of its own (none was
        // recorded, or the rule could not have asked: no credential)
        let unrecorded = out.log.iter().any(|l| {
            l.kind == "service"
                && l.outcome == "no_response"
                && !l
                    .name
                    .as_ref()
                    .is_some_and(|n| lead.answers.contains_key(n))
        });
        if facts.unanswered > 0 || unrecorded {
            unanswered += 1;
        }
        let mut seen = HashSet::new();
        for l in out.log.iter().filter(|l| {
            l.kind == "rule" && matches!(l.outcome.as_str(), "matched" | "reject" | "paused")
        }) {
            if let Some(id) = l.ref_id.filter(|id| seen.insert(*id)) {
                by_rule.entry(id).or_default().matched += 1;
            }
        }
        if out.decision["rejected_by"]["kind"] == "rule" {
            if let Some(id) = out.decision["rejected_by"]["id"].as_i64() {
                by_rule.entry(id).or_default().rejected += 1;
            }
        }
        for e in &out.effects {
            match e {
                Effect::IncrementCounter { name, key, by } => {
                    *counters.entry((name.clone(), key.clone())).or_default() += by
                }
                Effect::RecordHistory {
                    key,
                    values,
                    status,
                } => history
                    .entry((key.clone(), values.clone()))
                    .or_default()
                    .push((lead.at, status)),
                _ => {}
            }
        }
        let now = out.status.as_str();
        let returned = lead.feedback.iter().any(|k| k == "return");
        let converted = lead.feedback.iter().any(|k| k == "conversion");
        returns += u64::from(returned);
        conversions += u64::from(converted);
        if now != lead.status {
            changed += 1;
            if sample.len() < SAMPLE {
                sample.push(Value::String(lead.lead_id.clone()));
            }
            match (lead.status.as_str(), now) {
                ("accepted", "rejected") => {
                    to_rejected += 1;
                    returns_caught += u64::from(returned);
                    conversions_lost += u64::from(converted);
                }
                ("rejected", "accepted") => to_accepted += 1,
                _ => {}
            }
        }
    });
    crate::progress::end();
    let rules: Vec<Value> = cfg
        .rules
        .iter()
        .map(|r| {
            let c = by_rule.get(&r.id);
            json!({"rule": r.id, "name": r.name, "stage": r.stage.as_str(),
                   "status": if r.shadow { "shadow" } else { "active" },
                   "matched": c.map_or(0, |c| c.matched), "rejected": c.map_or(0, |c| c.rejected)})
        })
        .collect();
    json!({
        "product": product,
        "leads": leads,
        "changed": changed,
        "accepted_to_rejected": to_rejected,
        "rejected_to_accepted": to_accepted,
        "by_rule": rules,
        "sample": sample,
        "feedback": {"returns": returns, "conversions": conversions,
                     "returns_caught": returns_caught, "conversions_lost": conversions_lost},
        "without_recorded_answer": unanswered,
        "unreadable": unreadable,
        "not_replayed": ["caps"],
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn changes_merge_by_name_and_name_their_errors() {
        let doc = json!({"rules": [{"name": "a", "status": "active", "position": 1}],
                         "global_rules": [{"key": "ip_analysis", "service": "ip_analysis", "no_response": "continue"}]});
        let out = merged(
            doc,
            &json!({"rules": [{"name": "a", "status": "paused"}, {"name": "b"}],
                    "global_rules": [{"service": "ip_analysis", "no_response": "reject"}]}),
        )
        .unwrap();
        assert_eq!(
            out["rules"],
            json!([{"name": "a", "status": "paused", "position": 1}, {"name": "b"}])
        );
        assert_eq!(out["global_rules"][0]["no_response"], "reject");
        for (changes, want) in [
            (json!([]), "changes must be a JSON object"),
            (json!({"product": {}}), "changes.product is not a section"),
            (json!({"rules": {}}), "changes.rules must be an array"),
            (
                json!({"rules": [{"status": "paused"}]}),
                "changes.rules[0] must name its object",
            ),
        ] {
            let e = merged(json!({}), &changes).unwrap_err();
            assert!(e.contains(want), "{changes}: {e}");
        }
    }
}
