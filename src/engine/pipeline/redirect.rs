//! Advanced Rules on Redirect, for a lead processed before, and what
//! processing left of it.

use super::*;

/// Advanced Rules on Redirect for a lead that was processed before. `env` is
/// the lead as processing left it (fields and params after its actions).
pub fn process_redirect(
    cfg: &ProductConfig,
    env: &Envelope,
    lead_id: &str,
    redirect: Map<String, Value>,
    processed: &Processed,
    facts: &mut dyn Facts,
    trace: TraceLevel,
) -> Outcome {
    let mut lead = Lead::new(cfg, env, lead_id, facts, trace);
    lead.origin = "redirect";
    lead.redirect = Some(redirect);
    // the lead as processing left it: its status, the rules that matched,
    // its service answers and tags (env carries its fields and params)
    lead.status = match processed.status.as_str() {
        "rejected" => Status::Rejected,
        "paused" => Status::Paused,
        _ => Status::Accepted,
    };
    lead.tags = processed.tags.clone();
    lead.matched.extend(processed.matched.iter().copied());
    lead.results = processed.results.clone();
    let given = lead.redirect.clone().unwrap_or_default();
    run_stage(cfg, RuleStage::Redirect, &mut lead, facts, &[]);
    // a redirect parameter that outgrew its limit: the redirect as it came,
    // nothing written, and the reason
    let overflow = lead.overflow.take();
    if overflow.is_some() {
        lead.redirect = Some(given);
        lead.effects.clear();
    }
    // the redirect rules that matched (rule ids are unique across stages)
    let mut matched: Vec<i64> = lead
        .matched
        .iter()
        .copied()
        .filter(|id| !processed.matched.contains(id))
        .collect();
    matched.sort_unstable();
    let mut decision = obj(vec![
        ("lead_id", Value::String(take(&mut lead.lead_id))),
        ("product", Value::String(cfg.name.clone())),
        ("stage", "redirect".into()),
        (
            "redirect",
            Value::Object(lead.redirect.take().unwrap_or_default()),
        ),
        (
            "matched_rules",
            matched.into_iter().map(Value::from).collect(),
        ),
        ("trace", Value::Array(take(&mut lead.trace))),
    ]);
    if let Some(why) = overflow {
        decision["status"] = "error".into();
        decision["reason"] = format!("iclear: {why}").into();
    }
    lead.finish(decision)
}

/// What processing left of a lead, for Advanced Rules on Redirect.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    /// The decision's status ("accepted", "rejected", "paused").
    pub status: String,
    pub tags: Vec<String>,
    /// Rules that matched while it was processed.
    pub matched: Vec<i64>,
    /// Service answers by service.
    pub results: HashMap<String, Value>,
}

impl Processed {
    /// From the stored decision and `{"matched": [...], "services": {...}}`
    /// (the log's rule matches and service answers).
    pub fn from_json(decision: &Value, log: &Value) -> Processed {
        Processed {
            status: decision["status"]
                .as_str()
                .unwrap_or("accepted")
                .to_string(),
            tags: decision["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            matched: log["matched"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
            results: log["services"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }
    }
}
