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
    let mut st = Lead::new(env, lead_id, facts, trace);
    restore(&mut st, paused, processed);
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
    st.log.push(LogEntry {
        stage: stage.as_str(),
        origin: st.origin,
        kind: "verification",
        ref_id: rule_id,
        name: name.clone(),
        outcome: end.as_str().into(),
        detail: json!({"phone": verification["phone"]}),
        ..LogEntry::default()
    });
    if end == PauseEnd::Expired {
        st.reject(
            "verification expired".into(),
            json!({"kind": "rule", "id": rule_id, "name": name}),
        );
    }
    verification["status"] = end.as_str().into();
    st.verification = Some(verification);
    let from = match stage {
        RuleStage::PreValidation => Step::PreValidation,
        RuleStage::AfterProcessing => Step::AfterProcessing,
        _ => Step::Processing,
    };
    run_steps(cfg, &mut st, facts, from, &reached);
    let decision = decision(cfg, &mut st);
    st.finish(decision)
}

/// The working state as the pause left it.
fn restore(st: &mut Lead, paused: &Value, processed: &Processed) {
    let object = |k: &str| paused[k].as_object().cloned();
    let ids = |k: &str| -> Vec<i64> {
        paused[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    if let Some(f) = object("fields") {
        st.fields = f;
    }
    if let Some(p) = object("params") {
        st.params = p;
    }
    st.response = object("response").unwrap_or_default();
    st.tags = processed.tags.clone();
    st.route = Some(paused["route"].clone()).filter(|r| !r.is_null());
    st.silent_campaigns = ids("silent_campaigns");
    st.block_monetization = paused["block_monetization"].as_bool().unwrap_or(false);
    st.ping_tree_mark = paused["ping_tree_mark"].as_i64();
    st.services = paused["services"].as_array().cloned().unwrap_or_default();
    st.queued = ids("queued");
    st.trace = paused["trace"].as_array().cloned().unwrap_or_default();
    st.matched.extend(processed.matched.iter().copied());
    st.results = processed.results.clone();
}
