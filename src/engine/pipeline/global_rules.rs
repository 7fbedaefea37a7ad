//! Global Rules in the pipeline (docs/architecture.md "The pipeline" steps 4 and 6, docs/reference/settings.md): which
//! rules run for this lead, cache → local DB → paid lookup → async, and what
//! the answer does to the lead.

use super::*;

/// How a global rule came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// In its place in the pipeline: status, execution, stage and sampling apply.
    Scheduled,
    /// From a "Run third-party service" action: runs paused and on-demand
    /// rules, and is not sampled.
    Action,
}

/// The global rules of one run time, in position order. A reject stops the
/// services after it (docs/reference/settings.md).
pub(super) fn run_global_rules(
    cfg: &ProductConfig,
    run_time: RunTime,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) {
    for global_rule in cfg.global_rules.iter().filter(|g| g.run_time == run_time) {
        if lead.status != Status::Accepted {
            return;
        }
        run_global(cfg, global_rule, Trigger::Scheduled, lead, facts);
    }
}

/// Why a rule does not run for this lead (not logged: the same for every lead).
fn not_for_this_lead(
    cfg: &ProductConfig,
    global_rule: &GlobalRule,
    trigger: Trigger,
    env: &Envelope,
) -> Option<&'static str> {
    if !global_rule.subscribed {
        return Some("subscription disabled");
    }
    // an action runs a paused or on-demand rule, in its stage and silent-ping
    // settings (seed 002: the target rule's settings apply)
    if trigger == Trigger::Scheduled && !global_rule.active {
        return Some("paused");
    }
    if trigger == Trigger::Scheduled && global_rule.execution == Execution::OnDemand {
        return Some("on demand only");
    }
    // "Run service on" applies to PingPost products only.
    if cfg.kind == ProductKind::PingPost {
        let ping = env.stage == crate::envelope::Stage::Ping;
        let runs = match global_rule.run_on {
            RunOn::Ping => ping,
            RunOn::Post => !ping,
            RunOn::PingAndPost => true,
        };
        if !runs {
            return Some("not run at this stage");
        }
    }
    if env.silent && !global_rule.run_on_silent_ping {
        return Some("not run on silent ping");
    }
    None
}

/// The filter-log stage of a global rule's rows.
fn stage_of(global_rule: &GlobalRule) -> &'static str {
    match global_rule.run_time {
        RunTime::BeforeFiltration => "global_before",
        RunTime::AfterFiltration => "global_after",
    }
}

/// A filter-log row of a global rule (`kind = 'service'`).
fn service_entry(
    global_rule: &GlobalRule,
    origin: &'static str,
    outcome: &str,
    detail: Value,
    request: Option<Value>,
    response: Option<Value>,
) -> LogEntry {
    LogEntry {
        stage: stage_of(global_rule),
        origin,
        kind: "service",
        ref_id: Some(global_rule.id),
        name: Some(global_rule.service.clone()),
        outcome: outcome.into(),
        detail,
        request,
        response,
    }
}

/// What one answer means, as the log row, the effects, the verdict. Shared
/// by the synchronous path and the async worker (`complete_async`).
fn conclude(
    cfg: &ProductConfig,
    global_rule: &GlobalRule,
    fields: &Map<String, Value>,
    value: &str,
    data: &Value,
    how: (&'static str, &'static str, f64),
    request: Option<Value>,
) -> (LogEntry, Vec<Effect>, crate::service::Verdict) {
    let (origin, source, cost) = how;
    let verdict = global_rule.settings.verdict(data);
    let mut effects = Vec::new();
    for id in &verdict.add_to_lists {
        let value = cfg
            .list(*id)
            .and_then(|l| {
                let v = fields.get(&l.field).and_then(value_text)?;
                Some(crate::keys::normalize_list_value_of(&l.field, &v))
            })
            .filter(|v| !v.is_empty());
        if let Some(value) = value {
            effects.push(Effect::AddToList {
                list_id: *id,
                value,
            });
        }
    }
    if let Settings::IClaim(_) = global_rule.settings {
        let ev = crate::service::iclaim::evidence(data);
        effects.push(Effect::ConsentEvidence {
            session_id: value.to_string(),
            outcome: ev["outcome"].as_str().unwrap_or("error").to_string(),
            expires_at: ev["expires_at"].as_str().map(str::to_string),
            response: data.clone(),
        });
    }
    let outcome = match (&verdict.reject, origin) {
        (None, _) => "pass",
        // an async answer comes after the decision: it flags, never rejects
        (Some(_), "async") => "flagged",
        (Some(_), _) => "reject",
    };
    let mut detail = json!({"source": source, "cost": cost, "score": verdict.score});
    if let Some(parts) = &verdict.score_parts {
        detail["score_parts"] = parts.clone();
    }
    if let Some(r) = &verdict.reject {
        detail["reason"] = r.clone().into();
    }
    if !verdict.add_to_lists.is_empty() {
        detail["added_to_lists"] = json!(verdict.add_to_lists);
    }
    let entry = service_entry(
        global_rule,
        origin,
        outcome,
        detail,
        request,
        Some(data.clone()),
    );
    (entry, effects, verdict)
}

impl Lead<'_> {
    /// A slot of the rule's and its service's caps (and of the caps of the
    /// Advanced Rule whose action runs it); false (logged `cap_reached`,
    /// the lead goes on) when one is full.
    fn take_slot(
        &mut self,
        global_rule: &GlobalRule,
        origin: &'static str,
        facts: &mut dyn Facts,
    ) -> bool {
        match facts.take_service_cap(global_rule, self.paying.as_ref()) {
            None => true,
            Some(cap) => {
                let detail = json!({"cap": cap, "cost": 0});
                self.service_log(global_rule, origin, "cap_reached", detail, None);
                false
            }
        }
    }

    fn service_log(
        &mut self,
        global_rule: &GlobalRule,
        origin: &'static str,
        outcome: &str,
        detail: Value,
        request: Option<Value>,
    ) {
        self.log.push(service_entry(
            global_rule,
            origin,
            outcome,
            detail,
            request,
            None,
        ));
        self.services.push(
            json!({"service": global_rule.service, "rule_id": global_rule.id, "outcome": outcome,
                                  "source": Value::Null, "score": Value::Null}),
        );
    }

    /// "No response service action": continue, or reject the lead.
    fn no_response(
        &mut self,
        global_rule: &GlobalRule,
        origin: &'static str,
        reason: String,
        request: Option<Value>,
    ) {
        self.service_log(
            global_rule,
            origin,
            "no_response",
            json!({"source": "none", "cost": 0, "reason": reason}),
            request,
        );
        // async services "do not impact the lead processing flow" (docs/reference/settings.md)
        if global_rule.reject_on_no_response && origin != "async" {
            self.reject(
                format!("{} did not respond: {reason}", global_rule.service),
                json!({"kind": "service", "id": global_rule.id, "name": global_rule.service}),
            );
        }
    }

    /// Take the caps and queue the lookup for the worker.
    fn queue(
        &mut self,
        cfg: &ProductConfig,
        global_rule: &GlobalRule,
        value: &str,
        why: &str,
        cap_taken: bool,
        facts: &mut dyn Facts,
    ) {
        if !cap_taken && !self.take_slot(global_rule, "async", facts) {
            return;
        }
        // what the adapter sends, plus the fields "Add to PL/DNPL" lists take
        let mut fields = global_rule.settings.call_fields(&self.fields);
        for l in global_rule
            .settings
            .list_ids()
            .into_iter()
            .filter_map(|id| cfg.list(id))
        {
            if let Some(v) = self.fields.get(&l.field) {
                fields.insert(l.field.clone(), v.clone());
            }
        }
        let payload = json!({
            "value": value,
            "fields": fields,
            "product": cfg.name,
            "why": why,
        });
        let id = facts.enqueue(&JobSpec {
            global_rule_id: global_rule.id,
            product_id: cfg.id,
            lead_id: self.lead_id.clone(),
            payload,
        });
        self.queued.push(id);
        self.service_log(
            global_rule,
            "async",
            "queued",
            json!({"job_id": id, "why": why, "cost": 0}),
            None,
        );
    }
}

pub(super) fn run_global(
    cfg: &ProductConfig,
    global_rule: &GlobalRule,
    trigger: Trigger,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) {
    if let Some(why) = not_for_this_lead(cfg, global_rule, trigger, lead.env) {
        // a Run-third-party-service action asked for it: the log says why not
        if trigger == Trigger::Action {
            return lead.service_log(
                global_rule,
                "on_demand",
                "skipped",
                json!({"why": why, "cost": 0}),
                None,
            );
        }
        if lead.trace_level == TraceLevel::Full {
            lead.trace
                .push(json!({"global_rule_id": global_rule.id, "service": global_rule.service, "skipped": why}));
        }
        return;
    }
    let origin = if trigger == Trigger::Action {
        "on_demand"
    } else {
        "sync"
    };
    if trigger == Trigger::Scheduled && facts.roll_percent() >= global_rule.lookup_percent {
        return lead.service_log(
            global_rule,
            origin,
            "not_sampled",
            json!({"lookup_percent": global_rule.lookup_percent, "cost": 0}),
            None,
        );
    }
    // A rule whose credential an admin has not set yet calls no vendor.
    if let Some(key) = global_rule.settings.missing_credential() {
        let origin = if global_rule.execution == Execution::Async {
            "async"
        } else {
            origin
        };
        return lead.no_response(
            global_rule,
            origin,
            format!("settings.{key} is not set (a member of iclear_admin sets it)"),
            None,
        );
    }
    // After filtration with no campaign left: skipped, at no charge (docs/reference/settings.md "IP Analysis").
    let skip_after =
        global_rule.run_time == RunTime::AfterFiltration && lead.env.campaigns_remaining == Some(0);
    if let (Settings::VerificationHistory(vh), false) = (&global_rule.settings, skip_after) {
        return verify(cfg, global_rule, vh, origin, lead, facts);
    }
    if global_rule.run_time == RunTime::AfterFiltration && lead.env.campaigns_remaining == Some(0) {
        return lead.service_log(
            global_rule,
            origin,
            "skipped",
            json!({"why": "no campaigns remaining", "cost": 0}),
            None,
        );
    }
    let Some((value, key)) = global_rule.settings.lookup_key(&lead.fields) else {
        if global_rule.execution == Execution::Async {
            // an async service never touches the lead: nothing to queue
            return lead.service_log(
                global_rule,
                "async",
                "skipped",
                json!({"why": "the lead has no value to look up", "cost": 0}),
                None,
            );
        }
        return lead.no_response(
            global_rule,
            origin,
            "the lead has no value to look up".into(),
            None,
        );
    };
    let adv = global_rule.settings.advanced();
    if global_rule.execution == Execution::Async {
        // cache_days holds for async rules too: a fresh cached answer serves
        // instead of a job, at no charge, and (like the worker's answers)
        // flags the lead rather than rejecting it
        let max_age = adv.and_then(|(_, days)| (days > 0).then_some(days));
        if let Some(data) = max_age.and_then(|_| facts.cached(&global_rule.service, &key, max_age))
        {
            let (entry, effects, verdict) = conclude(
                cfg,
                global_rule,
                &lead.fields,
                &value,
                &data,
                ("async", "cache", 0.0),
                None,
            );
            lead.services.push(
                json!({"service": global_rule.service, "rule_id": global_rule.id, "outcome": entry.outcome,
                       "source": "cache", "score": verdict.score}),
            );
            lead.log.push(entry);
            lead.effects.extend(effects);
            let view = global_rule.settings.condition_view(&data);
            lead.results.insert(global_rule.service.clone(), view);
            return;
        }
        return lead.queue(cfg, global_rule, &value, "async execution", false, facts);
    }
    let fields = lead.fields.clone();
    let finish = |lead: &mut Lead, data: Value, source, cost, request| {
        let (entry, effects, verdict) = conclude(
            cfg,
            global_rule,
            &fields,
            &value,
            &data,
            (origin, source, cost),
            request,
        );
        lead.services.push(
            json!({"service": global_rule.service, "rule_id": global_rule.id, "outcome": entry.outcome,
                                "source": source, "score": verdict.score}),
        );
        lead.log.push(entry);
        lead.effects.extend(effects);
        let view = global_rule.settings.condition_view(&data);
        lead.results.insert(global_rule.service.clone(), view);
        if let Some(reason) = verdict.reject {
            lead.reject(
                reason,
                json!({"kind": "service", "id": global_rule.id, "name": global_rule.service}),
            );
        }
    };
    if let Some((a, cache_days)) = adv {
        let max_age = (cache_days > 0).then_some(cache_days);
        if a.local_only {
            // "Lookup only in the local DB": the lookup cache, nothing paid.
            match facts.cached(&global_rule.service, &key, max_age) {
                Some(data) => finish(lead, data, "local", 0.0, None),
                None if a.local_fail_run_async => lead.queue(
                    cfg,
                    global_rule,
                    &value,
                    "not found in the local database",
                    false,
                    facts,
                ),
                None => lead.no_response(
                    global_rule,
                    origin,
                    "not found in the local database".into(),
                    None,
                ),
            }
            return;
        }
        if let Some(data) = max_age.and_then(|_| facts.cached(&global_rule.service, &key, max_age))
        {
            return finish(lead, data, "cache", 0.0, None);
        }
    }
    if !lead.take_slot(global_rule, origin, facts) {
        return;
    }
    let call_fields = global_rule.settings.call_fields(&lead.fields);
    let call = ServiceCall {
        rule: global_rule,
        value: &value,
        lead_id: &lead.lead_id,
        product: &cfg.name,
        fields: &call_fields,
        timeout_s: adv.map(|(a, _)| a.sync_timeout_s).unwrap_or(5),
    };
    match facts.call_service(&call) {
        CallResult::Response { data, request } => {
            if adv.is_some() {
                lead.effects.push(Effect::CacheResponse {
                    service: global_rule.service.clone(),
                    key,
                    data: data.clone(),
                });
            }
            finish(lead, data, "api", global_rule.cost, Some(request))
        }
        CallResult::NoResponse {
            timed_out: true,
            request,
            ..
        } if adv.is_some_and(|(a, _)| a.after_timeout_run_async) => {
            // "After a timeout, run as Asynchronous": the cap is already counted
            let _ = request;
            lead.queue(cfg, global_rule, &value, "sync timeout", true, facts)
        }
        CallResult::NoResponse {
            reason, request, ..
        } => lead.no_response(global_rule, origin, reason, Some(request)),
    }
}

/// The worker's side of an async lookup: the filter-log row and effects of
/// its answer (no decision changes: the lead was decided when it was queued).
pub fn complete_async(
    cfg: &ProductConfig,
    global_rule_id: i64,
    payload: &Value,
    result: CallResult,
) -> (Vec<LogEntry>, Vec<Effect>) {
    let Some(global_rule) = cfg.global_rules.iter().find(|g| g.id == global_rule_id) else {
        return (Vec::new(), Vec::new());
    };
    let value = payload["value"].as_str().unwrap_or("");
    let fields = payload["fields"].as_object().cloned().unwrap_or_default();
    match result {
        CallResult::Response { data, request } => {
            let mut effects = Vec::new();
            // the job keeps the looked-up value, not the lead field
            if let Some((_, key)) = global_rule.settings.key_of_value(value) {
                effects.push(Effect::CacheResponse {
                    service: global_rule.service.clone(),
                    key,
                    data: data.clone(),
                });
            }
            let (entry, more, _) = conclude(
                cfg,
                global_rule,
                &fields,
                value,
                &data,
                ("async", "api", global_rule.cost),
                Some(request),
            );
            effects.extend(more);
            (vec![entry], effects)
        }
        CallResult::NoResponse {
            reason, request, ..
        } => (
            vec![service_entry(
                global_rule,
                "async",
                "no_response",
                json!({"source": "none", "cost": 0, "reason": reason}),
                Some(request),
                None,
            )],
            Vec::new(),
        ),
    }
}

/// The Verification History Service: the history is Postgres (local or a
/// shared hub), read synchronously whatever the execution; with `async`
/// execution a failing lead is flagged, never rejected. Unreachable history:
/// the no-response action.
fn verify(
    cfg: &ProductConfig,
    global_rule: &GlobalRule,
    vh: &crate::service::VerificationHistory,
    origin: &'static str,
    lead: &mut Lead,
    facts: &mut dyn Facts,
) {
    use crate::service::verification_history::{evaluate, normalize_phone, signature, Findings};
    let origin = if global_rule.execution == Execution::Async {
        "async"
    } else {
        origin
    };
    // its caps count checks of the history, as the other services' count lookups
    if !lead.take_slot(global_rule, origin, facts) {
        return;
    }
    let sig = if vh.signature_enabled {
        let t = vh.signature_template.as_deref().unwrap_or("{}");
        match signature(t, &lead.vars(cfg.id)) {
            Ok(s) => Some(s),
            Err(e) => return lead.no_response(global_rule, origin, e, None),
        }
    } else {
        None
    };
    // Some(None): enabled, but the lead lacks the template's values (missing)
    let sig_found = match &sig {
        Some(Some(s)) => match facts.signature_recorded_at(s) {
            Ok(r) => Some(r),
            Err(e) => return lead.no_response(global_rule, origin, e, None),
        },
        Some(None) => Some(None),
        None => None,
    };
    let phone = vh
        .phone_field
        .as_ref()
        .filter(|_| vh.sms_enabled)
        .and_then(|f| lead.fields.get(f))
        .and_then(value_text)
        .and_then(|p| normalize_phone(&p));
    let sms_found = if vh.sms_enabled {
        match &phone {
            Some(p) => match facts.sms_verified(&cfg.name, p) {
                Ok(r) => Some(r),
                Err(e) => return lead.no_response(global_rule, origin, e, None),
            },
            None => Some(None),
        }
    } else {
        None
    };
    // compared as the history keeps codes (a digest of the phone's code)
    let posted = vh
        .tpar_code_key
        .as_ref()
        .filter(|_| vh.sms_code_match)
        .and_then(|k| lead.params.get(k))
        .and_then(value_text)
        .map(|c| match &phone {
            Some(p) => facts.sms_code_digest(&cfg.name, p, c.trim()),
            None => c,
        });
    let v = evaluate(
        vh,
        facts.now(),
        &Findings {
            signature: sig_found,
            sms: sms_found,
            posted_code: posted.as_deref(),
        },
    );
    let outcome = match (v.fail, origin) {
        (false, _) => "pass",
        (true, "async") => "flagged",
        (true, _) => "reject",
    };
    let mut detail = json!({"source": "local", "cost": 0, "checks": v.detail});
    if let Some(Some(s)) = &sig {
        detail["signature"] = s.clone().into();
    }
    if let Some(r) = &v.reason {
        detail["reason"] = r.clone().into();
    }
    lead.log.push(service_entry(
        global_rule,
        origin,
        outcome,
        detail,
        None,
        None,
    ));
    lead.services.push(
        json!({"service": global_rule.service, "rule_id": global_rule.id, "outcome": outcome,
                            "source": "local", "score": Value::Null}),
    );
    // conditions read verification_history.signature / .sms / .sms_code
    lead.results.insert(global_rule.service.clone(), v.detail);
    if outcome == "reject" {
        lead.reject(
            v.reason.unwrap_or_default(),
            json!({"kind": "service", "id": global_rule.id, "name": global_rule.service}),
        );
    }
}

/// An accepted lead's signature under each active Verification History
/// rule with `store_signature_on_accept` (seed 002's template lists the
/// fields "to hash, check, and store"), for the store to record. A lead
/// that lacks a value the template needs has no signature: nothing is
/// stored, and the log says so.
pub(super) fn store_signatures(cfg: &ProductConfig, lead: &mut Lead) {
    if lead.status != Status::Accepted {
        return;
    }
    for g in cfg.global_rules.iter().filter(|g| g.active && g.subscribed) {
        let Settings::VerificationHistory(vh) = &g.settings else {
            continue;
        };
        if !(vh.signature_enabled && vh.store_signature_on_accept) {
            continue;
        }
        let template = vh.signature_template.as_deref().unwrap_or("{}");
        match crate::service::verification_history::signature(template, &lead.vars(cfg.id)) {
            Ok(Some(signature)) => {
                let stored = Effect::RecordSignature { signature };
                if !lead.effects.contains(&stored) {
                    lead.effects.push(stored);
                }
            }
            Ok(None) | Err(_) => lead.log.push(service_entry(
                g,
                lead.origin,
                "skipped",
                json!({"why": "the lead lacks a value of the signature template: no signature stored", "cost": 0}),
                None,
                None,
            )),
        }
    }
}
