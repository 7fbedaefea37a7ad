//! Pipeline tests with in-memory facts: no Postgres.

use crate::config::ProductConfig;
use crate::envelope::Envelope;
use crate::facts::{CallResult, Facts, HistoryQuery, JobSpec, PerSource, RuleSlot, ServiceCall};
use crate::global::GlobalRule;
use crate::pipeline::{process, Effect, Status};
use crate::service::verification_history::SmsRecord;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

#[derive(Default)]
struct Mem {
    lists: HashSet<(i64, String)>,
    counters: HashMap<(String, String), i64>,
    source_created_at: Option<DateTime<Utc>>,
    random: i64,
    cap_room: HashMap<i64, i64>,
    /// every rule slot taken, with its per-source bucket
    rule_slots: Vec<RuleSlot>,
    /// the history: (key, values, product id, status, seconds ago)
    history: Vec<(String, Vec<String>, i64, String, i64)>,
    /// services: sampling rolls, cache, answers, queued jobs, calls made
    roll: u32,
    cache: HashMap<(String, String), Value>,
    answers: HashMap<String, CallResult>,
    service_room: HashMap<i64, i64>,
    jobs: Vec<JobSpec>,
    calls: Vec<(i64, String, u8)>,
    /// verification: recorded signatures, verified phones, started SMS,
    /// and whether the history is reachable
    signatures: HashMap<String, DateTime<Utc>>,
    sms: HashMap<String, SmsRecord>,
    started: Vec<String>,
    history_down: bool,
}

impl Facts for Mem {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        probes
            .iter()
            .filter(|p| self.lists.contains(p))
            .map(|p| p.0)
            .collect()
    }
    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        *self.counters.get(&(name.into(), key.into())).unwrap_or(&0)
    }
    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        self.source_created_at
    }
    fn random_0_1000(&mut self) -> i64 {
        self.random
    }
    fn history_count(&mut self, q: &HistoryQuery) -> i64 {
        use crate::history::HistoryScope;
        self.history
            .iter()
            .filter(|(k, v, p, s, ago)| {
                k == q.key
                    && v.as_slice() == q.values
                    && *ago < q.window.seconds
                    && q.window.statuses.contains(s)
                    && (q.window.scope != HistoryScope::Product || *p == q.product_id)
            })
            .count() as i64
    }
    fn take_rule_cap(&mut self, slot: &RuleSlot) -> bool {
        self.rule_slots.push(slot.clone());
        let room = self
            .cap_room
            .entry(slot.rule_id)
            .or_insert(slot.caps.daily.unwrap_or(i64::MAX));
        if *room > 0 {
            *room -= 1;
            true
        } else {
            false
        }
    }
    fn roll_percent(&mut self) -> u32 {
        self.roll
    }
    fn cached(&mut self, service: &str, key: &str, _max_age: Option<u32>) -> Option<Value> {
        self.cache.get(&(service.into(), key.into())).cloned()
    }
    fn take_service_cap(&mut self, rule: &GlobalRule, also: Option<&RuleSlot>) -> Option<String> {
        let room = *self.service_room.entry(rule.id).or_insert(i64::MAX);
        let rule_room = also.map(|slot| {
            *self
                .cap_room
                .entry(slot.rule_id)
                .or_insert(slot.caps.daily.unwrap_or(i64::MAX))
        });
        if room <= 0 {
            return Some("daily".into());
        }
        if rule_room.is_some_and(|r| r <= 0) {
            return Some("rule daily".into());
        }
        *self.service_room.get_mut(&rule.id).unwrap() -= 1;
        if let Some(slot) = also {
            self.rule_slots.push(slot.clone());
            *self.cap_room.get_mut(&slot.rule_id).unwrap() -= 1;
        }
        None
    }
    fn call_service(&mut self, call: &ServiceCall) -> CallResult {
        self.calls
            .push((call.rule.id, call.value.to_string(), call.timeout_s));
        self.answers
            .get(call.value)
            .cloned()
            .unwrap_or(CallResult::NoResponse {
                reason: "connection refused".into(),
                timed_out: false,
                retryable: false,
                request: json!({}),
            })
    }
    fn enqueue(&mut self, job: &JobSpec) -> i64 {
        self.jobs.push(job.clone());
        self.jobs.len() as i64
    }
    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String> {
        if self.history_down {
            return Err("could not connect to server \"hub\"".into());
        }
        Ok(self.signatures.get(signature).copied())
    }
    fn sms_verified(&mut self, _product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
        if self.history_down {
            return Err("could not connect to server \"hub\"".into());
        }
        Ok(self.sms.get(phone).cloned())
    }
    fn start_sms_verification(
        &mut self,
        _product: &str,
        phone: &str,
        _lead_id: &str,
    ) -> Result<Option<i64>, String> {
        self.started.push(phone.to_string());
        Ok(Some(77))
    }
}

fn rule(id: i64, stage: &str, conds: Value, acts: Value) -> Value {
    json!({"id": id, "stage": stage, "name": format!("r{id}"), "conditions": conds, "actions": acts})
}

fn cfg(rules: Vec<Value>, lists: Value) -> ProductConfig {
    ProductConfig::from_json(
        json!({"id": 1, "name": "p", "kind": "post", "rules": rules, "lists": lists}),
    )
    .unwrap()
}

fn lead(v: Value) -> Envelope {
    let mut v = v;
    v["product"] = "p".into();
    Envelope::parse(&v).unwrap()
}

fn global(id: i64, service: &str, extra: Value) -> Value {
    let mut g = json!({"id": id, "service": service, "status": "active", "subscription": "enabled",
        "cost": 0.01, "endpoint": "http://127.0.0.1:9/x", "execution": "sync", "lookup_percent": 100,
        "run_time": "before_filtration", "run_on": "ping_and_post", "run_on_silent_ping": false,
        "no_response": "continue",
        "settings": {"api_key": "K", "reject_fraud_score_gte": 80}});
    if service == "phone_analysis" {
        g["settings"] = json!({"api_key": "K", "reject_voip": true});
    }
    for (k, v) in extra.as_object().unwrap() {
        g[k] = v.clone();
    }
    g
}

fn gcfg(kind: &str, globals: Vec<Value>, rules: Vec<Value>) -> ProductConfig {
    ProductConfig::from_json(json!({"id": 1, "name": "p", "kind": kind, "rules": rules,
        "lists": [{"id": 9, "name": "bad_ips", "kind": "dnpl", "field": "userIp", "product_level": false}],
        "global_rules": globals}))
    .unwrap()
}

fn answer(score: i64) -> CallResult {
    CallResult::Response {
        data: json!({"success": true, "fraud_score": score, "country_code": "US", "mobile": false}),
        request: json!({"url": "http://127.0.0.1:9/x/***/1.2.3.4"}),
    }
}

fn ip_lead(ip: &str) -> Envelope {
    lead(json!({"fields": {"userIp": ip, "homePhone": "5550100"}}))
}

fn vh_rule(settings: Value, extra: Value) -> Value {
    let mut g = global(1, "verification_history", extra);
    g["settings"] = settings;
    g
}

mod actions;
mod global_rules;
mod redirect;
mod rules;
mod verification;
