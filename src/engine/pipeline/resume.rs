//! The end of a pause (`pause_for_verification`): once the phone is
//! confirmed the lead goes on from where it paused; once its code expires
//! it is rejected. Either way the after-processing rules then see the
//! outcome, and the rules the lead ran before the pause are not run again
//! (their counters, caps and lookups were spent then).

use super::*;

/// How a pause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseEnd {
    /// The phone was confirmed: processing continues.
    Verified,
    /// The code expired unconfirmed: the lead is rejected.
    Expired,
}

impl PauseEnd {
    fn as_str(self) -> &'static str {
        match self {
            PauseEnd::Verified => "verified",
            PauseEnd::Expired => "expired",
        }
    }
}

/// The final decision of a paused lead. `paused` is its paused decision
/// (fields and params included), `processed` what its log holds: the rules
/// that matched and the service answers.
#[allow(clippy::too_many_arguments)]
pub fn resume(
    cfg: &ProductConfig,
    env: &Envelope,
    lead_id: &str,
    paused: &Value,
    processed: &Processed,
    end: PauseEnd,
    facts: &mut dyn Facts,
    trace: TraceLevel,
) -> Outcome {
    let mut lead = Lead::new(cfg, env, lead_id, facts, trace);
    restore(&mut lead, paused, processed);
    let mut verification = paused["verification"].clone();
    let rule_id = verification["rule_id"].as_i64();
    let stage = match verification["stage"].as_str() {
        Some("pre_validation") => RuleStage::PreValidation,
        Some("after_processing") => RuleStage::AfterProcessing,
        _ => RuleStage::Processing,
    };
    let reached: Vec<i64> = verification["reached"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let name = rule_id.and_then(|id| {
        cfg.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.name.clone())
    });
    lead.log.push(LogEntry {
        stage: stage.as_str(),
        origin: lead.origin,
        kind: "verification",
        ref_id: rule_id,
        name: name.clone(),
        outcome: end.as_str().into(),
        detail: json!({"phone": verification["phone"]}),
        ..LogEntry::default()
    });
    if end == PauseEnd::Expired {
        lead.reject(
            "verification expired".into(),
            json!({"kind": "rule", "id": rule_id, "name": name}),
        );
    }
    verification["status"] = end.as_str().into();
    lead.verification = Some(verification);
    let from = match stage {
        RuleStage::PreValidation => Step::PreValidation,
        RuleStage::AfterProcessing => Step::AfterProcessing,
        _ => Step::Processing,
    };
    run_steps(cfg, &mut lead, facts, from, &reached);
    store_signatures(cfg, &mut lead);
    record_history(cfg, &mut lead);
    let decision = decision(cfg, &mut lead);
    lead.finish(decision)
}

/// The working state as the pause left it.
fn restore(lead: &mut Lead, paused: &Value, processed: &Processed) {
    let object = |k: &str| paused[k].as_object().cloned();
    let ids = |k: &str| -> Vec<i64> {
        paused[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    if let Some(f) = object("fields") {
        lead.fields = f;
    }
    if let Some(p) = object("params") {
        lead.params = p;
    }
    lead.response = object("response").unwrap_or_default();
    lead.tags = processed.tags.clone();
    lead.route = Some(paused["route"].clone()).filter(|r| !r.is_null());
    lead.silent_campaigns = ids("silent_campaigns");
    lead.block_monetization = paused["block_monetization"].as_bool().unwrap_or(false);
    lead.ping_tree_mark = paused["ping_tree_mark"].as_i64();
    lead.services = paused["services"].as_array().cloned().unwrap_or_default();
    lead.queued = ids("queued");
    lead.trace = paused["trace"].as_array().cloned().unwrap_or_default();
    lead.matched.extend(processed.matched.iter().copied());
    lead.results = processed.results.clone();
}
