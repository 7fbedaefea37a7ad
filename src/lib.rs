//! iclear: filter web leads inside PostgreSQL.
//!
//! Seams (design §8): `iclear_engine` decides and never touches SPI; `store`
//! talks to Postgres and never decides; `lead` and `row` glue the two for the
//! SQL entry points in `api`.

use pgrx::prelude::*;

pgrx::pg_module_magic!(name, version);

mod api;
mod backtest;
mod compat;
mod lead;
mod remote;
mod row;
mod store;
mod trigger;
mod tuple;
mod worker;

/// `iclear.config_cache`: keep each product's configuration in backend memory
/// until the configuration version moves (off: re-read it for every lead).
pub static CONFIG_CACHE: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    worker::define_gucs();
    // the worker registers only from shared_preload_libraries (design §1)
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
    }
    pgrx::GucRegistry::define_bool_guc(
        c"iclear.config_cache",
        c"Cache product configuration per backend",
        c"When on (default), a backend keeps each product's configuration until the configuration version changes; off re-reads every configuration table for every lead.",
        &CONFIG_CACHE,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
    pgrx::GucRegistry::define_enum_guc(
        c"iclear.trace",
        c"What a decision's trace records: full, matched or off",
        c"matched (default): only rules that matched, with their conditions and actions; full: every rule, skipped or evaluated, with each condition; off: no trace (the filter log still records matched rules).",
        &TRACE,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.counter_lock_wait",
        c"Milliseconds a lead waits for another lead that read the same counter key",
        c"A counter read by a condition (a duplicate check) is locked until the reading lead's transaction ends, so a second lead with the same key sees the first one's increment. Default 10000; past it the lead reads the committed value without the lock.",
        &COUNTER_LOCK_WAIT_MS,
        0,
        600_000,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::UNIT_MS,
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.sms_code_ttl",
        c"Seconds a pause_for_verification SMS code stays valid",
        c"Default 600. iclear.confirm_sms() refuses an older code; a new pause sends a new one.",
        &SMS_CODE_TTL_S,
        30,
        86_400,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::UNIT_S,
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.sms_max_attempts",
        c"Wrong codes iclear.confirm_sms() accepts before the pending code is dead",
        c"Default 5.",
        &SMS_MAX_ATTEMPTS,
        1,
        100,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.hub_timeout",
        c"Seconds a verification hub may take to connect, and to answer one statement",
        c"Default 5. iclear.use_verification_hub() sets the server's connect_timeout and the hub's statement_timeout from it; past it the lead goes on with the rule's no-response action.",
        &HUB_TIMEOUT_S,
        1,
        300,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::UNIT_S,
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.retention_days",
        c"Days of decisions and filter log that iclear.maintain() keeps",
        c"Monthly partitions of iclear.decision and iclear.filter_log wholly older than this are dropped by iclear.maintain().",
        &RETENTION_DAYS,
        1,
        36500,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
    pgrx::GucRegistry::define_int_guc(
        c"iclear.evidence_retention_days",
        c"Days of consent-claim evidence (iClaim results) that iclear.maintain() keeps",
        c"Default 1827 (5 years, TCPA/TSR record keeping). Evidence lives in iclear.consent_evidence, apart from the filter log.",
        &EVIDENCE_RETENTION_DAYS,
        1,
        36500,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
}

/// `iclear.trace`: what a decision's trace records (see TraceLevel).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trace {
    #[name = c"full"]
    Full,
    #[name = c"matched"]
    Matched,
    #[name = c"off"]
    Off,
}

pub static TRACE: pgrx::GucSetting<Trace> = pgrx::GucSetting::<Trace>::new(Trace::Matched);

/// `iclear.retention_days` and `iclear.evidence_retention_days`, read by
/// iclear.maintain() (sql/finalize.sql).
pub static RETENTION_DAYS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(180);
pub static EVIDENCE_RETENTION_DAYS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(1827);

/// `iclear.counter_lock_wait`: see `store::facts::counter_value`.
pub static COUNTER_LOCK_WAIT_MS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(10_000);

/// `iclear.sms_code_ttl` and `iclear.sms_max_attempts`: the life of a
/// pause_for_verification code (read by confirm_sms in sql/finalize.sql too).
pub static SMS_CODE_TTL_S: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(600);
pub static SMS_MAX_ATTEMPTS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(5);
/// `iclear.hub_timeout`: read by iclear.use_verification_hub() (SQL).
pub static HUB_TIMEOUT_S: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(5);

extension_sql_file!("../sql/bootstrap.sql", bootstrap);
extension_sql_file!("../sql/finalize.sql", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
