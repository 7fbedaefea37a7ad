//! iclear's decision engine. It decides and never touches Postgres: the store
//! hands it a typed configuration and a [`facts::Facts`] implementation, and
//! persists the [`pipeline::Outcome`] it returns (docs/architecture.md "Seams").

pub mod actions;
pub mod checks;
pub mod conditions;
pub mod config;
pub mod email;
pub mod envelope;
pub mod erasure;
pub mod error;
pub mod facts;
pub mod global;
pub mod history;
pub mod keys;
pub mod pipeline;
pub mod placeholders;
pub mod rule_parts;
pub mod service;
pub mod spellings;
pub mod validation;

pub use error::ConfigError;
pub use error::InputError;

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod proptests;
