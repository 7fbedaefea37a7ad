//! Cap slots: counted in shared memory (`cap_table.rs`), so that taking
//! one never waits for another lead's transaction and no lock is held
//! across an HTTP call.
//!
//! Every cap period (a rule's day, month or source; a global rule's day or
//! month; a global cap's day or month from its start day; a phone's SMS
//! window) is one entry of the shared table: `used` (committed or spent)
//! and `reserved` (taken by a transaction still open). A lead takes a slot
//! when `used + reserved` is below the limit and writes one `iclear.cap_use`
//! row in its own transaction. When the transaction commits the slot moves
//! to `used`; when it rolls back the slot is given back, unless it paid for
//! a request that was sent (see `spent.rs`): the vendor billed it, so it
//! stays counted.
//!
//! After a restart or a crash each entry is loaded again from what is
//! durable, the committed `cap_use` rows plus the spent requests of
//! rolled-back leads not yet reconciled.

pub use super::cap_key::{period_of, Cap, CapKey, Period, Scope, NO_SOURCE};
use super::cap_table::{attached, table, ENTRIES};
use super::{query_value, INT8, INT8_ARRAY, TEXT, TEXT_ARRAY};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

thread_local! {
    static RESERVED: RefCell<Vec<Reservation>> = const { RefCell::new(Vec::new()) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

/// A slot this backend's open transaction holds.
struct Reservation {
    index: usize,
    key: CapKey,
    subxact: pg_sys::SubTransactionId,
    /// Its request was sent: kept counted even if the transaction rolls back.
    sent: bool,
    /// Which take it belongs to (`mark_sent` marks a whole take).
    take: u64,
}

thread_local! {
    static TAKES: Cell<u64> = const { Cell::new(0) };
}

/// Take one slot of every cap in `caps`, or none: Ok(Some(cap)) names a
/// full cap (nothing taken), Ok(None) means every slot is held until this
/// (sub)transaction ends, and `take_id` then names them for `mark_sent`.
/// The slots are written to `iclear.cap_use` in the caller's transaction.
pub fn take(caps: &[Cap]) -> (Option<Cap>, u64) {
    if caps.is_empty() {
        return (None, 0);
    }
    register_callbacks();
    let t = table();
    let take_id = TAKES.get() + 1;
    TAKES.set(take_id);
    let mut loaded: Vec<(usize, i64)> = Vec::new(); // (index into caps, durable count)
    let mut sweeps_at_load = 0u64;
    loop {
        let g = t.lock();
        if !loaded.is_empty() && g.header().sweeps.load(Ordering::Relaxed) != sweeps_at_load {
            loaded.clear(); // loaded before a sweep: load again
        }
        let mut missing = Vec::new();
        let mut indexes = Vec::with_capacity(caps.len());
        for (n, cap) in caps.iter().enumerate() {
            match g.find(&cap.key) {
                Some(i) => indexes.push(i),
                None => match loaded.iter().find(|(m, _)| *m == n) {
                    Some((_, used)) => match g.insert(cap, *used) {
                        Some(i) => indexes.push(i),
                        None => {
                            drop(g);
                            crate::errors::Error::Internal(format!(
                                "iclear: the shared cap table is full ({ENTRIES} cap periods in use at once)"
                            ))
                            .raise();
                        }
                    },
                    None => missing.push(n),
                },
            }
        }
        if !missing.is_empty() {
            sweeps_at_load = g.header().sweeps.load(Ordering::Relaxed);
            drop(g);
            // nobody holds a slot of an entry that is not in the table, so
            // its durable count cannot move while it is read
            loaded = missing
                .into_iter()
                .map(|n| (n, durable_count(&caps[n].key)))
                .collect();
            continue;
        }
        if let Some(n) = (0..caps.len()).find(|&n| {
            let e = g.entry(indexes[n]);
            e.used + e.reserved >= caps[n].limit
        }) {
            return (Some(caps[n]), 0);
        }
        let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
        RESERVED.with_borrow_mut(|r| {
            for (n, &i) in indexes.iter().enumerate() {
                g.entry(i).reserved += 1;
                r.push(Reservation {
                    index: i,
                    key: caps[n].key,
                    subxact,
                    sent: false,
                    take: take_id,
                });
            }
        });
        break;
    }
    // a 0.4.0 schema (until ALTER EXTENSION UPDATE) has no cap_use: its
    // slots are counted in shared memory only
    if super::config::schema_at_least(5) {
        let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
        UNWRITTEN.with_borrow_mut(|u| u.extend(caps.iter().map(|c| (c.key, subxact))));
    }
    (None, take_id)
}

thread_local! {
    /// Slots taken and not yet written to `cap_use`: the lead's decision
    /// statement writes them (`persist::save`), one statement less per lead.
    static UNWRITTEN: RefCell<Vec<(CapKey, pg_sys::SubTransactionId)>> = const { RefCell::new(Vec::new()) };
}

/// The `cap_use` rows of the slots taken since the last call, as the four
/// array parameters (scope, ref_id, period, bucket) of an
/// `INSERT INTO iclear.cap_use ... SELECT * FROM unnest(..)`.
fn unwritten_rows() -> [DatumWithOid<'static>; 4] {
    let rows = take_unwritten();
    [
        rows.iter().map(|r| r.0).collect::<Vec<_>>().into(),
        rows.iter().map(|r| r.1).collect::<Vec<_>>().into(),
        rows.iter().map(|r| r.2).collect::<Vec<_>>().into(),
        rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>().into(),
    ]
}

/// The unwritten rows as `cap_use` columns (scope, ref_id, period, bucket);
/// they count as written from now on.
pub fn take_unwritten() -> Vec<(&'static str, i64, &'static str, String)> {
    UNWRITTEN
        .with_borrow_mut(std::mem::take)
        .iter()
        .map(|(k, _)| (k.scope.name(), k.ref_id, k.period.name(), k.bucket_text()))
        .collect()
}

/// Write them in a statement of their own (paths without a decision row).
pub fn write_unwritten() {
    if UNWRITTEN.with_borrow(Vec::is_empty) {
        return;
    }
    super::exec(
        "INSERT INTO iclear.cap_use (scope, ref_id, period, bucket)
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[])",
        &[TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
        &unwritten_rows(),
    );
}

/// The slots of take `take_id` paid for a request that is about to be sent:
/// they stay counted whatever becomes of the transaction.
pub fn mark_sent(take_id: u64) -> Vec<CapKey> {
    RESERVED.with_borrow_mut(|r| {
        r.iter_mut()
            .filter(|x| x.take == take_id)
            .map(|x| {
                x.sent = true;
                x.key
            })
            .collect()
    })
}

/// The slots of `cap` used or held now (its durable count when no backend
/// has loaded it).
pub fn held(cap: &Cap) -> i64 {
    let t = table();
    {
        let g = t.lock();
        if let Some(i) = g.find(&cap.key) {
            let e = g.entry(i);
            return e.used + e.reserved;
        }
    }
    durable_count(&cap.key)
}

/// The slots of take `take_id` stay counted whatever becomes of the
/// transaction, without a request to reconcile: a wrong SMS code tried
/// counts even when the caller rolls back (its `cap_use` row is durable
/// only if the caller commits; shared memory holds it until a restart).
pub fn keep(take_id: u64) {
    mark_sent(take_id);
}

/// What is durable of a cap period: its committed `cap_use` rows plus the
/// sent requests of rolled-back leads not yet reconciled, in one snapshot
/// taken now (whatever the caller's isolation level).
fn durable_count(k: &CapKey) -> i64 {
    if !super::config::schema_at_least(5) {
        return legacy_count(k);
    }
    let spent = super::spent::ended_for(k);
    super::latest(|| {
        query_value::<i64>(
            "SELECT (coalesce((SELECT sum(used) FROM iclear.cap_use
                                WHERE scope = $1 AND ref_id = $2 AND period = $3 AND bucket = $4), 0)
                   + (SELECT count(*) FROM unnest($5::text[]) AS f(id)
                       WHERE NOT EXISTS (SELECT 1 FROM iclear.sent_mark m WHERE m.id = f.id)
                         AND NOT EXISTS (SELECT 1 FROM iclear.spent_request s WHERE s.id = f.id)))::int8",
            &[TEXT, INT8, TEXT, TEXT, TEXT_ARRAY],
            &[
                k.scope.name().into(),
                k.ref_id.into(),
                k.period.name().into(),
                k.bucket_text().as_str().into(),
                spent.into(),
            ],
        )
    })
    .unwrap_or(0)
}

/// The count of a 0.4.0 schema's tables (until ALTER EXTENSION UPDATE,
/// which moves them into `cap_use`). Slots taken meanwhile live in shared
/// memory only.
fn legacy_count(k: &CapKey) -> i64 {
    let key = match k.period {
        Period::Monthly => k.bucket_text()[..7].to_string(),
        _ => k.bucket_text(),
    };
    let args = [k.ref_id.into(), k.period.name().into(), key.as_str().into()];
    match k.scope {
        Scope::Rule => query_value::<i64>(
            "SELECT used FROM iclear.rule_cap_usage WHERE rule_id = $1 AND period = $2 AND period_key = $3",
            &[INT8, TEXT, TEXT],
            &args,
        ),
        Scope::GlobalRule => query_value::<i64>(
            "SELECT used FROM iclear.global_rule_cap_usage
              WHERE global_rule_id = $1 AND period = $2 AND period_key = $3",
            &[INT8, TEXT, TEXT],
            &args,
        ),
        Scope::Global => query_value::<i64>(
            "SELECT current_value FROM iclear.global_cap
              WHERE id = $1 AND to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') = $2",
            &[INT8, TEXT],
            &[k.ref_id.into(), k.bucket_text().as_str().into()],
        ),
        Scope::Phone => None,
    }
    .unwrap_or(0)
}

pub(super) fn register_callbacks() {
    if CALLBACKS.get() {
        return;
    }
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
    CALLBACKS.set(true);
}

/// Settle reservations: committed ones (and sent ones) become `used`, the
/// others are given back.
fn settle(which: impl Fn(&Reservation) -> bool, committed: bool) {
    let Some(t) = attached() else { return };
    RESERVED.with_borrow_mut(|r| {
        if r.is_empty() {
            return;
        }
        let g = t.lock();
        r.retain(|x| {
            if !which(x) {
                return true;
            }
            let e = g.entry(x.index);
            if e.is(&x.key) {
                e.reserved -= 1;
                if committed || x.sent {
                    e.used += 1;
                }
            }
            false
        });
    });
}

unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT | XACT_EVENT_PREPARE => {
            settle(|_| true, true)
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => settle(|_| true, false),
        _ => {}
    }
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        // every path that takes slots writes them with its rows; none are
        // left at commit (and at a rollback they are given back)
        UNWRITTEN.with_borrow_mut(Vec::clear);
    }
}

unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_ABORT_SUB => {
            settle(|x| x.subxact == my_subid, false);
            UNWRITTEN.with_borrow_mut(|u| u.retain(|(_, s)| *s != my_subid));
        }
        SUBXACT_EVENT_COMMIT_SUB => {
            RESERVED.with_borrow_mut(|r| {
                for x in r.iter_mut().filter(|x| x.subxact == my_subid) {
                    x.subxact = parent_subid;
                }
            });
            UNWRITTEN.with_borrow_mut(|u| {
                for x in u.iter_mut().filter(|(_, s)| *s == my_subid) {
                    x.1 = parent_subid;
                }
            });
        }
        _ => {}
    }
}
