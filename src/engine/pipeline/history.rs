//! The lead's entries in the history that `history` conditions count.

use super::*;

/// Record the decided lead under every `history` key of the database
/// (`ProductConfig::history_keys`) it has values for, so that a condition of
/// any product in scope finds it. An `error` lead is not recorded: it was
/// not decided.
pub(super) fn record_history(cfg: &ProductConfig, lead: &mut Lead) {
    if lead.status == Status::Error || lead.overflow.is_some() {
        return;
    }
    for fields in &cfg.history_keys {
        if let Some(values) = crate::history::values_of(fields, &lead.fields) {
            lead.effects.push(Effect::RecordHistory {
                key: crate::history::key_name(fields),
                values,
                status: lead.status.as_str(),
            });
        }
    }
}
