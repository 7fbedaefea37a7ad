//! Errors that name what is wrong: the lead key or the configuration setting.

use std::fmt;

/// A lead envelope that cannot be processed. `key` is the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub key: String,
    pub message: String,
}

impl InputError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InputError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid lead: \"{}\" {}", self.key, self.message)
    }
}

impl std::error::Error for InputError {}

/// A configuration value refused at INSERT/UPDATE. `setting` names it,
/// e.g. `rule_condition.operator` or `rule_action.config.tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// Prefix the setting with its table or parent key.
    pub fn within(mut self, parent: &str) -> Self {
        self.setting = format!("{parent}.{}", self.setting);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting {}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}
