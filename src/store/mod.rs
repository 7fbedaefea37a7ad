//! Everything that talks to Postgres (SPI). The store loads, counts and
//! persists; it never decides.
//!
//! Statements on a lead's path are prepared once per backend and kept
//! (`SPI_keepplan`): parsing and planning them for every lead cost more than
//! running them. They are prepared for a generic plan, which the plan cache
//! revalidates after DDL: left to choose, it would plan again on every call
//! a statement whose parameters are arrays (a custom plan sees their length
//! and always looks cheaper).

pub mod backtest;
pub mod cap_key;
pub mod cap_limits;
pub mod cap_table;
pub mod caps;
pub mod config;
pub mod facts;
pub mod history;
pub mod jobs;
pub mod local_time;
pub mod paused;
pub mod persist;
pub mod probe;
pub mod spent;
pub mod taken_keys;
pub mod verification;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgBuiltInOids};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

pub const INT8: PgBuiltInOids = PgBuiltInOids::INT8OID;
pub const TEXT: PgBuiltInOids = PgBuiltInOids::TEXTOID;
pub const JSON: PgBuiltInOids = PgBuiltInOids::JSONOID;
pub const INT8_ARRAY: PgBuiltInOids = PgBuiltInOids::INT8ARRAYOID;
pub const TEXT_ARRAY: PgBuiltInOids = PgBuiltInOids::TEXTARRAYOID;
pub const JSON_ARRAY: PgBuiltInOids = PgBuiltInOids::JSONARRAYOID;

/// serde_json's output as a `json` datum. A json value is stored as its
/// text, so handing over text that serde_json wrote skips json_in's re-parse
/// (the text is valid JSON by construction).
pub fn json_datum(text: String) -> DatumWithOid<'static> {
    unsafe { DatumWithOid::new(text, pg_sys::BuiltinOid::JSONOID.value()) }
}

/// A kept SPI plan; it lives as long as the backend.
#[derive(Clone, Copy)]
struct Plan(pg_sys::SPIPlanPtr);

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Plan>> = RefCell::new(HashMap::new());
    /// Set by `latest`: statements read with a snapshot taken now.
    static LATEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`'s statements (reads only) with a snapshot taken as each starts,
/// whatever the transaction's isolation level: what other transactions have
/// committed by now (and this one's own writes). Caps and counters are read
/// this way: a REPEATABLE READ snapshot, or a long statement's, would miss
/// slots and increments committed since.
pub fn latest<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LATEST.set(self.0);
        }
    }
    let _restore = Restore(LATEST.replace(true));
    f()
}

fn plan(sql: &'static str, types: &[PgBuiltInOids]) -> Plan {
    if let Some(p) = PLANS.with_borrow(|m| m.get(sql).copied()) {
        return p;
    }
    let mut oids: Vec<pg_sys::Oid> = types.iter().map(|t| t.value()).collect();
    let text = CString::new(sql).expect("statements have no NUL");
    let p = Spi::connect(|_| unsafe {
        let p = pg_sys::SPI_prepare_cursor(
            text.as_ptr(),
            oids.len() as i32,
            oids.as_mut_ptr(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        );
        if p.is_null() || pg_sys::SPI_keepplan(p) != 0 {
            let code = pg_sys::SPI_result;
            crate::errors::Error::Internal(format!(
                "iclear: cannot prepare {sql:?}: SPI error {code}"
            ))
            .raise();
        }
        Plan(p)
    });
    PLANS.with_borrow_mut(|m| m.insert(sql, p));
    p
}

/// Execute `sql` (SPI connected) for at most `limit` rows (0: all).
unsafe fn execute(sql: &'static str, types: &[PgBuiltInOids], args: &[DatumWithOid], limit: i64) {
    let p = plan(sql, types);
    let (mut values, mut nulls): (Vec<pg_sys::Datum>, Vec<std::ffi::c_char>) = args
        .iter()
        .map(|a| match a.datum() {
            Some(d) => (d.sans_lifetime(), b' ' as std::ffi::c_char),
            None => (pg_sys::Datum::from(0usize), b'n' as std::ffi::c_char),
        })
        .unzip();
    let rc = if LATEST.get() {
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        let rc =
            pg_sys::SPI_execute_plan(p.0, values.as_mut_ptr(), nulls.as_mut_ptr(), true, limit);
        pg_sys::PopActiveSnapshot();
        rc
    } else {
        pg_sys::SPI_execute_plan(p.0, values.as_mut_ptr(), nulls.as_mut_ptr(), false, limit)
    };
    if rc < 0 {
        crate::errors::Error::Internal(format!("iclear: SPI failure {rc} running {sql:?}")).raise();
    }
}

/// Column `col` (1-based) of the first result row, if any.
unsafe fn first_row_value<T: FromDatum>(col: i32) -> Option<T> {
    let table = pg_sys::SPI_tuptable;
    if table.is_null() || pg_sys::SPI_processed == 0 {
        return None;
    }
    let desc = (*table).tupdesc;
    let mut null = false;
    let d = pg_sys::SPI_getbinval(*(*table).vals, desc, col, &mut null);
    T::from_polymorphic_datum(d, null, pg_sys::SPI_gettypeid(desc, col))
}

/// Run a prepared statement for its effect. `types` are the parameter types.
pub fn exec(sql: &'static str, types: &[PgBuiltInOids], args: &[DatumWithOid]) {
    Spi::connect_mut(|_| unsafe { execute(sql, types, args, 0) });
}

/// First column of the first row of a prepared statement (None: no row or NULL).
pub fn query_value<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid],
) -> Option<T> {
    Spi::connect_mut(|_| unsafe {
        execute(sql, types, args, 1);
        first_row_value::<T>(1)
    })
}

/// Every column of the first row of a prepared statement.
pub fn columns<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid],
) -> Vec<Option<T>> {
    Spi::connect_mut(|_| unsafe {
        execute(sql, types, args, 1);
        let table = pg_sys::SPI_tuptable;
        let n = if table.is_null() {
            0
        } else {
            (*(*table).tupdesc).natts
        };
        (1..=n).map(|col| first_row_value::<T>(col)).collect()
    })
}

/// First two columns of the first row of a prepared statement.
pub fn query_pair<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &'static str,
) -> (Option<A>, Option<B>) {
    Spi::connect_mut(|_| unsafe {
        execute(sql, &[], &[], 1);
        (first_row_value::<A>(1), first_row_value::<B>(2))
    })
}

/// Advisory-lock classes (the first key of `pg_try_advisory_xact_lock`).
pub const LOCK_COUNTER: i32 = 0x6963_0001;
pub const LOCK_LIST_ENTRY: i32 = 0x6963_0002;
pub const LOCK_CACHE: i32 = 0x6963_0003;
pub const LOCK_SOURCE: i32 = 0x6963_0004;
/// Held in share mode by every transaction past its budget of key locks
/// (`bulk_writers_open`); `taken_keys::LOCK_ROW_KEY` is 0x6963_0005.
const LOCK_BULK: i32 = 0x6963_0006;

fn lock_key(parts: &[&str]) -> i32 {
    // FNV-1a: a collision only makes two unrelated keys share a lock
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h as i32
}

thread_local! {
    /// (local transaction id, key locks this transaction took).
    static KEY_LOCKS: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    /// (local transaction id, key locks taken past the budget with the
    /// subtransaction that took each, held until the lead that took them
    /// ends: `end_lead`).
    static LEAD_LOCKS: std::cell::RefCell<(u32, Vec<(pg_sys::LOCKTAG, pg_sys::SubTransactionId)>)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

/// The key locks this transaction has kept (`try_xact_lock`).
fn keys_kept(lxid: u32) -> u32 {
    let (seen, taken) = KEY_LOCKS.get();
    if seen == lxid {
        taken
    } else {
        0
    }
}

fn budget_spent(kept: u32) -> bool {
    kept >= unsafe { pg_sys::max_locks_per_xact }.max(1) as u32
}

/// Has this transaction taken its budget of key locks (`try_xact_lock`)?
pub fn key_budget_spent() -> bool {
    budget_spent(keys_kept(unsafe { (*pg_sys::MyProc).lxid }))
}

/// pg_try_advisory_xact_lock(class, key)'s tag.
fn advisory_tag(class: i32, key: i32) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId.to_u32() },
        locktag_field2: class as u32,
        locktag_field3: key as u32,
        locktag_field4: 2,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: USER_LOCKMETHOD,
    }
}

const EXCLUSIVE: pg_sys::LOCKMODE = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
const SHARE: pg_sys::LOCKMODE = pg_sys::ShareLock as pg_sys::LOCKMODE;

/// Take the advisory lock of `(class, parts)` if it is free; never waits.
/// True: taken. False: another open transaction holds it.
///
/// Every lead of a multi-row INSERT or COPY takes its own key locks, and
/// each lives in PostgreSQL's shared lock table until the transaction ends:
/// 20,000 leads in one statement would fill it, and the rest of the rows
/// would end `error` ("out of shared memory"). So a transaction keeps at most
/// `max_locks_per_transaction` of them until it ends. Past that budget a
/// key is held by the lead that takes it, until that lead ends
/// (`end_lead`), and the transaction holds the bulk lock in share mode:
/// a reader of a counter that finds it taken waits for the increments of
/// open transactions that hold no lock any more (`bulk_writers_open`,
/// docs/guide/caps-and-counters.md "Bulk loads").
pub fn try_xact_lock(class: i32, parts: &[&str]) -> bool {
    unsafe {
        let lxid = (*pg_sys::MyProc).lxid;
        let tag = advisory_tag(class, lock_key(parts));
        let taken = keys_kept(lxid);
        if budget_spent(taken) {
            let bulk = advisory_tag(LOCK_BULK, 0);
            if !pg_sys::LockHeldByMe(&bulk, SHARE) {
                // waits only for a reader's instant in exclusive mode
                pg_sys::LockAcquire(&bulk, SHARE, false, false);
            }
            let got = pg_sys::LockAcquire(&tag, EXCLUSIVE, false, true);
            if got == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
                return false;
            }
            LEAD_LOCKS.with_borrow_mut(|(seen, tags)| {
                if *seen != lxid {
                    *seen = lxid;
                    tags.clear();
                }
                tags.push((tag, pg_sys::GetCurrentSubTransactionId()));
            });
            return true;
        }
        let got = pg_sys::LockAcquire(&tag, EXCLUSIVE, false, true);
        let fresh = u32::from(got == pg_sys::LockAcquireResult::LOCKACQUIRE_OK);
        KEY_LOCKS.set((lxid, taken + fresh));
        got != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}

/// The lead ends: release the key locks it took past its transaction's
/// budget. Its writes are made by then; until it commits, a reader finds
/// them with a dirty look-up (`bulk_writers_open`). A lock an aborted
/// subtransaction already released is not released again, nor one taken
/// in another subtransaction (its resource owner is not the current one,
/// and PostgreSQL would refuse it): that one is held until the transaction
/// ends, as within the budget.
pub fn end_lead() {
    let current = unsafe { (*pg_sys::MyProc).lxid };
    let tags = LEAD_LOCKS.with_borrow_mut(|(seen, tags)| {
        let tags = std::mem::take(tags);
        if *seen == current {
            tags
        } else {
            Vec::new()
        }
    });
    let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
    for (tag, taken_in) in tags {
        unsafe {
            if taken_in == sub && pg_sys::LockHeldByMe(&tag, EXCLUSIVE) {
                pg_sys::LockRelease(&tag, EXCLUSIVE, false);
            }
        }
    }
}

/// Is another open transaction past its budget of key locks, so that it
/// may have written a key it no longer holds? One look at the bulk lock,
/// which such transactions hold in share mode: taken here in exclusive
/// mode, it is given back at once.
pub fn bulk_writers_open() -> bool {
    let bulk = advisory_tag(LOCK_BULK, 0);
    unsafe {
        match pg_sys::LockAcquire(&bulk, EXCLUSIVE, false, true) {
            pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL => true,
            _ => {
                pg_sys::LockRelease(&bulk, EXCLUSIVE, false);
                false
            }
        }
    }
}

/// Does another open transaction write the key `keys` of `index` (of
/// iclear's `table`) now, or (`present_too`) is a row there already? Asked
/// after `try_xact_lock` and just before a write of the key, which would
/// wait for that transaction (`ON CONFLICT`, a row update): the caller
/// leaves the key to it instead, as when it holds the key's lock.
///
/// The lock alone kept two writers of a key apart only while both took it;
/// past its budget (above) a transaction writes unlocked, and two that
/// wrote the same keys in opposite orders waited for each other until
/// PostgreSQL ended one with "deadlock detected". With this check a writer
/// only ever waits for a row that appeared after it looked, which its own
/// earlier writes preceded: no cycle of such waits can close.
pub fn written_elsewhere(
    table: &std::ffi::CStr,
    index: &std::ffi::CStr,
    keys: &[(u32, pg_sys::Datum)],
    present_too: bool,
) -> bool {
    // a table this role may not read: the lock decides, as before
    let Some(t) = probe::target(table, index) else {
        return false;
    };
    match probe::dirty(&t, keys) {
        probe::Found::Nothing => false,
        probe::Found::Settled => present_too,
        probe::Found::BeingWritten => true,
    }
}

/// The lock method of advisory locks (lock.h).
const USER_LOCKMETHOD: u8 = 2;

/// Take it, waiting up to `wait_ms` for the transaction that holds it to
/// end (polled, so two leads waiting on each other never deadlock: the
/// wait runs out instead). False: not taken.
pub fn wait_xact_lock(class: i32, parts: &[&str], wait_ms: u64) -> bool {
    poll(std::time::Duration::from_millis(wait_ms), || {
        try_xact_lock(class, parts)
    })
}

/// Ask `done` until it says yes or `wait` has passed, napping 1 to 10 ms
/// between asks (and answering a cancel); its last answer.
pub fn poll(wait: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    let mut nap = 1u64;
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= wait {
            return false;
        }
        unsafe { pg_sys::pg_usleep((nap * 1000) as std::ffi::c_long) };
        pgrx::check_for_interrupts!();
        nap = (nap * 2).min(10);
    }
}

/// Is this error the session being told to stop (query cancel,
/// `statement_timeout`, `lock_timeout`, shutdown) rather than a failure of
/// the work? Those are never caught: the statement must end (review
/// finding 6).
fn interrupts(e: &pg_sys::panic::CaughtError) -> bool {
    use pg_sys::panic::CaughtError;
    let r = match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    let code = r.sql_error_code();
    // SQLSTATE class 57, "operator intervention": the first two characters
    // are the low 12 bits (ERRCODE_TO_CATEGORY)
    let class = code as isize & 0xfff;
    // raised here, by this backend's interrupt handling: a remote server's
    // statement_timeout that postgres_fdw reports with the same SQLSTATE is
    // a failure of the hub, answered as no response
    (class == PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION as isize
        || code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE)
        && r.function_name() == Some("ProcessInterrupts")
}

/// Run `f` in a subtransaction: an ERROR inside (a postgres_fdw hub that is
/// down, say) rolls back only what `f` did and comes back as its message,
/// so the lead's transaction goes on. A cancellation is re-raised.
pub fn guarded<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    subtransaction(f, true)
}

/// Run `f` in a subtransaction that is always rolled back: what it wrote is
/// gone, what it read or computed comes back (an ERROR as its message). A
/// cancellation is re-raised.
pub fn rolled_back<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    subtransaction(f, false)
}

/// Run `f` like `guarded`, again (at most `tries` times in all) when its
/// subtransaction loses a deadlock or a serialization conflict: the other
/// transaction goes on once this one's locks are released, so the next
/// try usually passes (review 0.5 finding 7: during `ALTER EXTENSION
/// UPDATE` under load, leads were recorded `error` "deadlock detected").
pub fn guarded_retrying<R>(tries: u32, f: impl Fn() -> R) -> Result<R, String> {
    let mut left = tries.max(1);
    loop {
        left -= 1;
        match subtransaction_coded(std::panic::AssertUnwindSafe(&f), true) {
            Ok(r) => return Ok(r),
            Err((code, _))
                if left > 0
                    && matches!(
                        code,
                        PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED
                            | PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
                    ) => {}
            Err((_, message)) => return Err(message),
        }
    }
}

/// Run `f` in a subtransaction, released (`keep`) or rolled back after it.
fn subtransaction<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
    keep: bool,
) -> Result<R, String> {
    subtransaction_coded(f, keep).map_err(|(_, m)| m)
}

/// `subtransaction`, with the SQLSTATE of the error it came back with.
fn subtransaction_coded<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
    keep: bool,
) -> Result<R, (PgSqlErrorCode, String)> {
    use pgrx::pg_sys;
    unsafe {
        let ctx = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
        PgTryBuilder::new(move || {
            let r = f();
            if keep {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            Ok(r)
        })
        .catch_others(move |e| {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            if interrupts(&e) {
                e.rethrow()
            }
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    (r.sql_error_code(), r.message().to_string())
                }
            })
        })
        .execute()
    }
}
