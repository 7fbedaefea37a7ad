//! One lead from envelope to persisted decision: parse, load the product's
//! configuration, let the engine decide, persist.

use crate::lead_id::new_lead_id;
use crate::store;
use iclear_engine::config::ProductConfig;
use iclear_engine::envelope::Envelope;
use iclear_engine::{pipeline, ConfigError, InputError};
use serde_json::Value;

pub enum LeadError {
    Input(InputError),
    Config(ConfigError),
    /// The verification history cannot be reached (a hub that is down).
    Unavailable(String),
}

impl std::fmt::Display for LeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeadError::Input(e) => write!(f, "iclear: {e}"),
            LeadError::Config(e) => write!(f, "iclear: configuration cannot be loaded: {e}"),
            LeadError::Unavailable(e) => write!(f, "iclear: {e}"),
        }
    }
}

/// The configuration of `product` (an input error when there is none).
fn product_config(product: &str) -> Result<std::rc::Rc<ProductConfig>, LeadError> {
    store::config::product(product)
        .map_err(LeadError::Config)?
        .ok_or_else(|| {
            LeadError::Input(InputError::new(
                "product",
                format!("names unknown product {product:?}"),
            ))
        })
}

/// Advanced Rules on Redirect for an already processed lead (docs/contract.md).
pub fn process_redirect(lead_id: &str, redirect: &Value) -> Result<Value, LeadError> {
    let input = |k: &str, m: &str| LeadError::Input(InputError::new(k, m));
    let redirect = redirect
        .as_object()
        .ok_or_else(|| input("redirect", "must be a JSON object"))?
        .clone();
    if let Some(k) = redirect
        .keys()
        .find(|k| redirect[*k].is_object() || redirect[*k].is_array())
    {
        return Err(input(
            &format!("redirect.{k}"),
            "must be a string, number, boolean or null",
        ));
    }
    let (envelope, decision) = store::persist::last_decision(lead_id)
        .ok_or_else(|| input("lead_id", &format!("names no processed lead ({lead_id:?})")))?;
    let mut env = Envelope::parse(&envelope).map_err(LeadError::Input)?;
    // The lead as processing left it.
    if let Some(f) = decision.get("fields").and_then(Value::as_object) {
        env.fields = f.clone();
    }
    if let Some(p) = decision.get("params").and_then(Value::as_object) {
        env.params = p.clone();
    }
    let cfg = product_config(&env.product)?;
    let mut facts = facts_for(&env, &cfg.time_zone);
    let processed =
        pipeline::Processed::from_json(&decision, &store::persist::processed_log(lead_id));
    let out = pipeline::process_redirect(
        &cfg,
        &env,
        lead_id,
        redirect,
        &processed,
        &mut facts,
        trace_level(),
    );
    store::persist::save_log(lead_id, cfg.id, &out.log);
    store::persist::apply(&out.effects, lead_id, cfg.id);
    Ok(out.decision)
}

fn trace_level() -> pipeline::TraceLevel {
    crate::gucs::trace()
}

/// A lead posted to `iclear_process`: a re-post of a lead (its `lead_id`)
/// that already has a final decision for its product returns that decision
/// and runs nothing again (no paid lookup, counter, list addition or
/// tracking event twice), unless it says `"reprocess": true`. A paused lead
/// is processed again (a re-post after its code is confirmed finds it
/// verified). An attached table relies on its own unique key instead
/// (src/store/taken_keys.rs): a re-inserted row is never processed again.
pub fn process_posted(lead: &Value) -> Result<Value, LeadError> {
    let env = Envelope::parse(lead).map_err(LeadError::Input)?;
    if let (Some(id), false) = (env.lead_id.as_deref(), env.reprocess) {
        if let Some(decision) = final_decision(id, &env.product) {
            return Ok(decision);
        }
    }
    process(lead)
}

/// The lead's latest decision for `product`, whole, when it is final.
fn final_decision(lead_id: &str, product: &str) -> Option<Value> {
    let (envelope, mut decision) = store::persist::last_decision_of(lead_id, product)?;
    if !matches!(decision["status"].as_str(), Some("accepted" | "rejected")) {
        return None;
    }
    // the stored decision leaves out what the envelope holds, and empty values
    for k in pipeline::DECISION_KEYS {
        if decision.get(*k).is_none() {
            decision[*k] = match *k {
                "fields" | "params" => envelope
                    .get(*k)
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                "tags" | "silent_campaigns" | "queued" | "services" | "trace" => {
                    Value::Array(Vec::new())
                }
                "response" => Value::Object(Default::default()),
                "block_monetization" => Value::Bool(false),
                _ => Value::Null,
            };
        }
    }
    Some(decision)
}

/// Process a lead envelope and persist the outcome; returns the decision.
pub fn process(lead: &Value) -> Result<Value, LeadError> {
    let env = Envelope::parse(lead).map_err(LeadError::Input)?;
    let cfg = product_config(&env.product)?;
    let lead_id = env.lead_id.clone().unwrap_or_else(new_lead_id);
    let mut facts = facts_for(&env, &cfg.time_zone);
    let out = pipeline::process_traced(&cfg, &env, &lead_id, &mut facts, trace_level());
    let mut envelope = lead.clone();
    envelope["lead_id"] = Value::String(lead_id.clone());
    store::persist::save(&store::persist::Record {
        lead_id: &lead_id,
        product_id: Some(cfg.id),
        stage: env.stage.as_str(),
        status: out.status.as_str(),
        envelope: &envelope,
        decision: &out.decision,
        log: &out.log,
        effects: &out.effects,
    });
    Ok(out.decision)
}

/// `iclear.record_verification(product, lead)`: the signature of the lead
/// under the product's verification_history rule, stored in the history.
/// `lead` is an envelope (`{"fields": {..}, "params": {..}}`) or a bare
/// fields object.
pub fn record_verification(product: &str, lead: &Value) -> Result<String, LeadError> {
    let sig = verification_signature(product, lead)?.ok_or_else(|| {
        LeadError::Input(InputError::new(
            "lead",
            "lacks a value the signature template needs: nothing recorded",
        ))
    })?;
    store::verification::record_signature(product, &sig).map_err(|e| {
        LeadError::Unavailable(format!("the verification history cannot be written: {e}"))
    })?;
    Ok(sig)
}

/// The signature of `lead` under the product's verification_history rule
/// (None: the lead lacks a value the template needs).
pub fn verification_signature(product: &str, lead: &Value) -> Result<Option<String>, LeadError> {
    let input = |k: &str, m: String| LeadError::Input(InputError::new(k, m));
    let cfg = store::config::product(product)
        .map_err(LeadError::Config)?
        .ok_or_else(|| input("product", format!("names unknown product {product:?}")))?;
    let template = cfg
        .global_rules
        .iter()
        .filter_map(|g| g.settings.verification_history())
        .find(|v| v.signature_enabled)
        .and_then(|v| v.signature_template.clone())
        .ok_or_else(|| {
            input(
                "product",
                format!("{product:?} has no verification_history rule with signature_enabled"),
            )
        })?;
    let mut envelope = match lead {
        Value::Object(o) if o.get("fields").is_some_and(Value::is_object) => lead.clone(),
        Value::Object(_) => serde_json::json!({"fields": lead}),
        _ => return Err(input("lead", "must be a JSON object".into())),
    };
    envelope["product"] = Value::String(product.to_string());
    let env = Envelope::parse(&envelope).map_err(LeadError::Input)?;
    let lead_id = env.lead_id.clone().unwrap_or_default();
    let date = store::local_time::Zone::or_utc(&cfg.time_zone)
        .date_of(chrono::Utc::now())
        .format("%Y-%m-%d")
        .to_string();
    let vars = iclear_engine::placeholders::Vars {
        fields: &env.fields,
        params: &env.params,
        lead_id: &lead_id,
        product_id: cfg.id,
        publisher_id: env.publisher_id,
        channel_id: env.channel_id,
        source_id: env.source_id,
        date: &date,
    };
    iclear_engine::service::verification_history::signature(&template, &vars)
        .map_err(|e| LeadError::Config(ConfigError::new("settings.signature_template", e)))
}

/// The engine's questions about this lead, answered from Postgres.
fn facts_for(env: &Envelope, time_zone: &str) -> store::facts::PgFacts {
    store::facts::PgFacts {
        source_created_at: source_created_at(env),
        zone: store::local_time::Zone::or_utc(time_zone),
        takes: Default::default(),
    }
}

/// When the lead's source was created: the envelope's `source_created_at`
/// (the lead store's date) or the `iclear.source` row's, which a first sight
/// registers ("All New" targeting).
fn source_created_at(env: &Envelope) -> Option<chrono::DateTime<chrono::Utc>> {
    env.source_id.map(|s| {
        store::config::register_source(s, env.publisher_id, env.channel_id, env.source_created_at)
    })
}

/// Finish the paused leads in `taken` (their pause ended as `end`): each
/// gets its final decision, and its attached row, if any, the outcome. A
/// lead that cannot be finished gets an `error` decision saying why; it is
/// never left paused. Returns the leads finished.
pub fn finish_paused(taken: Vec<store::paused::PausedLead>, end: pipeline::PauseEnd) -> usize {
    use std::panic::AssertUnwindSafe;
    let mut finished = 0;
    for p in taken {
        let lead_id = p.lead_id.as_str();
        let done = store::guarded(AssertUnwindSafe(|| resume(lead_id, end)));
        let decision = match done {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => continue, // finished since, or re-posted: not paused any more
            Ok(Err(e)) => resume_failed(lead_id, &e.to_string()),
            Err(e) => resume_failed(lead_id, &e),
        };
        finished += 1;
        if let Some((table, id_column)) = &p.row {
            let status = decision["status"].as_str().unwrap_or("error");
            let outcome = crate::row::outcome(&decision);
            let written = store::guarded(AssertUnwindSafe(|| {
                store::paused::update_row(*table, id_column, lead_id, status, &outcome)
            }));
            if let Err(e) = written {
                pgrx::warning!(
                    "iclear: lead {lead_id} is {status}, but its row was not updated: {e}"
                );
            }
        }
    }
    finished
}

/// The final decision of a paused lead, persisted (None: its latest
/// decision is not paused).
fn resume(lead_id: &str, end: pipeline::PauseEnd) -> Result<Option<Value>, LeadError> {
    let Some((envelope, mut paused)) = store::persist::last_decision(lead_id) else {
        return Ok(None);
    };
    if paused["status"] != "paused" {
        return Ok(None);
    }
    // the stored decision leaves out what the envelope holds
    for k in ["fields", "params"] {
        if paused.get(k).is_none() {
            paused[k] = envelope
                .get(k)
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
        }
    }
    let env = Envelope::parse(&envelope).map_err(LeadError::Input)?;
    let cfg = product_config(&env.product)?;
    let mut facts = facts_for(&env, &cfg.time_zone);
    let processed =
        pipeline::Processed::from_json(&paused, &store::persist::processed_log(lead_id));
    let out = pipeline::resume(
        &cfg,
        &env,
        lead_id,
        &paused,
        &processed,
        end,
        &mut facts,
        trace_level(),
    );
    store::persist::save(&store::persist::Record {
        lead_id,
        product_id: Some(cfg.id),
        stage: env.stage.as_str(),
        status: out.status.as_str(),
        envelope: &envelope,
        decision: &out.decision,
        log: &out.log,
        effects: &out.effects,
    });
    Ok(Some(out.decision))
}

/// Record the `error` decision of a paused lead that could not be finished.
fn resume_failed(lead_id: &str, message: &str) -> Value {
    let (envelope, paused) = store::persist::last_decision(lead_id).unwrap_or_default();
    let mut decision = paused.clone();
    decision["status"] = "error".into();
    decision["reason"] = format!("the paused lead could not be finished: {message}").into();
    let product = paused["product"].as_str().unwrap_or_default();
    store::persist::save_error(lead_id, product, &envelope, &decision);
    decision
}
