//! A Global Rule (docs/reference/settings.md "Global Rules"): when and how its service
//! runs, and its caps. What the service itself knows (settings, keys,
//! verdicts) is in `crate::service`.

use crate::error::ConfigError;
use crate::rule_parts::RuleCaps;
use crate::service::Settings;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    Sync,
    Async,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTime {
    BeforeFiltration,
    AfterFiltration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    Ping,
    Post,
    PingAndPost,
}

/// One `iclear.global_rule` row with its service's registry entry.
#[derive(Debug, Clone)]
pub struct GlobalRule {
    pub id: i64,
    pub service: String,
    pub active: bool,
    /// `service.subscription = 'enabled'`
    pub subscribed: bool,
    pub cost: f64,
    pub endpoint: String,
    pub execution: Execution,
    pub lookup_percent: u32,
    pub run_time: RunTime,
    pub run_on: RunOn,
    pub run_on_silent_ping: bool,
    pub reject_on_no_response: bool,
    pub settings: Settings,
    /// The per-rule cap ("a cap on the number of leads processed per global rule").
    pub caps: RuleCaps,
}

#[derive(Deserialize)]
pub struct GlobalRuleDoc {
    id: i64,
    service: String,
    status: String,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    endpoint: Option<String>,
    execution: String,
    lookup_percent: u32,
    run_time: String,
    run_on: String,
    run_on_silent_ping: bool,
    no_response: String,
    settings: Value,
    #[serde(default)]
    daily_limit: Option<i64>,
    #[serde(default)]
    monthly_limit: Option<i64>,
}

fn bad(setting: &str, v: &str) -> ConfigError {
    ConfigError::new(setting, format!("unknown value {v:?}"))
}

impl GlobalRuleDoc {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn build(self) -> Result<GlobalRule, ConfigError> {
        let settings = Settings::parse(&self.service, &self.settings)?;
        let execution = match self.execution.as_str() {
            "sync" => Execution::Sync,
            "async" => Execution::Async,
            "on_demand" => Execution::OnDemand,
            v => return Err(bad("execution", v)),
        };
        if self.lookup_percent > 100 {
            return Err(ConfigError::new(
                "lookup_percent",
                "must be between 0 and 100",
            ));
        }
        Ok(GlobalRule {
            id: self.id,
            active: self.status == "active",
            subscribed: self.subscription.as_deref() != Some("disabled"),
            cost: self.cost.unwrap_or(0.0),
            endpoint: self.endpoint.unwrap_or_default(),
            execution,
            lookup_percent: self.lookup_percent,
            run_time: match self.run_time.as_str() {
                "before_filtration" => RunTime::BeforeFiltration,
                "after_filtration" => RunTime::AfterFiltration,
                v => return Err(bad("run_time", v)),
            },
            run_on: match self.run_on.as_str() {
                "ping" => RunOn::Ping,
                "post" => RunOn::Post,
                "ping_and_post" => RunOn::PingAndPost,
                v => return Err(bad("run_on", v)),
            },
            run_on_silent_ping: self.run_on_silent_ping,
            reject_on_no_response: match self.no_response.as_str() {
                "continue" => false,
                "reject" => true,
                v => return Err(bad("no_response", v)),
            },
            settings,
            caps: RuleCaps {
                daily: self.daily_limit,
                monthly: self.monthly_limit,
                per_source: None,
                ..RuleCaps::default()
            },
            service: self.service,
        })
    }
}
