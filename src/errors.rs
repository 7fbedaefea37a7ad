//! One error type for what iclear's SQL functions refuse, and the one place
//! that turns it into a PostgreSQL error report. Each kind has one SQLSTATE
//! (docs/reference/errors.md):
//!
//! | kind | SQLSTATE | when |
//! |---|---|---|
//! | `Input` | 22023 invalid_parameter_value | a lead envelope or an argument is refused |
//! | `Config` | 22023 invalid_parameter_value | the stored configuration cannot be loaded |
//! | `Check` | 23514 check_violation | a configuration row is refused by its check |
//! | `Unavailable` | 08006 connection_failure | a verification hub cannot be reached |
//! | `TriggerMisuse` | 39P01 trigger_protocol_violated | lead_trigger called other than as attach makes it |
//! | `Internal` | XX000 internal_error | SPI, a file or the shared cap table failed |
//!
//! The message names the offending key; a list of what was expected, which
//! the engine writes as "(expected ...)", goes to the HINT. It starts with
//! who refused: `invalid setting <table.column>:` (a configuration row),
//! `<function>:` (an argument of iclear's function), or `iclear:` (the lead
//! path and internal failures, which surface in the application's INSERT).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug)]
pub enum Error {
    Input(String),
    Config(String),
    Check(String),
    Unavailable(String),
    TriggerMisuse(String),
    Internal(String),
}

impl Error {
    fn code(&self) -> PgSqlErrorCode {
        match self {
            Error::Input(_) | Error::Config(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Error::Check(_) => PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            Error::Unavailable(_) => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            Error::TriggerMisuse(_) => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Error::Internal(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raise it: an ERROR with its SQLSTATE, and the expected values, if
    /// the message lists them, as the HINT.
    pub fn raise(self) -> ! {
        let code = self.code();
        let (Error::Input(m)
        | Error::Config(m)
        | Error::Check(m)
        | Error::Unavailable(m)
        | Error::TriggerMisuse(m)
        | Error::Internal(m)) = self;
        let (message, hint) = split_hint(&m);
        let mut report = ErrorReport::new(code, message, "iclear");
        if let Some(h) = hint {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR does not return")
    }
}

/// "unknown x \"y\" (expected one of: a, b)" → ("unknown x \"y\"",
/// Some("expected one of: a, b")).
fn split_hint(message: &str) -> (String, Option<String>) {
    if let Some(at) = message.rfind(" (expected ") {
        let inside = message[at + 2..].strip_suffix(')').unwrap_or("(");
        if !inside.contains(['(', ')']) {
            return (message[..at].to_string(), Some(inside.to_string()));
        }
    }
    (message.to_string(), None)
}

#[cfg(test)]
mod unit {
    use super::split_hint;

    #[test]
    fn the_expected_list_moves_to_the_hint() {
        assert_eq!(
            split_hint(
                "invalid setting operator: unknown operator \"near\" (expected one of: equals, in)"
            ),
            (
                "invalid setting operator: unknown operator \"near\"".to_string(),
                Some("expected one of: equals, in".to_string())
            )
        );
        assert_eq!(
            split_hint("no list is named 'x'"),
            ("no list is named 'x'".to_string(), None)
        );
        assert_eq!(
            split_hint("unknown kind (expected and or or) here"),
            ("unknown kind (expected and or or) here".to_string(), None)
        );
    }
}
