//! The typed configuration of one product, parsed from the JSON document the
//! store builds from the configuration tables. Parsing validates every value,
//! so the same code refuses a bad setting at INSERT time and loads a good one.

use crate::actions::Action;
use crate::conditions::Condition;
use crate::envelope::Method;
use crate::error::ConfigError;
use crate::global::{GlobalRule, GlobalRuleDoc};
pub use crate::rule_parts::{CapCounts, RuleCaps, RuleStage};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Pl,
    Dnpl,
}

#[derive(Debug, Clone)]
pub struct ListDef {
    pub id: i64,
    pub name: String,
    pub kind: ListKind,
    pub field: String,
    /// Linked to this product (checked on every lead) or only referenced by an action.
    pub product_level: bool,
}

/// Who a rule applies to. Empty lists and None mean "all".
#[derive(Debug, Clone, Default)]
pub struct Targeting {
    pub publisher_id: Option<i64>,
    pub channel_id: Option<i64>,
    pub source_id: Option<i64>,
    pub all_new_since: Option<DateTime<Utc>>,
    pub publisher_ids: Vec<i64>,
    pub exclude_publisher_ids: Vec<i64>,
    pub channel_ids: Vec<i64>,
    pub exclude_channel_ids: Vec<i64>,
    pub source_ids: Vec<i64>,
    pub exclude_source_ids: Vec<i64>,
    pub method: Option<Method>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logical {
    And,
    Or,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: i64,
    pub stage: RuleStage,
    pub name: String,
    pub targeting: Targeting,
    pub logical: Logical,
    pub caps: RuleCaps,
    pub conditions: Vec<Condition>,
    /// Active actions only, in position order.
    pub actions: Vec<Action>,
    /// `status = 'shadow'`: evaluated and logged, its actions never applied.
    pub shadow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductKind {
    Post,
    PingPost,
}

#[derive(Debug, Clone)]
pub struct ProductConfig {
    pub id: i64,
    pub name: String,
    pub kind: ProductKind,
    /// Active rules, ordered by stage, category position, rule position, id.
    pub rules: Vec<Rule>,
    pub lists: Vec<ListDef>,
    /// Every global rule (paused ones too: an action may run them), by position.
    pub global_rules: Vec<GlobalRule>,
    /// Field definitions, validated after pre-validation (`product_field`).
    pub fields: Vec<crate::validation::FieldRule>,
    /// Is the `tracking` service subscribed, with an endpoint? A tracking
    /// action of a lead is otherwise logged `skipped`, not queued.
    pub tracking: bool,
    /// The configuration version it was loaded at: every decision names it
    /// (`config_history` then says what the rules were).
    pub version: i64,
    /// `product.time_zone`: its days (rule and global-rule caps, counters
    /// keyed by `{%date%}`) are local days there. The store resolves it.
    pub time_zone: String,
    /// Every `history` key of the database (sorted fields each): the keys a
    /// decided lead is recorded under.
    pub history_keys: Vec<Vec<String>>,
}

impl ProductConfig {
    pub fn list(&self, id: i64) -> Option<&ListDef> {
        self.lists.iter().find(|l| l.id == id)
    }

    pub fn rules_of(&self, stage: RuleStage) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.stage == stage)
    }
}

// ---- the JSON document the store builds (store::config) ----

#[derive(Deserialize)]
struct ProductDoc {
    id: i64,
    name: String,
    kind: String,
    #[serde(default)]
    rules: Vec<RuleDoc>,
    #[serde(default)]
    lists: Vec<ListDoc>,
    #[serde(default)]
    global_rules: Vec<GlobalRuleDoc>,
    #[serde(default)]
    fields: Vec<crate::validation::FieldDoc>,
    #[serde(default)]
    tracking: bool,
    #[serde(default)]
    config_version: i64,
    #[serde(default = "utc")]
    time_zone: String,
    /// The key of every `history` condition of any product: each lead is
    /// recorded under each, so a condition of another product finds it.
    #[serde(default)]
    history_keys: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// One `iclear.rule` row plus its conditions and active actions.
#[derive(Deserialize)]
pub struct RuleDoc {
    pub id: i64,
    pub stage: String,
    pub name: String,
    #[serde(default)]
    pub publisher_id: Option<i64>,
    #[serde(default)]
    pub channel_id: Option<i64>,
    #[serde(default)]
    pub source_id: Option<i64>,
    #[serde(default)]
    pub all_new_since: Option<String>,
    /// "All New": the rule applies to sources created after
    /// `coalesce(all_new_since, created_at)`.
    #[serde(default)]
    pub all_new: bool,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub publisher_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub exclude_publisher_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub channel_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub exclude_channel_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub source_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub exclude_source_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub logical_operator: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub daily_limit: Option<i64>,
    #[serde(default)]
    pub monthly_limit: Option<i64>,
    #[serde(default)]
    pub per_source_limit: Option<i64>,
    /// `service_runs` (default) or `matches`: see `CapCounts`.
    #[serde(default)]
    pub cap_counts: Option<String>,
    /// `new_sources` (default: the seed's "for each new source") or
    /// `all_sources`.
    #[serde(default)]
    pub per_source_scope: Option<String>,
    /// `active` or `shadow` (paused rules are not loaded).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conditions: Vec<ConditionDoc>,
    #[serde(default)]
    pub actions: Vec<ActionDoc>,
}

#[derive(Deserialize)]
pub struct ConditionDoc {
    pub id: i64,
    pub category: String,
    #[serde(default)]
    pub parameter: Option<String>,
    pub operator: String,
    #[serde(default)]
    pub value: Value,
}

#[derive(Deserialize)]
pub struct ActionDoc {
    pub id: i64,
    pub action: String,
    #[serde(default)]
    pub config: Value,
}

#[derive(Deserialize)]
struct ListDoc {
    id: i64,
    name: String,
    kind: String,
    field: String,
    #[serde(default)]
    product_level: bool,
}

fn parse_time(setting: &str, s: &str) -> Result<DateTime<Utc>, ConfigError> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ConfigError::new(setting, format!("bad timestamp {s:?}: {e}")))
}

impl ConditionDoc {
    pub fn build(&self) -> Result<Condition, ConfigError> {
        Condition::new(
            self.id,
            &self.category,
            self.parameter.as_deref().unwrap_or(""),
            &self.operator,
            self.value.clone(),
        )
    }
}

impl RuleDoc {
    pub fn build(self) -> Result<Rule, ConfigError> {
        let stage = RuleStage::parse(&self.stage)?;
        let logical = match self.logical_operator.as_deref().unwrap_or("and") {
            "and" => Logical::And,
            "or" => Logical::Or,
            o => {
                return Err(ConfigError::new(
                    "logical_operator",
                    format!("unknown logical operator {o:?} (expected and or or)"),
                ))
            }
        };
        let method = match self.method.as_deref() {
            None | Some("") => None,
            Some(m) => Some(Method::parse(m).ok_or_else(|| {
                ConfigError::new(
                    "method",
                    format!("unknown method {m:?} (expected POST or FORM)"),
                )
            })?),
        };
        for (name, v) in [
            ("daily_limit", self.daily_limit),
            ("monthly_limit", self.monthly_limit),
            ("per_source_limit", self.per_source_limit),
        ] {
            if v.is_some_and(|n| n < 0) {
                return Err(ConfigError::new(name, "must not be negative"));
            }
        }
        let created_at = self
            .created_at
            .as_deref()
            .map(|s| parse_time("created_at", s))
            .transpose()?;
        let all_new_since = self
            .all_new_since
            .as_deref()
            .map(|s| parse_time("all_new_since", s))
            .transpose()?;
        let counts = CapCounts::parse(self.cap_counts.as_deref().unwrap_or("service_runs"))?;
        let per_source_since = match self.per_source_scope.as_deref().unwrap_or("new_sources") {
            // a rule not saved yet (a backtest's draft) is new from now
            "new_sources" => Some(
                all_new_since
                    .or(created_at)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            ),
            "all_sources" => None,
            o => {
                return Err(ConfigError::new(
                    "per_source_scope",
                    format!("unknown value {o:?} (expected new_sources or all_sources)"),
                ))
            }
        };
        let conditions = self
            .conditions
            .iter()
            .map(|c| {
                c.build()
                    .map_err(|e| e.within(&format!("rule_condition[{}]", c.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let actions = self
            .actions
            .iter()
            .map(|a| {
                Action::new(a.id, stage, &a.action, &a.config)
                    .map_err(|e| e.within(&format!("rule_action[{}]", a.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule {
            id: self.id,
            stage,
            name: self.name,
            targeting: Targeting {
                publisher_id: self.publisher_id,
                channel_id: self.channel_id,
                source_id: self.source_id,
                all_new_since: match (all_new_since, self.all_new) {
                    (Some(t), _) => Some(t),
                    (None, true) => created_at,
                    (None, false) => None,
                },
                publisher_ids: self.publisher_ids.unwrap_or_default(),
                exclude_publisher_ids: self.exclude_publisher_ids.unwrap_or_default(),
                channel_ids: self.channel_ids.unwrap_or_default(),
                exclude_channel_ids: self.exclude_channel_ids.unwrap_or_default(),
                source_ids: self.source_ids.unwrap_or_default(),
                exclude_source_ids: self.exclude_source_ids.unwrap_or_default(),
                method,
            },
            logical,
            caps: RuleCaps {
                daily: self.daily_limit,
                monthly: self.monthly_limit,
                per_source: self.per_source_limit,
                counts,
                per_source_since,
            },
            conditions,
            actions,
            shadow: self.status.as_deref() == Some("shadow"),
        })
    }
}

impl ProductConfig {
    /// Parse the document built by the store; any invalid value is an error
    /// naming the row and setting (it should have been refused at INSERT).
    pub fn from_json(v: Value) -> Result<ProductConfig, ConfigError> {
        let doc: ProductDoc =
            serde_json::from_value(v).map_err(|e| ConfigError::new("product", e.to_string()))?;
        let kind = match doc.kind.as_str() {
            "post" => ProductKind::Post,
            "pingpost" => ProductKind::PingPost,
            k => {
                return Err(ConfigError::new(
                    "product.kind",
                    format!("unknown kind {k:?}"),
                ))
            }
        };
        let rules = doc
            .rules
            .into_iter()
            .map(|r| {
                let id = r.id;
                r.build().map_err(|e| e.within(&format!("rule[{id}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lists = doc
            .lists
            .into_iter()
            .map(|l| {
                Ok(ListDef {
                    id: l.id,
                    kind: match l.kind.as_str() {
                        "pl" => ListKind::Pl,
                        "dnpl" => ListKind::Dnpl,
                        k => {
                            return Err(ConfigError::new(
                                format!("list[{}].kind", l.id),
                                format!("unknown kind {k:?}"),
                            ))
                        }
                    },
                    name: l.name,
                    field: l.field,
                    product_level: l.product_level,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let global_rules = doc
            .global_rules
            .into_iter()
            .map(|g| {
                let id = g.id();
                g.build()
                    .map_err(|e| e.within(&format!("global_rule[{id}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields = doc
            .fields
            .into_iter()
            .map(|f| {
                let id = f.id;
                f.build()
                    .map_err(|e| e.within(&format!("product_field[{id}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProductConfig {
            id: doc.id,
            name: doc.name,
            kind,
            rules,
            lists,
            global_rules,
            fields,
            tracking: doc.tracking,
            version: doc.config_version,
            time_zone: doc.time_zone,
            history_keys: {
                let mut keys = doc
                    .history_keys
                    .iter()
                    .map(|k| crate::history::key_fields(k).map_err(|e| e.within("history_keys")))
                    .collect::<Result<Vec<_>, _>>()?;
                // `email+homePhone` and `homePhone+email` are one key
                keys.sort();
                keys.dedup();
                keys
            },
        })
    }
}
