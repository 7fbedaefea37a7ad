//! What a backtest (`iclear.backtest`) reads, and the engine's questions
//! answered without touching anything: the stored leads of a window, read
//! through a cursor in time order; each lead's recorded service answers in
//! place of lookups; the lists as they were when each lead came; sources
//! and the verification history read as they stand; counters kept in
//! memory. Nothing is written and nothing is
//! sent.

use super::{query_value, rolled_back, INT8, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::config::ProductConfig;
use iclear_engine::facts::{CallResult, Facts, HistoryQuery, JobSpec, RuleSlot, ServiceCall};
use iclear_engine::global::GlobalRule;
use iclear_engine::service::verification_history::SmsRecord;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::collections::HashMap;

/// One stored lead: its first decision (how it was processed) and what it
/// recorded.
pub struct StoredLead {
    pub lead_id: String,
    pub at: DateTime<Utc>,
    pub status: String,
    pub envelope: Value,
    /// The first answer of each service it looked up (sync, cached or
    /// async), by service.
    pub answers: HashMap<String, Value>,
    /// The kinds of feedback buyers reported for it.
    pub feedback: Vec<String>,
}

/// The leads of `product_id` first processed in [since, until), oldest
/// first. A lead that errored is left out.
const LEADS: &str = "
SELECT jsonb_build_object(
         'lead_id', d.lead_id, 'at_us', (extract(epoch FROM d.created_at) * 1000000)::int8, 'status', d.status,
         'envelope', d.envelope::jsonb,
         'answers', (SELECT jsonb_object_agg(s.name, s.response) FROM (
                       SELECT DISTINCT ON (f.name) f.name, f.response::jsonb AS response
                         FROM iclear.filter_log f
                        WHERE f.lead_id = d.lead_id AND f.kind = 'service' AND f.response IS NOT NULL
                        ORDER BY f.name, f.at, f.id) s),
         'feedback', (SELECT jsonb_agg(DISTINCT b.kind) FROM iclear.lead_feedback b WHERE b.lead_id = d.lead_id))
  FROM iclear.decision d
 WHERE d.product_id = $1 AND d.created_at >= $2 AND d.created_at < $3 AND d.status <> 'error'
   AND NOT EXISTS (SELECT 1 FROM iclear.decision e WHERE e.lead_id = d.lead_id AND e.id < d.id)
 ORDER BY d.created_at, d.id";

/// How many leads `for_each_lead` will replay (for the progress report).
pub fn count_leads(
    product_id: i64,
    since: TimestampWithTimeZone,
    until: TimestampWithTimeZone,
) -> i64 {
    query_value::<i64>(
        "SELECT count(*) FROM iclear.decision d
          WHERE d.product_id = $1 AND d.created_at >= $2 AND d.created_at < $3 AND d.status <> 'error'",
        &[INT8, pgrx::pg_sys::PgBuiltInOids::TIMESTAMPTZOID, pgrx::pg_sys::PgBuiltInOids::TIMESTAMPTZOID],
        &[product_id.into(), since.into(), until.into()],
    )
    .unwrap_or(0)
}

/// Leads fetched per round trip: bounds what is held in memory at once.
const BATCH: i64 = 500;

/// Call `each` with every stored lead of the window, in time order.
pub fn for_each_lead(
    product_id: i64,
    since: TimestampWithTimeZone,
    until: TimestampWithTimeZone,
    mut each: impl FnMut(StoredLead),
) {
    let cursor = Spi::connect(|c| {
        c.open_cursor(LEADS, &[product_id.into(), since.into(), until.into()])
            .detach_into_name()
    });
    loop {
        let batch: Vec<Value> = Spi::connect(|c| {
            let mut cur = c.find_cursor(&cursor).expect("the backtest cursor is open");
            let rows = cur.fetch(BATCH).expect("fetch from the backtest cursor");
            let batch = rows
                .map(|r| r.get::<JsonB>(1).ok().flatten().map(|j| j.0))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            // the cursor stays open for the next round (dropping it closes it)
            let _ = cur.detach_into_name();
            batch
        });
        if batch.is_empty() {
            break;
        }
        for mut v in batch {
            let at = v["at_us"].as_i64().unwrap_or(0);
            each(StoredLead {
                lead_id: v["lead_id"].as_str().unwrap_or_default().to_string(),
                at: DateTime::from_timestamp_micros(at).unwrap_or_default(),
                status: v["status"].as_str().unwrap_or_default().to_string(),
                envelope: v["envelope"].take(),
                answers: match v["answers"].take() {
                    Value::Object(m) => m.into_iter().collect(),
                    _ => HashMap::new(),
                },
                feedback: v["feedback"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    Spi::connect(|c| {
        if let Ok(cur) = c.find_cursor(&cursor) {
            drop(cur); // closes it
        }
    });
}

/// The id of `product` (None: there is no such product).
pub fn product_id(product: &str) -> Option<i64> {
    query_value::<i64>(
        "SELECT id FROM iclear.product WHERE name = $1",
        &[TEXT],
        &[product.into()],
    )
}

/// `iclear.export_config(product)`: the document changes are merged into.
pub fn export(product: &str) -> Value {
    query_value::<JsonB>(
        "SELECT iclear.export_config($1)",
        &[TEXT],
        &[product.into()],
    )
    .map(|j| j.0)
    .unwrap_or_default()
}

/// The configuration of `product` with `document` (a whole export_config
/// document) applied, through every validation of the configuration
/// tables, in a subtransaction that is rolled back. Err: the changes are
/// refused (the message names the path).
pub fn configuration_with(document: &Value) -> Result<Option<ProductConfig>, String> {
    let doc = document.clone();
    // the changes are never committed: they move no configuration version
    // (which would hold the version row for the backtest's while)
    super::config::defer_version(true);
    let result = rolled_back(move || {
        Spi::run_with_args(
            "SELECT iclear.apply_config($1)",
            &[JsonB(doc.clone()).into()],
        )
        .unwrap_or_else(|e| crate::errors::Error::Internal(e.to_string()).raise());
        let name = doc["product"]["name"].as_str().unwrap_or_default();
        crate::privilege::as_processor(|| super::config::load(name))
            .unwrap_or_else(|e| crate::errors::Error::Config(e.to_string()).raise())
    });
    super::config::defer_version(false);
    result
}

/// A replay's history: by (key, values), when each replayed lead was
/// decided and how.
pub type ReplayHistory = HashMap<(String, Vec<String>), Vec<(DateTime<Utc>, &'static str)>>;

/// The engine's questions for one replayed lead.
pub struct ReplayFacts<'a> {
    /// When the lead was processed: periods, dates and ages are as of then.
    pub at: DateTime<Utc>,
    pub lead_id: &'a str,
    pub answers: &'a HashMap<String, Value>,
    /// Counters of the replay, from zero at the window's start.
    pub counters: &'a HashMap<(String, String), i64>,
    /// The history of the replay (this product's replayed leads, from the
    /// window's start): when and how each was decided, by key and values.
    pub history: &'a ReplayHistory,
    pub source_created_at: Option<DateTime<Utc>>,
    /// Draws of the deterministic random numbers so far.
    pub draws: u64,
    /// Lookups the lead needed and had no recorded answer for.
    pub unanswered: u32,
}

impl ReplayFacts<'_> {
    /// A number in 0..n from the lead id and the draw (FNV-1a, then
    /// splitmix64): the same in every run, so two backtests compare.
    fn draw(&mut self, n: u64) -> u64 {
        self.draws += 1;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.lead_id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = h ^ self.draws.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

impl Facts for ReplayFacts<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.at
    }

    /// The product's local date when the lead came.
    fn local_date(&self, time_zone: &str) -> String {
        super::local_time::Zone::or_utc(time_zone)
            .date_of(self.at)
            .format("%Y-%m-%d")
            .to_string()
    }

    /// The lists as they were when the lead came: an entry added since (by
    /// this lead's own lookup, say) is not counted. Removed entries leave no
    /// trace: they are not known.
    fn lists_containing(&mut self, probes: &[(i64, String)]) -> Vec<i64> {
        let at = self.at.timestamp_micros();
        probes
            .iter()
            .filter(|(id, value)| {
                query_value::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM iclear.list_entry
                                     WHERE list_id = $1 AND value = $2
                                       AND (extract(epoch FROM added_at) * 1000000)::int8 < $3)",
                    &[INT8, TEXT, INT8],
                    &[(*id).into(), value.as_str().into(), at.into()],
                )
                .unwrap_or(false)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn counter_value(&mut self, name: &str, key: &str) -> i64 {
        self.counters
            .get(&(name.to_string(), key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn source_created_at(&mut self) -> Option<DateTime<Utc>> {
        self.source_created_at
    }

    fn random_0_1000(&mut self) -> i64 {
        self.draw(1001) as i64
    }

    /// The replayed leads before this one, whatever the scope: a backtest
    /// replays one product's leads from `since` (docs/guide/duplicates.md).
    fn history_count(&mut self, q: &HistoryQuery) -> i64 {
        let from = self.at - chrono::Duration::seconds(q.window.seconds);
        self.history
            .get(&(q.key.to_string(), q.values.to_vec()))
            .map_or(0, |rows| {
                rows.iter()
                    .filter(|(at, status)| {
                        *at > from && q.window.statuses.iter().any(|s| s == status)
                    })
                    .count() as i64
            })
    }

    /// Caps are not replayed: every capped rule has room.
    fn take_rule_cap(&mut self, _slot: &RuleSlot) -> bool {
        true
    }

    fn roll_percent(&mut self) -> u32 {
        self.draw(100) as u32
    }

    /// The lead's own recorded answer, whatever its age.
    fn cached(&mut self, service: &str, _key: &str, _max_age_days: Option<u32>) -> Option<Value> {
        self.answers.get(service).cloned()
    }

    fn take_service_cap(&mut self, _rule: &GlobalRule, _also: Option<&RuleSlot>) -> Option<String> {
        None
    }

    /// The recorded answer; nothing is ever sent.
    fn call_service(&mut self, call: &ServiceCall) -> CallResult {
        if let Some(data) = self.answers.get(&call.rule.service) {
            return CallResult::Response {
                data: data.clone(),
                request: Value::Null,
            };
        }
        self.unanswered += 1;
        CallResult::NoResponse {
            reason: format!("backtest: no recorded answer of {}", call.rule.service),
            timed_out: false,
            retryable: false,
            request: Value::Null,
        }
    }

    fn enqueue(&mut self, _job: &JobSpec) -> i64 {
        0
    }

    fn signature_recorded_at(&mut self, signature: &str) -> Result<Option<DateTime<Utc>>, String> {
        super::verification::signature_recorded_at(signature)
    }

    fn sms_verified(&mut self, product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
        super::verification::sms_verified(product, phone)
    }

    /// The lead pauses; no code is stored and no SMS queued.
    fn start_sms_verification(
        &mut self,
        _product: &str,
        _phone: &str,
        _lead_id: &str,
    ) -> Result<Option<i64>, String> {
        Ok(None)
    }
}
