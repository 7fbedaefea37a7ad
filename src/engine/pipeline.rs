//! The pipeline of docs/architecture.md "The pipeline" for one lead: pre-validation rules, product
//! PL/DNPL, processing rules, after-processing rules. It returns the decision,
//! the filter-log rows and the effects for the store to persist.

use crate::actions::{ActionKind, TagMode};
use crate::conditions::{Category, Condition};
use crate::config::{CapCounts, ListKind, Logical, ProductConfig, ProductKind, Rule, RuleStage};
use crate::envelope::{value_text, Envelope};
use crate::facts::{
    stored_key, CallResult, Facts, HistoryQuery, JobSpec, PerSource, RuleSlot, ServiceCall,
};
use crate::global::{Execution, GlobalRule, RunOn, RunTime};
use crate::placeholders::{render, Vars};
use crate::service::Settings;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::mem::take;

mod actions;
mod global_rules;
mod history;
mod redirect;
mod resume;
mod rules;
mod screening;
use actions::apply;
pub use global_rules::complete_async;
use global_rules::{run_global, run_global_rules, store_signatures, Trigger};
use history::record_history;
pub use redirect::{process_redirect, Processed};
pub use resume::{resume, PauseEnd};
use rules::{rule_slot, run_stage};
use screening::{check_lists, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Rejected,
    /// Held for SMS verification (`pause_for_verification`).
    Paused,
    /// Could not be decided: a value or the lead outgrew its limit (the
    /// decision's `reason` names it).
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Paused => "paused",
            Status::Error => "error",
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
    /// The lead, for the history `history` conditions read: its normalised
    /// values of one key's fields, recorded with its final status.
    RecordHistory {
        key: String,
        values: Vec<String>,
        status: &'static str,
    },
    /// A signature for the verification history (`store_signature_on_accept`).
    RecordSignature {
        signature: String,
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
    /// Why the lead outgrew a limit (`within_bounds`): it is decided `error`.
    overflow: Option<String>,
    /// While a "Run third-party service" action runs: the slot of its
    /// rule's caps that a paid lookup takes too (`cap_counts =
    /// 'service_runs'`).
    paying: Option<RuleSlot>,
}

enum Flow {
    Continue,
    EndStage,
    EndAll,
}

impl<'e> Lead<'e> {
    fn new(
        cfg: &ProductConfig,
        env: &'e Envelope,
        lead_id: &str,
        facts: &dyn Facts,
        trace: TraceLevel,
    ) -> Lead<'e> {
        Lead {
            env,
            lead_id: lead_id.to_string(),
            date: facts.local_date(&cfg.time_zone),
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
            overflow: None,
            paying: None,
        }
    }

    /// Are the lead's values within the limits a posted lead has (each at
    /// most `limits::VALUE_BYTES`, all together at most `limits::LEAD_BYTES`)
    /// after an action changed them? If not, the lead is decided `error`
    /// with the limit named (SECURITY.md "Hostile leads"): no template or
    /// replacement makes a decision of unbounded size.
    fn within_bounds(&mut self) -> bool {
        use crate::envelope::limits::{LEAD_BYTES, VALUE_BYTES};
        let mut total = 0usize;
        let redirect = self.redirect.iter();
        let maps = [
            ("fields", &self.fields),
            ("params", &self.params),
            ("response", &self.response),
        ]
        .into_iter()
        .chain(redirect.map(|r| ("redirect", r)));
        for (scope, map) in maps {
            for (k, v) in map {
                let n = match v {
                    Value::String(s) => s.len(),
                    v => v.to_string().len(),
                };
                if n > VALUE_BYTES {
                    self.overflow = Some(format!(
                        "{scope}.{k} is over the limit of {VALUE_BYTES} bytes per value after the rules' actions"
                    ));
                    return false;
                }
                total += k.len() + n;
            }
        }
        if total > LEAD_BYTES {
            self.overflow = Some(format!(
                "the lead is over the limit of {LEAD_BYTES} bytes after the rules' actions"
            ));
            return false;
        }
        true
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
    let mut lead = Lead::new(cfg, env, lead_id, facts, trace);
    run_steps(cfg, &mut lead, facts, Step::PreValidation, &[]);
    store_signatures(cfg, &mut lead);
    record_history(cfg, &mut lead);
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
        if lead.overflow.is_some() {
            return;
        }
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
    "config_version",
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
        ("config_version", Value::Null),
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

/// The decision of a processed lead (its working state is moved out). A
/// lead that outgrew a limit is decided `error`, with the fields and params
/// it came with, and nothing it would have changed (effects) is written.
fn decision(cfg: &ProductConfig, lead: &mut Lead) -> Value {
    if let Some(why) = lead.overflow.take() {
        lead.status = Status::Error;
        lead.effects.clear();
        let mut d = error_decision(
            &lead.lead_id,
            &cfg.name,
            lead.env.stage.as_str(),
            &format!("iclear: {why}"),
            Value::Object(lead.env.fields.clone()),
            Value::Object(lead.env.params.clone()),
        );
        d["config_version"] = cfg.version.into();
        return d;
    }
    obj(vec![
        ("lead_id", Value::String(take(&mut lead.lead_id))),
        ("product", Value::String(cfg.name.clone())),
        ("stage", lead.env.stage.as_str().into()),
        ("config_version", cfg.version.into()),
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
