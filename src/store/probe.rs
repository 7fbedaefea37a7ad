//! Reads by index equality without SPI, for the lookups every lead makes:
//! list membership and a counter's value. A prepared statement pays SPI's
//! connect, a plan check and an executor start-up on every run, which cost
//! more than the index probe itself (`make bench`, docs/performance.md).
//! A probe reads what the statement it replaces read: the same index, the
//! same snapshot, and only when the current user may read the table (else
//! the caller runs the statement, which raises PostgreSQL's own error).

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{FromDatum, IntoDatum};
use std::ffi::CStr;

/// Which snapshot a probe reads with.
#[derive(Clone, Copy)]
pub enum Snap {
    /// As a statement run through SPI would: after this transaction's own
    /// writes so far, with the transaction's snapshot (in READ COMMITTED,
    /// one taken now).
    Statement,
    /// Taken now, whatever the isolation level (`store::latest`).
    Latest,
}

/// A table of the iclear schema and one of its indexes.
pub struct Target {
    table: Oid,
    index: Oid,
}

/// The table and index, when both exist and the current user may read the
/// table. Catalog cache lookups only: cheap enough for every lead, and never
/// stale after the extension is dropped and created again.
pub fn target(table: &CStr, index: &CStr) -> Option<Target> {
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"iclear".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return None;
        }
        let table = pg_sys::get_relname_relid(table.as_ptr(), schema);
        let index = pg_sys::get_relname_relid(index.as_ptr(), schema);
        if table == pg_sys::InvalidOid || index == pg_sys::InvalidOid {
            return None;
        }
        let readable = pg_sys::pg_class_aclcheck(table, pg_sys::GetUserId(), pg_sys::ACL_SELECT)
            == pg_sys::AclResult::ACLCHECK_OK;
        readable.then_some(Target { table, index })
    }
}

/// A text key for a probe (palloc'd in the current memory context).
pub fn text_datum(s: &str) -> Datum {
    s.into_datum().expect("a str is never NULL")
}

/// The number of the column `name` of the target's table.
pub fn column(t: &Target, name: &CStr) -> i16 {
    unsafe { pg_sys::get_attnum(t.table, name.as_ptr()) }
}

/// Run `f`'s probes with one snapshot, so that probes of two tables read
/// them as of one moment, as one statement would: a counter's total and its
/// increments, read on either side of the worker folding the one into the
/// other, would otherwise miss the folded increments. Should an ERROR end
/// the transaction first, it pops the snapshot.
pub fn with_snapshot<R>(snap: Snap, f: impl FnOnce() -> R) -> R {
    unsafe {
        match snap {
            Snap::Statement => {
                pg_sys::CommandCounterIncrement();
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            Snap::Latest => pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()),
        }
    }
    let r = f();
    unsafe { pg_sys::PopActiveSnapshot() };
    r
}

/// Rescan `scan` of `index` for the rows whose leading columns equal `keys`.
unsafe fn rescan(scan: pg_sys::IndexScanDesc, index: pg_sys::Relation, keys: &[(u32, Datum)]) {
    let mut scankeys: Vec<pg_sys::ScanKeyData> = vec![std::mem::zeroed(); keys.len()];
    for (i, (eq, datum)) in keys.iter().enumerate() {
        pg_sys::ScanKeyEntryInitialize(
            &mut scankeys[i],
            0,
            (i + 1) as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::InvalidOid,
            *(*index).rd_indcollation.add(i),
            Oid::from(*eq),
            *datum,
        );
    }
    // the access method copies the keys
    pg_sys::index_rescan(
        scan,
        scankeys.as_mut_ptr(),
        keys.len() as i32,
        std::ptr::null_mut(),
        0,
    );
}

/// What a dirty snapshot finds under a key: rows committed, and rows that
/// open transactions are inserting or deleting (updating).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Found {
    Nothing,
    /// A row, none of them being written by another open transaction
    /// (committed, or this transaction's own).
    Settled,
    /// A row another open transaction is inserting, updating or deleting:
    /// a write of the same key now would wait for that transaction to end.
    BeingWritten,
}

/// Look `keys` up in `t`'s index with a dirty snapshot, as a unique index
/// check does, but never waiting.
pub fn dirty(t: &Target, keys: &[(u32, Datum)]) -> Found {
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let heap = pg_sys::table_open(t.table, lock);
        let index = pg_sys::index_open(t.index, lock);
        // InitDirtySnapshot: each fetch sets xmin (xmax) to an open
        // transaction inserting (deleting) the row it returns
        let mut snap: pg_sys::SnapshotData = std::mem::zeroed();
        snap.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let scan = pg_sys::index_beginscan(heap, index, &mut snap, keys.len() as i32, 0);
        let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
        rescan(scan, index, keys);
        let mut found = Found::Nothing;
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if snap.xmin != pg_sys::InvalidTransactionId
                || snap.xmax != pg_sys::InvalidTransactionId
            {
                found = Found::BeingWritten;
                break;
            }
            found = Found::Settled;
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
}

/// An open index scan, reading with the active snapshot (`with_snapshot`).
/// Closed by `close`; should an ERROR end the transaction first, its
/// resource owner releases the scan and the relations.
pub struct Probe {
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    slot: *mut pg_sys::TupleTableSlot,
    nkeys: usize,
}

impl Probe {
    /// Open a scan of `t`'s index on its first `nkeys` columns.
    pub fn open(t: &Target, nkeys: usize) -> Probe {
        unsafe {
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            let heap = pg_sys::table_open(t.table, lock);
            let index = pg_sys::index_open(t.index, lock);
            let scan =
                pg_sys::index_beginscan(heap, index, pg_sys::GetActiveSnapshot(), nkeys as i32, 0);
            let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
            Probe {
                heap,
                index,
                scan,
                slot,
                nkeys,
            }
        }
    }

    /// Position the scan on the rows whose leading index columns equal
    /// `keys`, each given with its type's equality function (`F_INT8EQ`,
    /// `F_TEXTEQ`). Text compares under the index's collation, as the
    /// statement's `=` would.
    pub fn seek(&mut self, keys: &[(u32, Datum)]) {
        assert_eq!(keys.len(), self.nkeys, "one datum per key column");
        unsafe { rescan(self.scan, self.index, keys) }
    }

    /// The next visible row, if any.
    pub fn next(&mut self) -> bool {
        unsafe {
            pg_sys::index_getnext_slot(
                self.scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                self.slot,
            )
        }
    }

    /// Column `attnum` of the current row.
    pub fn get<T: FromDatum>(&self, attnum: i16) -> Option<T> {
        unsafe {
            let mut null = false;
            let d = pg_sys::slot_getattr(self.slot, attnum.into(), &mut null);
            T::from_datum(d, null)
        }
    }

    pub fn close(self) {
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::index_endscan(self.scan);
            // locks are kept to the end of the transaction, as a statement's
            pg_sys::index_close(self.index, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(self.heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}
