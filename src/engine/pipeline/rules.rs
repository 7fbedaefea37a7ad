//! Advanced Rules in the pipeline: whether a rule targets the lead, what
//! each condition reads, a stage's rules in order, and their log and trace
//! entries.

use super::*;

pub(super) fn in_list(v: Option<i64>, ids: &[i64]) -> bool {
    v.is_some_and(|v| ids.contains(&v))
}

/// Why a rule does not apply to this lead, if it does not.
pub(super) fn untargeted(
    rule: &Rule,
    env: &Envelope,
    facts: &mut dyn Facts,
) -> Option<&'static str> {
    let t = &rule.targeting;
    let differs = |want: Option<i64>, have: Option<i64>| want.is_some() && want != have;
    if differs(t.publisher_id, env.publisher_id) {
        return Some("publisher");
    }
    if differs(t.channel_id, env.channel_id) {
        return Some("channel");
    }
    if differs(t.source_id, env.source_id) {
        return Some("source");
    }
    if (!t.publisher_ids.is_empty() && !in_list(env.publisher_id, &t.publisher_ids))
        || in_list(env.publisher_id, &t.exclude_publisher_ids)
    {
        return Some("publisher_ids");
    }
    if (!t.channel_ids.is_empty() && !in_list(env.channel_id, &t.channel_ids))
        || in_list(env.channel_id, &t.exclude_channel_ids)
    {
        return Some("channel_ids");
    }
    if (!t.source_ids.is_empty() && !in_list(env.source_id, &t.source_ids))
        || in_list(env.source_id, &t.exclude_source_ids)
    {
        return Some("source_ids");
    }
    if t.method.is_some_and(|m| m != env.method) {
        return Some("method");
    }
    if let Some(since) = t.all_new_since {
        if facts.source_created_at().is_none_or(|c| c < since) {
            return Some("all_new");
        }
    }
    None
}

/// The slot of the rule's caps this lead would take: its per-source
/// bucket only when the lead's source counts (seed 002: "for each new
/// source", the sources created since the rule's `all_new_since` or
/// `created_at`; every source, and a "no source" bucket, under
/// `per_source_scope = 'all_sources'`).
pub(super) fn rule_slot(rule: &Rule, env: &Envelope, facts: &mut dyn Facts) -> RuleSlot {
    let per_source = match (rule.caps.per_source, rule.caps.per_source_since) {
        (None, _) => PerSource::NotCounted,
        (Some(_), None) => env.source_id.map_or(PerSource::NoSource, PerSource::Source),
        (Some(_), Some(since)) => match (env.source_id, facts.source_created_at()) {
            (Some(id), Some(created)) if created >= since => PerSource::Source(id),
            _ => PerSource::NotCounted,
        },
    };
    RuleSlot {
        rule_id: rule.id,
        caps: rule.caps.clone(),
        per_source,
    }
}

pub(super) fn actual(
    cfg: &ProductConfig,
    c: &crate::conditions::Condition,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) -> Value {
    let id = |x: Option<i64>| x.map(Value::from).unwrap_or(Value::Null);
    match c.category {
        Category::LeadBody => lead
            .fields
            .get(&c.parameter)
            .cloned()
            .unwrap_or(Value::Null),
        Category::LeadParam => match c.parameter.as_str() {
            "publisher_id" => id(lead.env.publisher_id),
            "channel_id" => id(lead.env.channel_id),
            "source_id" => id(lead.env.source_id),
            "stage" => lead.env.stage.as_str().into(),
            "method" => lead.env.method.as_str().into(),
            "silent" => lead.env.silent.into(),
            "status" => lead.status.as_str().into(),
            p => p
                .strip_prefix("tpar.")
                .and_then(|k| lead.params.get(k).cloned())
                .unwrap_or(Value::Null),
        },
        // The answer of a lookup made for this lead (None ran: null).
        Category::Service => {
            let (svc, field) = c.parameter.split_once('.').unwrap_or(("", ""));
            lead.results
                .get(svc)
                .and_then(|d| d.get(field))
                .cloned()
                .unwrap_or(Value::Null)
        }
        Category::Redirect => lead
            .redirect
            .as_ref()
            .and_then(|r| r.get(&c.parameter).cloned())
            .unwrap_or(Value::Null),
        Category::Random => facts.random_0_1000().into(),
        Category::Rule => c
            .parameter
            .parse::<i64>()
            .is_ok_and(|id| lead.matched.contains(&id))
            .into(),
        Category::History => {
            let Some(w) = &c.history else {
                return Value::Null;
            };
            match crate::history::values_of(&w.fields, &lead.fields) {
                // no value, no earlier lead with it
                None => 0.into(),
                Some(values) => facts
                    .history_count(&HistoryQuery {
                        key: &crate::history::key_name(&w.fields),
                        values: &values,
                        window: w,
                        product_id: cfg.id,
                    })
                    .into(),
            }
        }
        Category::Counter => {
            let (name, tmpl) = c.parameter.split_once(':').unwrap_or((&c.parameter, ""));
            let key = stored_key(render(tmpl, &lead.vars(cfg.id)));
            let pending = lead
                .counters
                .get(&(name.to_string(), key.clone()))
                .copied()
                .unwrap_or(0);
            (facts.counter_value(name, &key) + pending).into()
        }
    }
}

pub(super) fn run_stage(
    cfg: &ProductConfig,
    stage: RuleStage,
    lead: &mut Lead,
    facts: &mut dyn Facts,
    reached: &[i64],
) {
    for rule in cfg.rules_of(stage).filter(|r| !reached.contains(&r.id)) {
        if let Some(why) = untargeted(rule, lead.env, facts) {
            if lead.trace_level == TraceLevel::Full {
                lead.trace.push(json!({"rule_id": rule.id, "stage": stage.as_str(), "matched": false, "skipped": why}));
            }
            continue;
        }
        let tracing = lead.trace_level != TraceLevel::Off || rule.shadow;
        // What the trace needs, kept raw: most rules do not match, and with
        // trace = matched their trace entry would be built only to be dropped.
        let mut evaluated = Vec::new();
        let mut matched = rule.logical == Logical::And || rule.conditions.is_empty();
        for c in &rule.conditions {
            let act = actual(cfg, c, lead, facts);
            let (r, note) = if c.templated {
                let expected = crate::conditions::render_value(&c.value, &lead.vars(cfg.id));
                c.eval_rendered(&act, &expected)
            } else {
                c.eval(&act)
            };
            if tracing {
                evaluated.push((c, act, r, note));
            }
            match rule.logical {
                Logical::And if !r => {
                    matched = false;
                    break;
                }
                Logical::Or if r => {
                    matched = true;
                    break;
                }
                _ => {}
            }
        }
        let entry = |matched: bool, evaluated| trace_entry(rule, stage, matched, evaluated);
        if rule.shadow {
            // the decision is as if the rule did not exist: no cap slot, no
            // action, no trace entry; a match is logged with what it would do
            if matched {
                let mut e = entry(true, evaluated);
                let ran: Vec<Value> = rule.actions.iter().map(|a| a.name.clone().into()).collect();
                let would = ["reject", "pause", "change", "side_effect"]
                    .into_iter()
                    .find(|w| rule.actions.iter().any(|a| a.kind.effect() == *w))
                    .unwrap_or("none");
                e["actions"] = Value::Array(ran.clone());
                let detail = json!({"actions": ran, "would": would, "trace": e});
                lead.log
                    .push(rule_entry(lead.origin, stage, rule, "shadow", detail));
            }
            continue;
        }
        // (`cap_counts = 'service_runs'`: the rule's service action takes
        // the slot when it calls the vendor, `take_slot`)
        if matched && rule.caps.any() && rule.caps.counts == CapCounts::Matches && {
            let slot = rule_slot(rule, lead.env, facts);
            !facts.take_rule_cap(&slot)
        } {
            if tracing {
                let mut e = entry(false, evaluated);
                e["skipped"] = "cap_reached".into();
                lead.trace.push(e);
            }
            lead.log.push(rule_entry(
                lead.origin,
                stage,
                rule,
                "cap_reached",
                json!({}),
            ));
            continue;
        }
        if !matched {
            if lead.trace_level == TraceLevel::Full {
                lead.trace.push(entry(false, evaluated));
            }
            continue;
        }
        lead.matched.insert(rule.id);
        let mut flow = Flow::Continue;
        let mut ran = Vec::new();
        for a in &rule.actions {
            ran.push(Value::from(a.name.clone()));
            match apply(cfg, rule, &a.kind, lead, facts) {
                Flow::Continue => {}
                f @ Flow::EndAll => flow = f,
                Flow::EndStage => {
                    if !matches!(flow, Flow::EndAll) {
                        flow = Flow::EndStage
                    }
                }
            }
        }
        if tracing {
            let mut e = entry(true, evaluated);
            e["actions"] = Value::Array(ran.clone());
            lead.trace.push(e);
        }
        let outcome = match flow {
            Flow::EndAll if lead.overflow.is_some() => "error",
            Flow::EndAll if lead.status == Status::Paused => "paused",
            Flow::EndAll => "reject",
            _ => "matched",
        };
        lead.log.push(rule_entry(
            lead.origin,
            stage,
            rule,
            outcome,
            json!({"actions": ran}),
        ));
        if !matches!(flow, Flow::Continue) {
            return;
        }
    }
}

/// A rule's row of the filter log.
pub(super) fn rule_entry(
    origin: &'static str,
    stage: RuleStage,
    rule: &Rule,
    outcome: &str,
    detail: Value,
) -> LogEntry {
    LogEntry {
        stage: stage.as_str(),
        origin,
        kind: "rule",
        ref_id: Some(rule.id),
        name: Some(rule.name.clone()),
        outcome: outcome.into(),
        detail,
        ..LogEntry::default()
    }
}

/// A rule's trace entry: its conditions as evaluated (condition, actual
/// value, result, note), whether it matched, and no actions yet.
pub(super) fn trace_entry(
    rule: &Rule,
    stage: RuleStage,
    matched: bool,
    evaluated: Vec<(&Condition, Value, bool, Option<String>)>,
) -> Value {
    let conds = evaluated
        .into_iter()
        .map(|(c, act, r, note)| {
            let mut t = obj(vec![
                ("parameter", Value::String(c.parameter.clone())),
                ("category", c.category.as_str().into()),
                ("operator", c.operator.as_str().into()),
                ("expected", c.value.clone()),
                ("actual", act),
                ("result", r.into()),
            ]);
            if let Some(n) = note {
                t["note"] = n.into();
            }
            t
        })
        .collect();
    obj(vec![
        ("rule_id", rule.id.into()),
        ("name", Value::String(rule.name.clone())),
        ("stage", stage.as_str().into()),
        ("matched", matched.into()),
        ("conditions", Value::Array(conds)),
        ("actions", Value::Array(Vec::new())),
    ])
}
