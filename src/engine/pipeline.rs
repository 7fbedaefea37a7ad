//! The pipeline of docs/architecture.md "The pipeline" for one lead: pre-validation rules, product
//! PL/DNPL, processing rules, after-processing rules. It returns the decision,
//! the filter-log rows and the effects for the store to persist.

use crate::actions::{ActionKind, TagMode};
use crate::conditions::{Category, Condition};
use crate::config::{ListKind, Logical, ProductConfig, ProductKind, Rule, RuleStage};
use crate::envelope::{value_text, Envelope};
use crate::facts::{normalize_list_value, stored_key, CallResult, Facts, JobSpec, ServiceCall};
use crate::global::{self, Execution, GlobalRule, RunOn, RunTime};
use crate::placeholders::{render, Vars};
use crate::settings::Settings;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::mem::take;

mod global_rules;
mod resume;
pub use global_rules::complete_async;
use global_rules::{run_global, run_global_rules, Trigger};
pub use resume::{resume, PauseEnd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Rejected,
    /// Held for SMS verification (`pause_for_verification`).
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Paused => "paused",
        }
    }
}

/// A filter-log row (`iclear.filter_log`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogEntry {
    pub stage: &'static str,
    pub origin: &'static str,
    pub kind: &'static str,
    pub ref_id: Option<i64>,
    pub name: Option<String>,
    pub outcome: String,
    pub detail: Value,
    /// A service request as sent (never a credential) and its answer.
    pub request: Option<Value>,
    pub response: Option<Value>,
}

/// Writes the store performs after the decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    AddToList {
        list_id: i64,
        value: String,
    },
    IncrementCounter {
        name: String,
        key: String,
        by: i64,
    },
    /// A service answer for the lookup cache.
    CacheResponse {
        service: String,
        key: String,
        data: Value,
    },
    /// "Run action from Tracking": an event the worker delivers to the
    /// `tracking` service's webhook.
    Track {
        event: String,
        payload: Value,
    },
    /// An iClaim answer for `iclear.consent_evidence`.
    ConsentEvidence {
        session_id: String,
        outcome: String,
        expires_at: Option<String>,
        response: Value,
    },
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub decision: Value,
    pub log: Vec<LogEntry>,
    pub effects: Vec<Effect>,
}

/// The working state of one lead.
struct Lead<'e> {
    env: &'e Envelope,
    lead_id: String,
    date: String,
    fields: Map<String, Value>,
    params: Map<String, Value>,
    status: Status,
    reason: Option<String>,
    rejected_by: Option<Value>,
    tags: Vec<String>,
    route: Option<Value>,
    silent_campaigns: Vec<i64>,
    block_monetization: bool,
    ping_tree_mark: Option<i64>,
    response: Map<String, Value>,
    matched: HashSet<i64>,
    counters: HashMap<(String, String), i64>,
    trace: Vec<Value>,
    trace_level: TraceLevel,
    log: Vec<LogEntry>,
    effects: Vec<Effect>,
    /// `origin` of the filter-log rows: "sync" while processing, "redirect"
    /// for Advanced Rules on Redirect.
    origin: &'static str,
    /// The redirect parameters (redirect stage only).
    redirect: Option<Map<String, Value>>,
    /// Service answers of this lead by service (conditions and
    /// set_fields_from_service read them), the decision's `services` and
    /// `queued` entries.
    results: HashMap<String, Value>,
    services: Vec<Value>,
    queued: Vec<i64>,
    /// Set by `pause_for_verification`: what the paused decision reports.
    verification: Option<Value>,
}

enum Flow {
    Continue,
    EndStage,
    EndAll,
}

impl<'e> Lead<'e> {
    fn new(env: &'e Envelope, lead_id: &str, facts: &dyn Facts, trace: TraceLevel) -> Lead<'e> {
        Lead {
            env,
            lead_id: lead_id.to_string(),
            date: facts.now().format("%Y-%m-%d").to_string(),
            fields: env.fields.clone(),
            params: env.params.clone(),
            status: Status::Accepted,
            reason: None,
            rejected_by: None,
            tags: Vec::new(),
            route: None,
            silent_campaigns: Vec::new(),
            block_monetization: false,
            ping_tree_mark: None,
            response: Map::new(),
            matched: HashSet::new(),
            counters: HashMap::new(),
            trace: Vec::new(),
            trace_level: trace,
            log: Vec::new(),
            effects: Vec::new(),
            origin: "sync",
            redirect: None,
            results: HashMap::new(),
            services: Vec::new(),
            queued: Vec::new(),
            verification: None,
        }
    }

    fn vars(&self, product_id: i64) -> Vars<'_> {
        Vars {
            fields: &self.fields,
            params: &self.params,
            lead_id: &self.lead_id,
            product_id,
            publisher_id: self.env.publisher_id,
            channel_id: self.env.channel_id,
            source_id: self.env.source_id,
            date: &self.date,
        }
    }

    /// The outcome: `decision` plus what this lead logged and must write.
    fn finish(self, decision: Value) -> Outcome {
        Outcome {
            status: self.status,
            decision,
            log: self.log,
            effects: self.effects,
        }
    }

    fn reject(&mut self, reason: String, by: Value) {
        self.status = Status::Rejected;
        self.reason = Some(reason);
        self.rejected_by = Some(by);
    }
}

/// Build a JSON object by moving the values in (`json!` would copy them).
fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// How much of the rule evaluation the decision's `trace` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceLevel {
    /// Every rule: skipped (and why), evaluated conditions, actions run.
    Full,
    /// Only the rules that matched (or hit their cap).
    Matched,
    /// No trace; the filter log still records matched rules.
    Off,
}

/// Process one lead with the full trace.
pub fn process(
    cfg: &ProductConfig,
    env: &Envelope,
    lead_id: &str,
    facts: &mut dyn Facts,
) -> Outcome {
    process_traced(cfg, env, lead_id, facts, TraceLevel::Full)
}

/// Process one lead. `lead_id` is the envelope's or one the store generated.
pub fn process_traced(
    cfg: &ProductConfig,
    env: &Envelope,
    lead_id: &str,
    facts: &mut dyn Facts,
    trace: TraceLevel,
) -> Outcome {
    let mut lead = Lead::new(env, lead_id, facts, trace);
    run_steps(cfg, &mut lead, facts, Step::PreValidation, &[]);
    let decision = decision(cfg, &mut lead);
    lead.finish(decision)
}

/// The steps of the pipeline, in order (docs/architecture.md "The pipeline").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    PreValidation,
    Validation,
    Lists,
    BeforeFiltration,
    Processing,
    AfterFiltration,
    AfterProcessing,
}

const STEPS: [Step; 7] = [
    Step::PreValidation,
    Step::Validation,
    Step::Lists,
    Step::BeforeFiltration,
    Step::Processing,
    Step::AfterFiltration,
    Step::AfterProcessing,
];

/// Run the pipeline from step `from` on. In that step, the rules in
/// `reached` are not run again (a resumed lead ran them before its pause).
fn run_steps(
    cfg: &ProductConfig,
    lead: &mut Lead,
    facts: &mut dyn Facts,
    from: Step,
    reached: &[i64],
) {
    for step in STEPS.into_iter().filter(|s| *s >= from) {
        let done = if step == from { reached } else { &[] };
        let accepted = lead.status == Status::Accepted;
        match step {
            Step::PreValidation if accepted => {
                run_stage(cfg, RuleStage::PreValidation, lead, facts, done)
            }
            Step::Validation if accepted => validate(cfg, lead),
            Step::Lists if accepted => check_lists(cfg, lead, facts),
            Step::BeforeFiltration if accepted => {
                run_global_rules(cfg, RunTime::BeforeFiltration, lead, facts)
            }
            Step::Processing if accepted => {
                run_stage(cfg, RuleStage::Processing, lead, facts, done)
            }
            Step::AfterFiltration => run_global_rules(cfg, RunTime::AfterFiltration, lead, facts),
            // After-processing rules see the outcome, whatever it is (seed
            // 002). A paused lead has none yet: they run when it resumes.
            Step::AfterProcessing if lead.status != Status::Paused => {
                run_stage(cfg, RuleStage::AfterProcessing, lead, facts, done)
            }
            _ => {}
        }
    }
}

/// Every key of a decision, in the order the builders write them
/// (docs/contract.md documents each; a test holds both builders to it).
pub const DECISION_KEYS: &[&str] = &[
    "lead_id",
    "product",
    "stage",
    "status",
    "reason",
    "rejected_by",
    "fields",
    "params",
    "tags",
    "route",
    "silent_campaigns",
    "block_monetization",
    "ping_tree_mark",
    "response",
    "queued",
    "services",
    "verification",
    "trace",
];

/// The decision of a lead that could not be processed: status `error`,
/// `reason` saying why, the lead's fields and params as they came, and
/// every other key empty.
pub fn error_decision(
    lead_id: &str,
    product: &str,
    stage: &str,
    reason: &str,
    fields: Value,
    params: Value,
) -> Value {
    obj(vec![
        ("lead_id", lead_id.into()),
        ("product", product.into()),
        ("stage", stage.into()),
        ("status", "error".into()),
        ("reason", reason.into()),
        ("rejected_by", Value::Null),
        ("fields", fields),
        ("params", params),
        ("tags", json!([])),
        ("route", Value::Null),
        ("silent_campaigns", json!([])),
        ("block_monetization", false.into()),
        ("ping_tree_mark", Value::Null),
        ("response", json!({})),
        ("queued", json!([])),
        ("services", json!([])),
        ("verification", Value::Null),
        ("trace", json!([])),
    ])
}

/// The decision of a processed lead (its working state is moved out).
fn decision(cfg: &ProductConfig, lead: &mut Lead) -> Value {
    obj(vec![
        ("lead_id", Value::String(take(&mut lead.lead_id))),
        ("product", Value::String(cfg.name.clone())),
        ("stage", lead.env.stage.as_str().into()),
        ("status", lead.status.as_str().into()),
        (
            "reason",
            lead.reason.take().map(Value::String).unwrap_or(Value::Null),
        ),
        (
            "rejected_by",
            lead.rejected_by.take().unwrap_or(Value::Null),
        ),
        ("fields", Value::Object(take(&mut lead.fields))),
        ("params", Value::Object(take(&mut lead.params))),
        (
            "tags",
            take(&mut lead.tags)
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        ("route", lead.route.take().unwrap_or(Value::Null)),
        // Block Monetization "prevents the lead from being sold through the
        // Silent Campaign" (seed): whichever action came first, none is left
        (
            "silent_campaigns",
            take(&mut lead.silent_campaigns)
                .into_iter()
                .filter(|_| !lead.block_monetization)
                .map(Value::from)
                .collect(),
        ),
        ("block_monetization", lead.block_monetization.into()),
        (
            "ping_tree_mark",
            lead.ping_tree_mark
                .take()
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        ("response", Value::Object(take(&mut lead.response))),
        (
            "queued",
            take(&mut lead.queued)
                .into_iter()
                .map(Value::from)
                .collect(),
        ),
        ("services", Value::Array(take(&mut lead.services))),
        (
            "verification",
            lead.verification.take().unwrap_or(Value::Null),
        ),
        ("trace", Value::Array(take(&mut lead.trace))),
    ])
}

/// Product-level PL/DNPL (docs/architecture.md "The pipeline" step 3).
fn check_lists(cfg: &ProductConfig, lead: &mut Lead, facts: &mut dyn Facts) {
    let lists: Vec<_> = cfg.lists.iter().filter(|l| l.product_level).collect();
    let values: Vec<Option<String>> = lists
        .iter()
        .map(|l| {
            lead.fields
                .get(&l.field)
                .and_then(value_text)
                .map(|v| normalize_list_value(&v))
                .filter(|v| !v.is_empty())
        })
        .collect();
    // One question for all lists; the store decides how to look them up.
    let probes: Vec<(i64, String)> = lists
        .iter()
        .zip(&values)
        .filter_map(|(l, v)| v.clone().map(|v| (l.id, v)))
        .collect();
    let hits = if probes.is_empty() {
        Vec::new()
    } else {
        facts.lists_containing(&probes)
    };
    for (list, value) in lists.into_iter().zip(values) {
        let on_list = hits.contains(&list.id);
        let reject = match (list.kind, &value) {
            (ListKind::Dnpl, Some(_)) => on_list,
            (ListKind::Dnpl, None) => false,
            (ListKind::Pl, Some(_)) => !on_list,
            (ListKind::Pl, None) => true,
        };
        if reject {
            let reason = match list.kind {
                ListKind::Dnpl => {
                    format!("{} is on the do-not-present list {}", list.field, list.name)
                }
                ListKind::Pl => format!("{} is not on the present list {}", list.field, list.name),
            };
            lead.log.push(LogEntry {
                stage: "lists",
                origin: "sync",
                kind: "list",
                ref_id: Some(list.id),
                name: Some(list.name.clone()),
                outcome: "reject".into(),
                detail: json!({"field": list.field, "kind": if list.kind == ListKind::Pl {"pl"} else {"dnpl"}}),
                ..LogEntry::default()
            });
            lead.reject(
                reason,
                json!({"kind": "list", "id": list.id, "name": list.name}),
            );
            return;
        }
    }
}

fn in_list(v: Option<i64>, ids: &[i64]) -> bool {
    v.is_some_and(|v| ids.contains(&v))
}

/// Why a rule does not apply to this lead, if it does not.
fn untargeted(rule: &Rule, env: &Envelope, facts: &mut dyn Facts) -> Option<&'static str> {
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

fn actual(
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

fn run_stage(
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
        if matched && rule.caps.any() && !facts.take_rule_cap(rule, lead.env.source_id) {
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
fn rule_entry(
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
fn trace_entry(
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

/// Render every template from the values before the action, so that one
/// action's assignments do not see each other.
fn render_all(
    templates: &std::collections::BTreeMap<String, String>,
    lead: &Lead,
    product_id: i64,
) -> Vec<(String, String)> {
    let vars = lead.vars(product_id);
    templates
        .iter()
        .map(|(k, t)| (k.clone(), render(t, &vars)))
        .collect()
}

fn apply(
    cfg: &ProductConfig,
    rule: &Rule,
    kind: &ActionKind,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) -> Flow {
    match kind {
        ActionKind::PauseForVerification(p) => return pause(cfg, rule, p, lead, facts),
        ActionKind::RunThirdPartyService(r) => {
            // after processing the decision is made: an answer that would
            // reject flags instead (an async target only ever queues)
            let decided = (rule.stage == RuleStage::AfterProcessing).then(|| {
                let marks = (lead.log.len(), lead.services.len());
                (
                    lead.status,
                    lead.reason.clone(),
                    lead.rejected_by.clone(),
                    marks,
                )
            });
            match cfg.global_rules.iter().find(|g| g.id == r.global_rule_id) {
                Some(global_rule) => run_global(cfg, global_rule, Trigger::Action, lead, facts),
                // deleted since the action was saved: say so, do not fail the lead
                None => lead.log.push(LogEntry {
                    stage: rule.stage.as_str(),
                    origin: "on_demand",
                    kind: "service",
                    ref_id: Some(r.global_rule_id),
                    outcome: "skipped".into(),
                    detail: json!({"why": "no such global rule for this product", "cost": 0}),
                    ..LogEntry::default()
                }),
            }
            if let Some((status, reason, by, (logged, listed))) = decided {
                if lead.status != status {
                    (lead.status, lead.reason, lead.rejected_by) = (status, reason, by);
                    for entry in lead.log[logged..]
                        .iter_mut()
                        .filter(|e| e.outcome == "reject")
                    {
                        entry.outcome = "flagged".into();
                        entry.detail["after_processing"] = "the decision stands".into();
                    }
                    for s in lead.services[listed..].iter_mut() {
                        if s["outcome"] == "reject" {
                            s["outcome"] = "flagged".into();
                        }
                    }
                }
            }
            if lead.status == Status::Rejected {
                return Flow::EndAll;
            }
        }
        ActionKind::SetFieldsFromService(m) => {
            if let Some(data) = lead.results.get(&m.service) {
                let set: Vec<(String, Value)> = m
                    .mapping
                    .iter()
                    .filter_map(|(field, from)| {
                        let v = if from.starts_with('/') {
                            data.pointer(from)
                        } else {
                            data.get(from)
                        };
                        v.filter(|v| !v.is_null())
                            .map(|v| (field.clone(), v.clone()))
                    })
                    .collect();
                lead.fields.extend(set);
            }
        }
        ActionKind::StopProcessing(m) => {
            let reason = match m.message.as_deref() {
                Some(msg) if !msg.is_empty() => render(msg, &lead.vars(cfg.id)),
                _ => format!("rejected by rule {}", rule.name),
            };
            lead.reject(
                reason,
                json!({"kind": "rule", "id": rule.id, "name": rule.name}),
            );
            return Flow::EndAll;
        }
        ActionKind::BlockMonetization => lead.block_monetization = true,
        ActionKind::RouteLeadTo(r) => {
            lead.route = Some(match (r.campaign_id, r.ping_tree_id, r.ivr_id) {
                (Some(c), _, _) => json!({"campaign_id": c}),
                (_, Some(p), _) => json!({"ping_tree_id": p}),
                (_, _, Some(i)) => json!({"ivr_id": i}),
                _ => Value::Null,
            })
        }
        ActionKind::TriggerSilentCampaign(c) => {
            if !lead.silent_campaigns.contains(&c.campaign_id) {
                lead.silent_campaigns.push(c.campaign_id)
            }
        }
        ActionKind::ChangeLeadBodyFields(s) => {
            for (k, v) in render_all(&s.fields, lead, cfg.id) {
                lead.fields.insert(k, Value::String(v));
            }
        }
        ActionKind::ChangeInputData(s) => {
            for (k, v) in render_all(&s.params, lead, cfg.id) {
                lead.params.insert(k, Value::String(v));
            }
            for (k, v) in render_all(&s.fields, lead, cfg.id) {
                lead.fields.insert(k, Value::String(v));
            }
        }
        ActionKind::LeadTags(t) => {
            for tag in &t.tags {
                match t.mode {
                    TagMode::Add if !lead.tags.contains(tag) => lead.tags.push(tag.clone()),
                    TagMode::Remove => lead.tags.retain(|x| x != tag),
                    _ => {}
                }
            }
        }
        ActionKind::StopProcessingRules | ActionKind::StopPreValidationRules => {
            return Flow::EndStage
        }
        ActionKind::AddToList(a) => {
            for id in &a.list_ids {
                let field = a
                    .field
                    .clone()
                    .or_else(|| cfg.list(*id).map(|l| l.field.clone()));
                let value = field
                    .and_then(|f| lead.fields.get(&f).and_then(value_text))
                    .map(|v| normalize_list_value(&v))
                    .filter(|v| !v.is_empty());
                if let Some(value) = value {
                    lead.effects.push(crate::pipeline::Effect::AddToList {
                        list_id: *id,
                        value,
                    });
                }
            }
        }
        ActionKind::MarkPingTree(p) => lead.ping_tree_mark = Some(p.ping_tree_id),
        ActionKind::IncrementCounter(c) => {
            let key = stored_key(render(&c.key, &lead.vars(cfg.id)));
            *lead
                .counters
                .entry((c.counter.clone(), key.clone()))
                .or_default() += c.by;
            lead.effects.push(Effect::IncrementCounter {
                name: c.counter.clone(),
                key,
                by: c.by,
            });
        }
        ActionKind::FindAndReplace(f, re) => {
            // On redirect the field is a redirect parameter, else a lead field.
            let target = match lead.redirect.as_mut() {
                Some(r) => r,
                None => &mut lead.fields,
            };
            if let Some(cur) = target.get(&f.field).and_then(value_text) {
                let new = match re {
                    Some(re) => re.replace_all(&cur, f.replace.as_str()).into_owned(),
                    None => cur.replace(&f.find, &f.replace),
                };
                target.insert(f.field.clone(), Value::String(new));
            }
        }
        ActionKind::EmailDomainCorrector(e) => {
            if let Some(fixed) = lead
                .fields
                .get(&e.field)
                .and_then(value_text)
                .and_then(|v| crate::email::correct_email(&v))
            {
                lead.fields.insert(e.field.clone(), Value::String(fixed));
            }
        }
        ActionKind::RunTrackingAction(t) => {
            lead.log.push(LogEntry {
                stage: rule.stage.as_str(),
                origin: lead.origin,
                kind: "tracking",
                ref_id: Some(rule.id),
                name: Some(t.event.clone()),
                outcome: "queued".into(),
                detail: t.payload.clone(),
                ..LogEntry::default()
            });
            lead.effects.push(Effect::Track {
                event: t.event.clone(),
                payload: t.payload.clone(),
            });
        }
        ActionKind::ChangeResponseParameter(r) => {
            let v = render(&r.value, &lead.vars(cfg.id));
            lead.response.insert(r.name.clone(), Value::String(v));
        }
    }
    Flow::Continue
}

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
    let mut lead = Lead::new(env, lead_id, facts, trace);
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
    run_stage(cfg, RuleStage::Redirect, &mut lead, facts, &[]);
    // the redirect rules that matched (rule ids are unique across stages)
    let mut matched: Vec<i64> = lead
        .matched
        .iter()
        .copied()
        .filter(|id| !processed.matched.contains(id))
        .collect();
    matched.sort_unstable();
    let decision = obj(vec![
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
    lead.finish(decision)
}

/// The product's field definitions, after pre-validation (which may repair
/// raw data) and before the lists: the first field that fails rejects the
/// lead, logged in the pre-validation stage (pre_screen_reject_log).
fn validate(cfg: &ProductConfig, lead: &mut Lead) {
    for f in &cfg.fields {
        if let Some(why) = f.check(lead.fields.get(&f.name)) {
            lead.log.push(LogEntry {
                stage: "pre_validation",
                origin: lead.origin,
                kind: "validation",
                ref_id: Some(f.id),
                name: Some(f.name.clone()),
                outcome: "reject".into(),
                detail: json!({"reason": why}),
                ..LogEntry::default()
            });
            lead.reject(
                format!("field {}: {why}", f.name),
                json!({"kind": "validation", "id": f.id, "name": f.name}),
            );
            return;
        }
    }
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

/// "Pause Lead for Verification": a phone verified within the lifetime
/// passes on; otherwise a code is stored as pending, the SMS is queued and
/// the lead is paused. A lead without a phone, or whose verification cannot
/// be started (history unreachable), is rejected: an unverifiable lead does
/// not pass a verification rule.
fn pause(
    cfg: &ProductConfig,
    rule: &Rule,
    p: &crate::actions::Pause,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) -> Flow {
    let by = json!({"kind": "rule", "id": rule.id, "name": rule.name});
    let Some(phone) = lead
        .fields
        .get(&p.phone_field)
        .and_then(value_text)
        .and_then(|v| crate::verification::normalize_phone(&v))
    else {
        lead.reject(
            format!("no phone number to verify in {}", p.phone_field),
            by,
        );
        return Flow::EndAll;
    };
    let lifetime = cfg
        .global_rules
        .iter()
        .find_map(|g| match &g.settings {
            Settings::VerificationHistory(v) => v.sms_lifetime_s,
            _ => None,
        })
        .unwrap_or(crate::verification::DEFAULT_SMS_LIFETIME_S);
    let log = |lead: &mut Lead, outcome: &str, detail: Value| {
        lead.log.push(LogEntry {
            stage: rule.stage.as_str(),
            origin: lead.origin,
            kind: "verification",
            ref_id: Some(rule.id),
            name: Some(rule.name.clone()),
            outcome: outcome.into(),
            detail,
            ..LogEntry::default()
        })
    };
    let started = match facts.sms_verified(&cfg.name, &phone) {
        Ok(Some(r)) if (facts.now() - r.verified_at).num_seconds() <= lifetime => {
            log(
                lead,
                "already_verified",
                json!({"verified_at": r.verified_at.to_rfc3339()}),
            );
            return Flow::Continue;
        }
        Ok(_) => facts.start_sms_verification(&cfg.name, &phone, &lead.lead_id),
        Err(e) => Err(e),
    };
    match started {
        Ok(job) => {
            lead.status = Status::Paused;
            lead.reason = Some(match p.message.as_deref() {
                Some(m) if !m.is_empty() => render(m, &lead.vars(cfg.id)),
                _ => "paused for SMS verification".into(),
            });
            // what resuming needs: the phone it waits for, and the rules of
            // the stage the lead reached (they are not run again)
            let reached: Vec<i64> = cfg
                .rules_of(rule.stage)
                .map(|r| r.id)
                .take_while(|id| *id != rule.id)
                .chain([rule.id])
                .collect();
            lead.verification = Some(json!({
                "lead_status": p.lead_status, "phone_field": p.phone_field, "phone": phone,
                "sms_job": job, "rule_id": rule.id, "stage": rule.stage.as_str(),
                "reached": reached,
            }));
            lead.queued.extend(job);
            log(
                lead,
                "paused",
                json!({"lead_status": p.lead_status, "sms_job": job}),
            );
        }
        Err(e) => lead.reject(format!("verification cannot start: {e}"), by),
    }
    Flow::EndAll
}
