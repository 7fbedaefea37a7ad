//! The parts of a rule that the modules reading rules share (the stage
//! and the caps): kept apart from `config` so that `actions` and `global`
//! need not import the module that imports them.

use crate::error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleStage {
    PreValidation,
    Processing,
    AfterProcessing,
    Redirect,
}

impl RuleStage {
    pub fn parse(s: &str) -> Result<RuleStage, ConfigError> {
        Ok(match s {
            "pre_validation" => RuleStage::PreValidation,
            "processing" => RuleStage::Processing,
            "after_processing" => RuleStage::AfterProcessing,
            "redirect" => RuleStage::Redirect,
            _ => {
                return Err(ConfigError::new(
                    "stage",
                    format!("unknown rule stage {s:?} (expected pre_validation, processing, after_processing or redirect)"),
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleStage::PreValidation => "pre_validation",
            RuleStage::Processing => "processing",
            RuleStage::AfterProcessing => "after_processing",
            RuleStage::Redirect => "redirect",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RuleCaps {
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
    pub per_source: Option<i64>,
    /// What takes a slot (an Advanced Rule's caps; a global rule's caps
    /// always count its paid lookups).
    pub counts: CapCounts,
    /// `per_source_scope = 'new_sources'`: the per-source limit applies to
    /// the sources created at or after this time (the rule's
    /// `all_new_since`, else its `created_at`); None: to every source.
    pub per_source_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// `rule.cap_counts`: what the seed counts, "the max number of times the
/// selected service can be processed within the rule" (`service_runs`, the
/// default), or every match of the rule (`matches`, 0.5.0's meaning, kept
/// for the rules an upgrade found capped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CapCounts {
    #[default]
    ServiceRuns,
    Matches,
}

impl CapCounts {
    pub fn parse(s: &str) -> Result<CapCounts, ConfigError> {
        match s {
            "service_runs" => Ok(CapCounts::ServiceRuns),
            "matches" => Ok(CapCounts::Matches),
            _ => Err(ConfigError::new(
                "cap_counts",
                format!("unknown value {s:?} (expected service_runs or matches)"),
            )),
        }
    }
}

impl RuleCaps {
    pub fn any(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some() || self.per_source.is_some()
    }
}
