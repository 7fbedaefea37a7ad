//! The lead history that `history` conditions count (duplicates and
//! velocity): one row per decided lead and key, holding a keyed digest of
//! the lead's normalised values, never the values (SECURITY.md "The lead
//! history"). A reader and a writer of one key take its lock, so of two
//! leads with the same values in flight the second sees the first.

use super::probe;
use super::{exec, query_value, INT8, TEXT};
use iclear_engine::facts::HistoryQuery;
use iclear_engine::history::HistoryScope;
use pgrx::pg_sys;
use std::cell::RefCell;

/// The advisory-lock class of a history key (`store::try_xact_lock`).
pub const LOCK_HISTORY: i32 = 0x6963_0007;

/// The most earlier leads a count reads: past it a condition's answer is
/// the same for any threshold a rule may hold (at most 1,000,000), so the
/// count stops there and a bot's millionth lead costs what its tenth did.
const MAX_COUNTED: i64 = 1_000_001;

thread_local! {
    /// The install's secret (`iclear.sms_key`, the oldest), read once.
    static SECRET: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

fn secret() -> Vec<u8> {
    SECRET.with_borrow_mut(|s| {
        s.get_or_insert_with(|| {
            query_value::<Vec<u8>>(
                "SELECT key FROM iclear.sms_key ORDER BY made_at, key LIMIT 1",
                &[],
                &[],
            )
            .unwrap_or_default()
        })
        .clone()
    })
}

/// The keyed digest a key's values are kept under (`history::digest`,
/// with the install's secret).
pub fn digest(key: &str, values: &[String]) -> i64 {
    iclear_engine::history::digest(&secret(), key, values)
}

/// Take the key's lock (waiting, bounded, for the lead in flight that holds
/// it) and, when a bulk load may have written the key without its lock,
/// wait for its rows of the key to settle. The wait is polled and bounded by
/// `iclear.counter_lock_wait`, as for counters: two multi-row transactions
/// meeting two keys in opposite orders wait that long, never deadlock.
fn settle(digest: i64) {
    let started = std::time::Instant::now();
    let wait = lock(digest);
    if super::bulk_writers_open() {
        if let Some(t) = probe::target(c"lead_history", c"lead_history_key") {
            let keys = [(pg_sys::F_INT8EQ, pg_sys::Datum::from(digest))];
            super::poll(wait.saturating_sub(started.elapsed()), || {
                probe::dirty(&t, &keys) != probe::Found::BeingWritten
            });
        }
    }
}

/// How many earlier leads the history holds for the query, read after the
/// key's lock with a fresh snapshot (`store::latest`).
pub fn count(q: &HistoryQuery) -> i64 {
    let d = digest(q.key, q.values);
    settle(d);
    if let Some(n) = probed_count(d, q) {
        return n;
    }
    let statuses = format!("{{{}}}", q.window.statuses.join(","));
    let (product, products): (Option<i64>, Option<String>) = match &q.window.scope {
        HistoryScope::Product => (Some(q.product_id), None),
        HistoryScope::All => (None, None),
        HistoryScope::Products(names) => (
            None,
            Some(serde_json::Value::from(names.clone()).to_string()),
        ),
    };
    super::latest(|| {
        query_value::<i64>(
            "SELECT count(*) FROM (
                SELECT 1 FROM iclear.lead_history h
                 WHERE h.key = $1 AND h.at > now() - make_interval(secs => $2)
                   AND h.status = ANY ($3::text[])
                   AND ($4::int8 IS NULL OR h.product_id = $4)
                   AND ($5::jsonb IS NULL OR h.product_id IN (
                        SELECT p.id FROM iclear.product p
                         WHERE p.name IN (SELECT jsonb_array_elements_text($5::jsonb))))
                 LIMIT $6) x",
            &[INT8, INT8, TEXT, INT8, TEXT, INT8],
            &[
                d.into(),
                q.window.seconds.into(),
                statuses.as_str().into(),
                product.into(),
                products.as_deref().into(),
                MAX_COUNTED.into(),
            ],
        )
    })
    .unwrap_or(0)
}

/// The count of `count`'s statement read from the key's index without SPI
/// (whose executor start-up cost more than the scan: docs/performance.md),
/// with the same snapshot (taken now) and the same filters: rows of the key
/// newer than the window's start (`now()` less its seconds), of one of
/// its statuses, in the lead's product for the `product` scope. None for a
/// `products` scope (the statement resolves the names) or when the
/// processor may not read the table (the statement raises the error).
fn probed_count(digest: i64, q: &HistoryQuery) -> Option<i64> {
    let product = match &q.window.scope {
        HistoryScope::Product => Some(q.product_id),
        HistoryScope::All => None,
        HistoryScope::Products(_) => return None,
    };
    let t = probe::target(c"lead_history", c"lead_history_key")?;
    let (at, product_id, status) = (
        probe::column(&t, c"at"),
        probe::column(&t, c"product_id"),
        probe::column(&t, c"status"),
    );
    // timestamptz: microseconds, as now() - make_interval(secs => seconds)
    let since = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
        .saturating_sub(q.window.seconds.saturating_mul(1_000_000));
    Some(probe::with_snapshot(probe::Snap::Latest, || {
        let mut p = probe::Probe::open(&t, 1);
        p.seek(&[(pg_sys::F_INT8EQ, pg_sys::Datum::from(digest))]);
        let mut n = 0;
        while n < MAX_COUNTED && p.next() {
            let counted = p.get::<i64>(at).is_some_and(|a| a > since)
                && product.is_none_or(|id| p.get::<i64>(product_id) == Some(id))
                && p.get::<String>(status)
                    .is_some_and(|s| q.window.statuses.contains(&s));
            n += i64::from(counted);
        }
        p.close();
        n
    }))
}

/// The digest a lead is recorded under, after its key's lock (waited for,
/// bounded): a row written after it is seen by the next reader of the key.
/// `persist::save` writes the row with the decision.
pub fn locked_digest(key: &str, values: &[String]) -> i64 {
    let d = digest(key, values);
    lock(d);
    d
}

/// Take the lock of the key under `digest`, waiting up to
/// `iclear.counter_lock_wait` (returned) for the lead in flight that holds it.
fn lock(digest: i64) -> std::time::Duration {
    let wait = crate::gucs::counter_lock_wait();
    super::wait_xact_lock(
        LOCK_HISTORY,
        &[&digest.to_string()],
        wait.as_millis() as u64,
    );
    wait
}

/// Record a decided lead under a key, in its transaction (a lead that
/// rolls back leaves no row): after the key's lock, which a reader of the
/// key then waits for.
pub fn record(product_id: i64, status: &str, key: &str, values: &[String]) {
    let d = locked_digest(key, values);
    exec(
        "INSERT INTO iclear.lead_history (key, product_id, status, at) VALUES ($1, $2, $3, now())",
        &[INT8, INT8, TEXT],
        &[d.into(), product_id.into(), status.into()],
    );
}

/// Every `history` key of the database (sorted fields each, once).
pub fn keys() -> Vec<Vec<String>> {
    let names: Option<pgrx::JsonB> = query_value(
        "SELECT jsonb_agg(DISTINCT c.parameter) FROM iclear.rule_condition c WHERE c.category = 'history'",
        &[],
        &[],
    );
    let names = match names {
        Some(pgrx::JsonB(serde_json::Value::Array(a))) => a,
        _ => Vec::new(),
    };
    let mut keys: Vec<Vec<String>> = names
        .iter()
        .filter_map(|p| iclear_engine::history::key_fields(p.as_str()?).ok())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The digests of the history keys a consumer's email and phone make (the
/// keys whose every field is an email or a phone field, by name), for
/// `iclear.forget`. A key with another field (an IP, a device) cannot be
/// made from them: its rows go when their window ends.
pub fn erasure_digests(email: Option<&str>, phone: Option<&str>) -> Vec<i64> {
    let value = |field: &str| -> Option<String> {
        let lower = field.to_ascii_lowercase();
        let raw = if lower.contains("phone") {
            phone?
        } else if lower.contains("email") {
            email?
        } else {
            return None;
        };
        iclear_engine::history::normalize(field, &serde_json::Value::from(raw))
    };
    keys()
        .into_iter()
        .filter_map(|fields| {
            let values: Option<Vec<String>> = fields.iter().map(|f| value(f)).collect();
            values.map(|v| digest(&iclear_engine::history::key_name(&fields), &v))
        })
        .collect()
}

/// `iclear.rebuild_history(product, since)`: the history of `product`'s
/// leads decided since `since`, made again from their decisions (for a new
/// condition whose window is longer than what was kept). Its rows from
/// `since` are replaced; each decision is one row per key it has values
/// for, with its status, at its time, as a live lead records. Returns the
/// rows written.
pub fn rebuild(product_id: i64, since: pgrx::datum::TimestampWithTimeZone) -> i64 {
    let keys = keys();
    exec(
        "DELETE FROM iclear.lead_history WHERE product_id = $1 AND at >= $2",
        &[INT8, pgrx::pg_sys::PgBuiltInOids::TIMESTAMPTZOID],
        &[product_id.into(), since.into()],
    );
    if keys.is_empty() {
        return 0;
    }
    let mut written = 0i64;
    let mut after: i64 = 0;
    let mut read = 0i64;
    let total = query_value::<i64>(
        "SELECT count(*) FROM iclear.decision WHERE product_id = $1 AND created_at >= $2",
        &[INT8, pgrx::pg_sys::PgBuiltInOids::TIMESTAMPTZOID],
        &[product_id.into(), since.into()],
    );
    crate::progress::update(0, total);
    // in batches by id, so memory stays bounded however long the window
    loop {
        let batch: Option<pgrx::JsonB> = query_value(
            "SELECT jsonb_agg(jsonb_build_array(d.id, d.created_at, d.status,
                                                coalesce(d.decision::jsonb -> 'fields', d.envelope::jsonb -> 'fields'))
                              ORDER BY d.id)
               FROM (SELECT * FROM iclear.decision
                      WHERE product_id = $1 AND created_at >= $2 AND id > $3
                        AND status IN ('accepted', 'rejected', 'paused')
                      ORDER BY id LIMIT 1000) d",
            &[INT8, pgrx::pg_sys::PgBuiltInOids::TIMESTAMPTZOID, INT8],
            &[product_id.into(), since.into(), after.into()],
        );
        let Some(pgrx::JsonB(serde_json::Value::Array(rows))) = batch else {
            break;
        };
        read += rows.len() as i64;
        crate::progress::update(read, None);
        for r in &rows {
            after = r[0].as_i64().unwrap_or(after);
            let Some(fields) = r[3].as_object() else {
                continue;
            };
            for k in &keys {
                if let Some(values) = iclear_engine::history::values_of(k, fields) {
                    exec(
                        "INSERT INTO iclear.lead_history (key, product_id, status, at)
                         VALUES ($1, $2, $3, $4::timestamptz)",
                        &[INT8, INT8, TEXT, TEXT],
                        &[
                            digest(&iclear_engine::history::key_name(k), &values).into(),
                            product_id.into(),
                            r[2].as_str().unwrap_or("accepted").into(),
                            r[1].as_str().unwrap_or_default().into(),
                        ],
                    );
                    written += 1;
                }
            }
        }
    }
    written
}
