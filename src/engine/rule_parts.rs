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
}

impl RuleCaps {
    pub fn any(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some() || self.per_source.is_some()
    }
}
