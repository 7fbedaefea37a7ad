//! What each action of a matched rule does to the lead (the Pause action
//! included).

use super::*;

/// Render every template from the values before the action, so that one
/// action's assignments do not see each other.
pub(super) fn render_all(
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

pub(super) fn apply(
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
            // the rule's caps count the times its service is processed
            // (seed 002), not its matches: the paid lookup takes the slot
            lead.paying = (rule.caps.any() && rule.caps.counts == CapCounts::ServiceRuns)
                .then(|| rule_slot(rule, lead.env, facts));
            let target = cfg.global_rules.iter().find(|g| g.id == r.global_rule_id);
            match target {
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
            lead.paying = None;
            // after processing, the answer is for reporting: the decision's
            // status, reason and rejected_by stay as processing left them
            // (a rejected lead's too), and the rules after it run
            if let Some((status, reason, by, (logged, listed))) = decided {
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
                return Flow::Continue;
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
            let vars = lead.vars(cfg.id);
            let tags: Vec<String> = t
                .tags
                .iter()
                .map(|tag| render(tag, &vars))
                .filter(|tag| !tag.is_empty())
                .collect();
            for tag in tags {
                match t.mode {
                    TagMode::Add if !lead.tags.contains(&tag) => lead.tags.push(tag),
                    TagMode::Remove => lead.tags.retain(|x| *x != tag),
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
                    .and_then(|f| {
                        let v = lead.fields.get(&f).and_then(value_text)?;
                        Some(crate::keys::normalize_list_value_of(&f, &v))
                    })
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
            // The replacement's placeholders first (in a regex replacement a
            // `$` of the lead's data is literal, not a capture group).
            let vars = lead.vars(cfg.id);
            let replacement = match re {
                Some(_) => {
                    crate::placeholders::render_with(&f.replace, &vars, |v| v.replace('$', "$$"))
                }
                None => render(&f.replace, &vars),
            };
            // On redirect the field is a redirect parameter, else a lead field.
            let target = match lead.redirect.as_ref() {
                Some(r) => r,
                None => &lead.fields,
            };
            if let Some(cur) = target.get(&f.field).and_then(value_text) {
                let new = replace_bounded(&cur, &f.find, re.as_ref(), &replacement);
                let target = match lead.redirect.as_mut() {
                    Some(r) => r,
                    None => &mut lead.fields,
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
            let payload = crate::placeholders::render_json(&t.payload, &lead.vars(cfg.id));
            // an event with nowhere to go is said so, never logged as queued
            let (outcome, detail) = if cfg.tracking {
                (Value::from("queued"), payload.clone())
            } else {
                (
                    Value::from("skipped"),
                    json!({"why": "the tracking service is not subscribed or has no endpoint",
                           "payload": payload}),
                )
            };
            lead.log.push(LogEntry {
                stage: rule.stage.as_str(),
                origin: lead.origin,
                kind: "tracking",
                ref_id: Some(rule.id),
                name: Some(t.event.clone()),
                outcome: outcome.as_str().unwrap_or("queued").into(),
                detail,
                ..LogEntry::default()
            });
            if cfg.tracking {
                lead.effects.push(Effect::Track {
                    event: t.event.clone(),
                    payload,
                });
            }
        }
        ActionKind::ChangeResponseParameter(r) => {
            let v = render(&r.value, &lead.vars(cfg.id));
            lead.response.insert(r.name.clone(), Value::String(v));
        }
    }
    if changes_values(kind) && !lead.within_bounds() {
        return Flow::EndAll;
    }
    Flow::Continue
}

/// Does this action change a value of the lead (which `within_bounds` then
/// checks)?
fn changes_values(kind: &ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::ChangeLeadBodyFields(_)
            | ActionKind::ChangeInputData(_)
            | ActionKind::FindAndReplace(..)
            | ActionKind::SetFieldsFromService(_)
            | ActionKind::ChangeResponseParameter(_)
            | ActionKind::EmailDomainCorrector(_)
    )
}

/// Find and Replace with a bounded result: it stops growing just past
/// `limits::VALUE_BYTES` (a pattern that matches the empty string, or a long
/// replacement, would otherwise multiply a value), and the lead is then
/// decided `error` by the bound check.
fn replace_bounded(cur: &str, find: &str, re: Option<&regex::Regex>, rep: &str) -> String {
    let limit = crate::envelope::limits::VALUE_BYTES;
    let mut out = String::with_capacity(cur.len());
    let mut last = 0;
    match re {
        Some(re) => {
            for caps in re.captures_iter(cur) {
                let m = caps.get(0).expect("group 0 is the match");
                out.push_str(&cur[last..m.start()]);
                caps.expand(rep, &mut out);
                last = m.end();
                if out.len() > limit {
                    return out;
                }
            }
        }
        None if find.is_empty() => return cur.to_string(),
        None => {
            for (at, m) in cur.match_indices(find) {
                out.push_str(&cur[last..at]);
                out.push_str(rep);
                last = at + m.len();
                if out.len() > limit {
                    return out;
                }
            }
        }
    }
    out.push_str(&cur[last..]);
    out
}

/// "Pause Lead for Verification": a phone verified within the lifetime
/// passes on; otherwise a code is stored as pending, the SMS is queued and
/// the lead is paused. A lead without a phone, or whose verification cannot
/// be started (history unreachable), is rejected: an unverifiable lead does
/// not pass a verification rule.
pub(super) fn pause(
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
        .and_then(|v| crate::service::verification_history::normalize_phone(&v))
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
        .find_map(|g| g.settings.verification_history()?.sms_lifetime_s)
        .unwrap_or(crate::service::verification_history::DEFAULT_SMS_LIFETIME_S);
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
