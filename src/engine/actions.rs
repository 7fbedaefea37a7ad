//! Rule actions: their configuration shapes (strict JSON, unknown keys
//! refused), the stages that allow them, and their effect on a lead.

use crate::error::ConfigError;
use crate::placeholders::check_template;
use crate::rule_parts::RuleStage;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every action name of the vocabulary (docs/architecture.md "Data model").
pub const ALL: &[&str] = &[
    "stop_processing",
    "block_monetization",
    "route_lead_to",
    "trigger_silent_campaign",
    "change_lead_body_fields",
    "run_third_party_service",
    "lead_tags",
    "stop_processing_rules",
    "add_to_list",
    "mark_ping_tree",
    "increment_counter",
    "set_fields_from_service",
    "email_domain_corrector",
    "find_and_replace",
    "run_tracking_action",
    "stop_pre_validation_rules",
    "change_input_data",
    "change_response_parameter",
    "pause_for_verification",
];

/// Which actions a stage allows (docs/reference/settings.md: each rules tab lists its actions).
pub fn allowed(stage: RuleStage, action: &str) -> bool {
    match stage {
        RuleStage::PreValidation => matches!(
            action,
            "stop_processing" | "stop_pre_validation_rules" | "change_input_data"
        ),
        RuleStage::Processing => {
            !matches!(action, "stop_pre_validation_rules" | "change_input_data")
        }
        RuleStage::AfterProcessing => matches!(
            action,
            "lead_tags"
                | "add_to_list"
                | "run_third_party_service"
                | "change_lead_body_fields"
                | "change_response_parameter"
        ),
        RuleStage::Redirect => matches!(
            action,
            "add_to_list"
                | "increment_counter"
                | "stop_processing_rules"
                | "find_and_replace"
                | "run_tracking_action"
        ),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Message {
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub campaign_id: Option<i64>,
    pub ping_tree_id: Option<i64>,
    pub ivr_id: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub campaign_id: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingTree {
    pub ping_tree_id: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFields {
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetParams {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Pre-validation may repair the lead body too (docs/reference/settings.md: "change the
    /// input data"), before it is validated.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TagMode {
    Add,
    Remove,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    pub mode: TagMode,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddToList {
    pub list_ids: Vec<i64>,
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementCounter {
    pub counter: String,
    pub key: String,
    #[serde(default = "one")]
    pub by: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindReplace {
    pub field: String,
    pub find: String,
    pub replace: String,
    #[serde(default)]
    pub regex: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    pub event: String,
    #[serde(default)]
    pub payload: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseParam {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailField {
    #[serde(default = "email_field")]
    pub field: String,
}

fn email_field() -> String {
    "email".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunService {
    pub global_rule_id: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsFromService {
    pub service: String,
    /// lead field -> response field (or a JSON pointer such as "/retain/results/expires_at")
    pub mapping: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// The lead status the decision reports while paused.
    #[serde(default = "pre_screening")]
    pub lead_status: String,
    /// The field holding the phone the SMS goes to.
    #[serde(default = "home_phone")]
    pub phone_field: String,
    /// Shown to the poster (placeholders allowed).
    #[serde(default)]
    pub message: Option<String>,
}

fn pre_screening() -> String {
    "pre_screening".into()
}

fn home_phone() -> String {
    "homePhone".into()
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    PauseForVerification(Pause),
    RunThirdPartyService(RunService),
    SetFieldsFromService(FieldsFromService),
    StopProcessing(Message),
    BlockMonetization,
    RouteLeadTo(Route),
    TriggerSilentCampaign(Campaign),
    ChangeLeadBodyFields(SetFields),
    LeadTags(Tags),
    StopProcessingRules,
    AddToList(AddToList),
    MarkPingTree(PingTree),
    IncrementCounter(IncrementCounter),
    FindAndReplace(FindReplace, Option<regex::Regex>),
    /// See `crate::email` for the algorithm.
    EmailDomainCorrector(EmailField),
    RunTrackingAction(Tracking),
    StopPreValidationRules,
    ChangeInputData(SetParams),
    ChangeResponseParameter(ResponseParam),
}

impl ActionKind {
    /// What the action would do to a lead, for shadow rules' reports:
    /// `reject` (it ends the lead), `pause`, `change` (the decision, the
    /// lead's fields, tags, route or flow), or `side_effect` (a list, a
    /// counter, a lookup or a tracking call; the decision stays).
    pub fn effect(&self) -> &'static str {
        match self {
            ActionKind::StopProcessing(_) => "reject",
            ActionKind::PauseForVerification(_) => "pause",
            ActionKind::AddToList(_)
            | ActionKind::IncrementCounter(_)
            | ActionKind::RunTrackingAction(_)
            | ActionKind::RunThirdPartyService(_) => "side_effect",
            _ => "change",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: i64,
    pub name: String,
    pub kind: ActionKind,
}

fn cfg<T: DeserializeOwned>(v: &Value) -> Result<T, ConfigError> {
    let v = if v.is_null() {
        Value::Object(Map::new())
    } else {
        v.clone()
    };
    serde_json::from_value(v).map_err(|e| ConfigError::new("config", e.to_string()))
}

fn non_empty_cfg(setting: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::new(setting, "must not be empty"));
    }
    Ok(())
}

fn template(setting: &str, t: &str) -> Result<(), ConfigError> {
    check_template(t).map_err(|e| ConfigError::new(setting, e))
}

impl Action {
    /// Parse and validate an action for a rule of `stage`. Errors name the
    /// setting (`action`, `config`, `config.<key>`).
    pub fn new(
        id: i64,
        stage: RuleStage,
        name: &str,
        config: &Value,
    ) -> Result<Action, ConfigError> {
        if !ALL.contains(&name) {
            return Err(ConfigError::new(
                "action",
                format!(
                    "unknown action {name:?} (expected one of: {})",
                    ALL.join(", ")
                ),
            ));
        }
        if !allowed(stage, name) {
            return Err(ConfigError::new(
                "action",
                format!("{name} is not allowed in {} rules", stage.as_str()),
            ));
        }
        let kind = match name {
            "stop_processing" => ActionKind::StopProcessing(cfg(config)?),
            "run_third_party_service" => ActionKind::RunThirdPartyService(cfg(config)?),
            "pause_for_verification" => {
                let p: Pause = cfg(config)?;
                non_empty_cfg("config.lead_status", &p.lead_status)?;
                non_empty_cfg("config.phone_field", &p.phone_field)?;
                if let Some(m) = &p.message {
                    template("config.message", m)?;
                }
                ActionKind::PauseForVerification(p)
            }
            "set_fields_from_service" => {
                let m: FieldsFromService = cfg(config)?;
                if !crate::service::SERVICES.contains(&m.service.as_str()) {
                    return Err(ConfigError::new(
                        "config.service",
                        format!(
                            "unknown service {:?} (expected one of: {})",
                            m.service,
                            crate::service::SERVICES.join(", ")
                        ),
                    ));
                }
                if m.mapping.is_empty() {
                    return Err(ConfigError::new(
                        "config.mapping",
                        "must map at least one field",
                    ));
                }
                ActionKind::SetFieldsFromService(m)
            }
            "block_monetization" => {
                cfg::<Empty>(config)?;
                ActionKind::BlockMonetization
            }
            "route_lead_to" => {
                let r: Route = cfg(config)?;
                let n = [r.campaign_id, r.ping_tree_id, r.ivr_id]
                    .iter()
                    .flatten()
                    .count();
                if n != 1 {
                    return Err(ConfigError::new(
                        "config",
                        "needs exactly one of campaign_id, ping_tree_id, ivr_id",
                    ));
                }
                ActionKind::RouteLeadTo(r)
            }
            "trigger_silent_campaign" => ActionKind::TriggerSilentCampaign(cfg(config)?),
            "change_lead_body_fields" => {
                let s: SetFields = cfg(config)?;
                if s.fields.is_empty() {
                    return Err(ConfigError::new(
                        "config.fields",
                        "must name at least one field",
                    ));
                }
                for (k, t) in &s.fields {
                    template(&format!("config.fields.{k}"), t)?;
                }
                ActionKind::ChangeLeadBodyFields(s)
            }
            "change_input_data" => {
                let s: SetParams = cfg(config)?;
                if s.params.is_empty() && s.fields.is_empty() {
                    return Err(ConfigError::new(
                        "config.params",
                        "must name at least one parameter or field (config.fields)",
                    ));
                }
                for (k, t) in &s.params {
                    template(&format!("config.params.{k}"), t)?;
                }
                for (k, t) in &s.fields {
                    template(&format!("config.fields.{k}"), t)?;
                }
                ActionKind::ChangeInputData(s)
            }
            "lead_tags" => {
                let t: Tags = cfg(config)?;
                if t.tags.is_empty() || t.tags.iter().any(|s| s.trim().is_empty()) {
                    return Err(ConfigError::new(
                        "config.tags",
                        "must be a non-empty list of non-empty tags",
                    ));
                }
                for (i, tag) in t.tags.iter().enumerate() {
                    template(&format!("config.tags[{i}]"), tag)?;
                }
                ActionKind::LeadTags(t)
            }
            "stop_processing_rules" => {
                cfg::<Empty>(config)?;
                ActionKind::StopProcessingRules
            }
            "stop_pre_validation_rules" => {
                cfg::<Empty>(config)?;
                ActionKind::StopPreValidationRules
            }
            "add_to_list" => {
                let a: AddToList = cfg(config)?;
                if a.list_ids.is_empty() {
                    return Err(ConfigError::new(
                        "config.list_ids",
                        "must name at least one list",
                    ));
                }
                ActionKind::AddToList(a)
            }
            "mark_ping_tree" => ActionKind::MarkPingTree(cfg(config)?),
            "increment_counter" => {
                let c: IncrementCounter = cfg(config)?;
                if c.counter.trim().is_empty() || c.counter.contains(':') {
                    return Err(ConfigError::new(
                        "config.counter",
                        "must be a non-empty name without ':'",
                    ));
                }
                template("config.key", &c.key)?;
                ActionKind::IncrementCounter(c)
            }
            "find_and_replace" => {
                let f: FindReplace = cfg(config)?;
                if f.find.is_empty() {
                    return Err(ConfigError::new("config.find", "must not be empty"));
                }
                // the replacement is a template; the pattern is not
                template("config.replace", &f.replace)?;
                let re = if f.regex {
                    Some(
                        regex::RegexBuilder::new(&f.find)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| {
                                ConfigError::new("config.find", format!("bad regex: {e}"))
                            })?,
                    )
                } else {
                    None
                };
                ActionKind::FindAndReplace(f, re)
            }
            "email_domain_corrector" => {
                let e: EmailField = cfg(config)?;
                if e.field.trim().is_empty() {
                    return Err(ConfigError::new("config.field", "must name a lead field"));
                }
                ActionKind::EmailDomainCorrector(e)
            }
            "run_tracking_action" => {
                let t: Tracking = cfg(config)?;
                if t.event.trim().is_empty() {
                    return Err(ConfigError::new("config.event", "must not be empty"));
                }
                crate::placeholders::check_json("config.payload", &t.payload)
                    .map_err(|(at, e)| ConfigError::new(&at, e))?;
                ActionKind::RunTrackingAction(t)
            }
            "change_response_parameter" => {
                let r: ResponseParam = cfg(config)?;
                if r.name.trim().is_empty() {
                    return Err(ConfigError::new("config.name", "must not be empty"));
                }
                template("config.value", &r.value)?;
                ActionKind::ChangeResponseParameter(r)
            }
            other => unreachable!("{other} is refused above"),
        };
        Ok(Action {
            id,
            name: name.to_string(),
            kind,
        })
    }

    /// List ids this action refers to (checked against `iclear.list`).
    pub fn list_ids(&self) -> &[i64] {
        match &self.kind {
            ActionKind::AddToList(a) => &a.list_ids,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stage_restrictions_are_refused() {
        let e = Action::new(
            1,
            RuleStage::PreValidation,
            "lead_tags",
            &json!({"mode": "add", "tags": ["x"]}),
        )
        .unwrap_err();
        assert_eq!(e.setting, "action");
        assert!(e.message.contains("pre_validation"));
        assert!(Action::new(
            1,
            RuleStage::Processing,
            "stop_pre_validation_rules",
            &json!({})
        )
        .is_err());
        assert!(Action::new(1, RuleStage::Redirect, "stop_processing", &json!({})).is_err());
        assert!(Action::new(1, RuleStage::AfterProcessing, "stop_processing", &json!({})).is_err());
        assert!(Action::new(
            1,
            RuleStage::PreValidation,
            "change_input_data",
            &json!({"params": {"a": "b"}})
        )
        .is_ok());
        assert!(Action::new(
            1,
            RuleStage::Redirect,
            "find_and_replace",
            &json!({"field": "a", "find": "b", "replace": ""})
        )
        .is_ok());
    }

    #[test]
    fn configs_are_strict() {
        let cases = [
            ("stop_processing", json!({"msg": "x"}), "config"),
            (
                "lead_tags",
                json!({"mode": "toggle", "tags": ["a"]}),
                "config",
            ),
            (
                "lead_tags",
                json!({"mode": "add", "tags": []}),
                "config.tags",
            ),
            (
                "route_lead_to",
                json!({"campaign_id": 1, "ivr_id": 2}),
                "config",
            ),
            ("route_lead_to", json!({}), "config"),
            (
                "change_lead_body_fields",
                json!({"fields": {"a": "{%bogus%}"}}),
                "config.fields.a",
            ),
            (
                "increment_counter",
                json!({"counter": "a:b", "key": "x"}),
                "config.counter",
            ),
            (
                "find_and_replace",
                json!({"field": "a", "find": "(", "replace": "", "regex": true}),
                "config.find",
            ),
            ("add_to_list", json!({"list_ids": []}), "config.list_ids"),
            ("frobnicate", json!({}), "action"),
            (
                "pause_for_verification",
                json!({"phone_field": " "}),
                "config.phone_field",
            ),
            (
                "pause_for_verification",
                json!({"message": "{%nope%}"}),
                "config.message",
            ),
            (
                "set_fields_from_service",
                json!({"service": "whois", "mapping": {"a": "b"}}),
                "config.service",
            ),
            ("run_third_party_service", json!({}), "config"),
        ];
        for (name, cfgv, setting) in cases {
            let e = Action::new(1, RuleStage::Processing, name, &cfgv).unwrap_err();
            assert_eq!(e.setting, setting, "{name} {cfgv}: {e}");
        }
    }
}
