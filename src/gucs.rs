//! Every GUC of iclear (`iclear.*`), defined in `_PG_init`, and a typed
//! accessor for each: code reads a setting through its function here, never
//! through a GucSetting.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

/// `iclear.config_cache`: keep each product's configuration in backend memory
/// until the configuration version moves (off: re-read it for every lead).
static CONFIG_CACHE: GucSetting<bool> = GucSetting::<bool>::new(true);

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

static TRACE: GucSetting<Trace> = GucSetting::<Trace>::new(Trace::Matched);

/// `iclear.retention_days` and `iclear.evidence_retention_days`, read by
/// iclear.maintain() (sql/finalize.sql).
static RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(180);
static EVIDENCE_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(1827);

/// `iclear.counter_lock_wait`: see `store::facts::counter_value`.
static COUNTER_LOCK_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// `iclear.sms_code_ttl` and `iclear.sms_max_attempts`: the life of a
/// pause_for_verification code (read by confirm_sms in sql/finalize.sql too).
static SMS_CODE_TTL_S: GucSetting<i32> = GucSetting::<i32>::new(600);
static SMS_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
/// `iclear.hub_timeout`: read by iclear.use_verification_hub() (SQL).
static HUB_TIMEOUT_S: GucSetting<i32> = GucSetting::<i32>::new(5);
/// `iclear.cap_lease_size`: read by iclear.refresh_cap_leases() (SQL).
static CAP_LEASE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(100);
static PROGRESS_NOTICE_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);

/// `iclear.sms_max_sends`, `iclear.sms_max_failed` and `iclear.sms_window`:
/// per phone and product, the codes sent and the wrong codes tried within a
/// sliding window (SECURITY.md "SMS codes").
static SMS_MAX_SENDS: GucSetting<i32> = GucSetting::<i32>::new(3);
static SMS_MAX_FAILED: GucSetting<i32> = GucSetting::<i32>::new(10);
static SMS_WINDOW_S: GucSetting<i32> = GucSetting::<i32>::new(3600);
/// `iclear.allowed_endpoints`: the egress policy (src/services/egress.rs).
static ALLOWED_ENDPOINTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

// the background worker and the job queue (src/worker.rs)
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(50);
static HTTP_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static LEASE_S: GucSetting<i32> = GucSetting::<i32>::new(60);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);

/// Define every GUC (from `_PG_init`).
pub fn define() {
    GucRegistry::define_bool_guc(
        c"iclear.config_cache",
        c"Cache product configuration per backend",
        c"When on (default), a backend keeps each product's configuration until the configuration version changes; off re-reads every configuration table for every lead.",
        &CONFIG_CACHE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"iclear.trace",
        c"What a decision's trace records: full, matched or off",
        c"matched (default): only rules that matched, with their conditions and actions; full: every rule, skipped or evaluated, with each condition; off: no trace (the filter log still records matched rules).",
        &TRACE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.counter_lock_wait",
        c"Milliseconds a lead waits for another lead that read the same counter key",
        c"A counter read by a condition (a duplicate check) is locked until the reading lead's transaction ends, so a second lead with the same key sees the first one's increment. Default 10000; past it the lead reads the committed value without the lock.",
        &COUNTER_LOCK_WAIT_MS,
        0,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"iclear.sms_code_ttl",
        c"Seconds a pause_for_verification SMS code stays valid",
        c"Default 600. iclear.confirm_sms() refuses an older code; a new pause sends a new one.",
        &SMS_CODE_TTL_S,
        30,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"iclear.sms_max_attempts",
        c"Wrong codes iclear.confirm_sms() accepts before the pending code is dead",
        c"Default 5.",
        &SMS_MAX_ATTEMPTS,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.sms_max_sends",
        c"SMS codes sent to one phone (per product) within iclear.sms_window",
        c"Default 3. A pause that would send one more is rejected with a reason naming this setting.",
        &SMS_MAX_SENDS,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.sms_max_failed",
        c"Wrong codes iclear.confirm_sms() accepts for one phone (per product) within iclear.sms_window",
        c"Default 10, whatever code they were meant for; past it the phone cannot be confirmed until the window has passed. A wrong code counts even when the caller rolls back.",
        &SMS_MAX_FAILED,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.sms_window",
        c"Seconds of the window of iclear.sms_max_sends and iclear.sms_max_failed",
        c"Default 3600.",
        &SMS_WINDOW_S,
        60,
        604_800,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"iclear.allowed_endpoints",
        c"Hosts and networks where a non-public service endpoint may be",
        c"Comma-separated host names, addresses and CIDR networks (127.0.0.1, 10.0.0.0/8, [::1], vendor.internal). Public addresses are always allowed; a private, loopback or link-local one only when listed here. Checked when an endpoint is saved and at every call. Default empty.",
        &ALLOWED_ENDPOINTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.hub_timeout",
        c"Seconds a verification hub may take to connect, and to answer one statement",
        c"Default 5. iclear.use_verification_hub() sets the server's connect_timeout and the hub's statement_timeout from it; past it the lead goes on with the rule's no-response action.",
        &HUB_TIMEOUT_S,
        1,
        300,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"iclear.cap_lease_size",
        c"Slots of a shared global cap a store takes from its hub at a time",
        c"Default 100. A store member of a hub spends only slots the hub granted it (a lease); the worker asks for more when fewer than half of this remain. Slots parked in one store's lease are not available to another until the period ends or the store leaves.",
        &CAP_LEASE_SIZE,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.progress_notice_interval",
        c"How often long work (backtest, import_config, maintain, forget, rebuild_history) says how far it is",
        c"Default 5 s: a NOTICE with what is done, the rate and the time left; 0 turns them off (iclear.progress shows it all the same).",
        &PROGRESS_NOTICE_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"iclear.retention_days",
        c"Days of decisions and filter log that iclear.maintain() keeps",
        c"Monthly partitions of iclear.decision and iclear.filter_log wholly older than this are dropped by iclear.maintain().",
        &RETENTION_DAYS,
        1,
        36500,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.evidence_retention_days",
        c"Days of consent-claim evidence (iClaim results) that iclear.maintain() keeps",
        c"Default 1827 (5 years, TCPA/TSR record keeping). Evidence lives in iclear.consent_evidence, apart from the filter log.",
        &EVIDENCE_RETENTION_DAYS,
        1,
        36500,
        GucContext::Suset,
        GucFlags::default(),
    );

    GucRegistry::define_string_guc(
        c"iclear.database",
        c"The database whose iclear.job queue the background worker serves",
        c"Default postgres. The worker idles until iclear is created there. After a change and a reload the worker restarts (within 5 s) on the new database.",
        &DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.worker_naptime",
        c"Milliseconds the worker sleeps when the queue is empty",
        c"Default 1000. A full batch is followed at once by the next.",
        &NAPTIME_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"iclear.worker_batch_size",
        c"Jobs the worker claims at a time",
        c"Default 50. Each batch is claimed in one transaction and completed in one.",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.http_concurrency",
        c"Concurrent HTTP requests of one batch",
        c"Default 8 threads; Postgres is only ever called from the main thread.",
        &HTTP_CONCURRENCY,
        1,
        256,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"iclear.job_lease",
        c"Seconds a claimed job stays leased before another claim may take it again",
        c"Default 60 (far above the 5 s longest service timeout): a worker that died mid-batch loses no job, its jobs run again after the lease.",
        &LEASE_S,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"iclear.job_max_attempts",
        c"Attempts of an async lookup before it is marked failed",
        c"Default 5. Timeouts, transport errors and HTTP 5xx/429 are retried after 10 s x 2^(attempt-1), at most 10 minutes; a definitive answer (success: false, 401) fails at once.",
        &MAX_ATTEMPTS,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// `iclear.config_cache`.
/// `iclear.progress_notice_interval` (None: no NOTICEs).
pub fn progress_notice_interval() -> Option<Duration> {
    let ms = PROGRESS_NOTICE_MS.get();
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

pub fn config_cache() -> bool {
    CONFIG_CACHE.get()
}

/// `iclear.trace`, as the engine's trace level.
pub fn trace() -> iclear_engine::pipeline::TraceLevel {
    use iclear_engine::pipeline::TraceLevel;
    match TRACE.get() {
        Trace::Full => TraceLevel::Full,
        Trace::Matched => TraceLevel::Matched,
        Trace::Off => TraceLevel::Off,
    }
}

/// `iclear.counter_lock_wait`.
pub fn counter_lock_wait() -> Duration {
    Duration::from_millis(COUNTER_LOCK_WAIT_MS.get().max(0) as u64)
}

/// `iclear.sms_code_ttl`, in seconds.
pub fn sms_code_ttl_s() -> i64 {
    i64::from(SMS_CODE_TTL_S.get())
}

/// `iclear.sms_max_sends`.
pub fn sms_max_sends() -> i64 {
    i64::from(SMS_MAX_SENDS.get())
}

/// `iclear.sms_max_failed`.
pub fn sms_max_failed() -> i64 {
    i64::from(SMS_MAX_FAILED.get())
}

/// `iclear.sms_window`, in seconds.
pub fn sms_window_s() -> i64 {
    i64::from(SMS_WINDOW_S.get())
}

/// `iclear.allowed_endpoints` ("" when unset).
pub fn allowed_endpoints() -> String {
    ALLOWED_ENDPOINTS
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_default()
}

/// Make `iclear.allowed_endpoints` the policy of the calls that follow;
/// Err names the setting when it cannot be read.
pub fn apply_egress_policy() -> Result<(), String> {
    iclear_services::egress::set_policy(&allowed_endpoints())
        .map_err(|e| format!("invalid setting iclear.allowed_endpoints: {e}"))
}

/// `iclear.database`: the database the worker serves.
pub fn worker_database() -> Option<String> {
    DATABASE.get().and_then(|c| c.into_string().ok())
}

/// `iclear.worker_naptime`.
pub fn worker_naptime() -> Duration {
    Duration::from_millis(NAPTIME_MS.get().max(10) as u64)
}

/// `iclear.worker_batch_size`.
pub fn worker_batch_size() -> usize {
    BATCH_SIZE.get().max(1) as usize
}

/// `iclear.http_concurrency`.
pub fn http_concurrency() -> usize {
    HTTP_CONCURRENCY.get().max(1) as usize
}

/// `iclear.job_lease`, in seconds.
pub fn job_lease_s() -> i64 {
    i64::from(LEASE_S.get())
}

/// `iclear.job_max_attempts`.
pub fn job_max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}
