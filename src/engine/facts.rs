//! What the engine asks of the world while it decides. The store answers from
//! Postgres; unit tests answer from memory. Keeping these behind a trait is
//! what lets the engine decide without touching SPI.

use crate::global::GlobalRule;
use crate::rule_parts::RuleCaps;
use crate::service::verification_history::SmsRecord;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// One synchronous request to a service, for its adapter.
pub struct ServiceCall<'a> {
    pub rule: &'a GlobalRule,
    /// What is looked up: the IP, the phone digits, the iClaim session id.
    pub value: &'a str,
    pub lead_id: &'a str,
    pub product: &'a str,
    /// The other lead fields the adapter sends (`Settings::call_fields`).
    pub fields: &'a Map<String, Value>,
    pub timeout_s: u8,
}

/// What came back. `request` is the request as logged (no credentials).
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// A valid answer (the vendor's JSON).
    Response { data: Value, request: Value },
    /// No usable answer: timeout, transport or HTTP error, `success: false`.
    NoResponse {
        reason: String,
        timed_out: bool,
        /// Worth retrying (timeouts, transport errors, HTTP 5xx and 429);
        /// a definitive answer such as `success: false` is not.
        retryable: bool,
        request: Value,
    },
}

/// An async lookup to queue (`iclear.job`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub global_rule_id: i64,
    pub product_id: i64,
    pub lead_id: String,
    pub payload: Value,
}

/// A slot of an Advanced Rule's caps, as the engine asks for it: the rule,
/// its limits, and the per-source bucket the lead counts in (the engine
/// decides whether the lead's source is "new" to the rule).
#[derive(Debug, Clone)]
pub struct RuleSlot {
    pub rule_id: i64,
    pub caps: RuleCaps,
    pub per_source: PerSource,
}

/// Which per-source bucket a lead takes a slot of, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerSource {
    /// No per-source limit, or the lead's source is not new to the rule.
    NotCounted,
    Source(i64),
    /// A lead without a source (`per_source_scope = 'all_sources'` only).
    NoSource,
}

/// A `history` condition's question: how many earlier leads have these
/// values of `key`'s fields within its window?
#[derive(Debug, Clone)]
pub struct HistoryQuery<'a> {
    /// The canonical key name (`email+homePhone`: sorted fields).
    pub key: &'a str,
    /// The lead's normalised values of its fields, in their order.
    pub values: &'a [String],
    pub window: &'a crate::history::HistoryWindow,
    pub product_id: i64,
}

pub trait Facts {
    fn now(&self) -> DateTime<Utc>;
    /// Today's date (YYYY-MM-DD) in `time_zone` (an IANA name the store
    /// has checked): `{%date%}` and counters keyed by it use the product's
    /// local day. The engine has no time-zone data; UTC without a store.
    fn local_date(&self, _time_zone: &str) -> String {
        self.now().format("%Y-%m-%d").to_string()
    }
    /// Which of these (list id, normalised value) pairs are on their list?
    /// Returns the ids of the lists that hold their value.
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64>;
    /// Current value of a counter (0 when absent).
    fn counter_value(&mut self, name: &str, key: &str) -> i64;
    /// When the lead's source was first seen (None when the lead has no source).
    fn source_created_at(&mut self) -> Option<DateTime<Utc>>;
    /// How many earlier leads the history holds for the query (a lead in
    /// flight with the same values in another session is waited for, so the
    /// second of two sees the first). The store may stop counting past the
    /// count the condition asks for.
    fn history_count(&mut self, q: &HistoryQuery) -> i64;
    /// A uniform integer 0..=1000 ("Generate Random Number").
    fn random_0_1000(&mut self) -> i64;
    /// Count one slot of a capped rule (`cap_counts = 'matches'`),
    /// atomically; false when a cap is full (then nothing is counted).
    fn take_rule_cap(&mut self, slot: &RuleSlot) -> bool;
    /// A uniform integer 0..100 ("% of leads to lookup" sampling).
    fn roll_percent(&mut self) -> u32;
    /// A cached answer of `service` for `key`, not older than `max_age_days`
    /// (None: any age).
    fn cached(&mut self, service: &str, key: &str, max_age_days: Option<u32>) -> Option<Value>;
    /// Count one paid lookup against the global rule's own caps and its
    /// service's global caps, and against the caps of the Advanced Rule
    /// whose action runs it (`also`, `cap_counts = 'service_runs'`), all at
    /// once. Returns the full cap (nothing is counted then), or None when
    /// the lookup may run.
    fn take_service_cap(&mut self, rule: &GlobalRule, also: Option<&RuleSlot>) -> Option<String>;
    /// Run a synchronous lookup through the service's adapter.
    fn call_service(&mut self, call: &ServiceCall) -> CallResult;
    /// Queue an async lookup; returns the job id.
    fn enqueue(&mut self, job: &JobSpec) -> i64;
    /// When this signature was last recorded (any product, any instance
    /// sharing the history). Err: the history cannot be reached.
    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String>;
    /// The latest verified SMS record of a (normalised) phone for a product.
    fn sms_verified(&mut self, product: &str, phone: &str) -> Result<Option<SmsRecord>, String>;
    /// An SMS code as the history keeps it (`SmsRecord::code`): a store may
    /// keep a keyed digest rather than the code (SECURITY.md "SMS codes").
    fn sms_code_digest(&mut self, _product: &str, _phone: &str, code: &str) -> String {
        code.to_string()
    }
    /// Start an SMS verification: store a fresh random code as pending and
    /// queue the SMS. Returns the job id of the SMS (None: no SMS service).
    fn start_sms_verification(
        &mut self,
        product: &str,
        phone: &str,
        lead_id: &str,
    ) -> Result<Option<i64>, String>;
}

pub use crate::keys::{normalize_list_value, stored_key, STORED_KEY_BYTES};
