//! The shared table of cap periods: a dynamic shared memory segment that
//! the first backend to need it creates and pins (its handle is kept in
//! `$PGDATA/pg_iclear/caps.handle`), so it works with or without
//! `shared_preload_libraries` and dies with the postmaster. Each entry holds
//! one cap period's `used` and `reserved` slots under a spinlock held for a
//! few memory operations. It holds the memory and its lock only: what a
//! slot means, and when it is taken or given back, is `caps.rs`.

use super::cap_key::{Cap, CapKey, Period, Scope};
use chrono::Utc;
use pgrx::pg_sys;
use std::cell::Cell;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x6963_6c65_6172_6331; // "iclearc1"
/// Entries in the shared table (about 48 bytes each). Entries of ended
/// periods and idle per-source entries are dropped when it fills up.
pub(super) const ENTRIES: usize = 16_384;
const EMPTY: u32 = 0;
const LIVE: u32 = 1;
const TOMBSTONE: u32 = 2;

#[repr(C)]
pub(super) struct Header {
    magic: u64,
    nonce: u64,
    lock: AtomicU32,
    live: u32,
    /// Bumped by every sweep: a value loaded before a sweep may be stale.
    pub(super) sweeps: AtomicU64,
}

#[repr(C)]
pub(super) struct Entry {
    state: u32,
    scope: u8,
    period: u8,
    _pad: [u8; 2],
    /// The database whose iclear owns it: rule ids repeat across databases.
    db: u32,
    ref_id: i64,
    bucket: i64,
    pub(super) used: i64,
    pub(super) reserved: i64,
    ends: i64,
}

impl Entry {
    pub(super) fn is(&self, k: &CapKey) -> bool {
        self.state == LIVE
            && self.db == database()
            && self.ref_id == k.ref_id
            && self.bucket == k.bucket
            && self.scope == k.scope as u8
            && self.period == k.period as u8
    }
}

const SEGMENT_SIZE: usize = std::mem::size_of::<Header>() + ENTRIES * std::mem::size_of::<Entry>();

pub(super) struct Table {
    header: *mut Header,
    entries: *mut Entry,
}

/// Held while the table is read or changed: a few memory operations, never
/// an allocation, an error or a call into Postgres.
pub(super) struct Guard<'t>(&'t Table);

impl Table {
    pub(super) fn lock(&self) -> Guard<'_> {
        let lock = unsafe { &(*self.header).lock };
        let mut spins = 0u32;
        while lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Guard(self)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        unsafe { &(*self.0.header).lock }.store(0, Ordering::Release);
    }
}

/// This backend's database.
fn database() -> u32 {
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn hash(k: &CapKey) -> usize {
    let mut h = (k.ref_id as u64 ^ u64::from(database()) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= (k.bucket as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= ((k.scope as u64) << 8 | k.period as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    (h ^ (h >> 29)) as usize % ENTRIES
}

// The guard is the table's spinlock: while it is held this backend is the
// only one reading or writing the shared memory behind these references.
#[allow(clippy::mut_from_ref)]
impl Guard<'_> {
    pub(super) fn entry(&self, i: usize) -> &mut Entry {
        unsafe { &mut *self.0.entries.add(i) }
    }

    pub(super) fn header(&self) -> &mut Header {
        unsafe { &mut *self.0.header }
    }

    pub(super) fn find(&self, k: &CapKey) -> Option<usize> {
        let start = hash(k);
        for n in 0..ENTRIES {
            let i = (start + n) % ENTRIES;
            let e = self.entry(i);
            if e.state == EMPTY {
                return None;
            }
            if e.is(k) {
                return Some(i);
            }
        }
        None
    }

    pub(super) fn insert(&self, cap: &Cap, used: i64) -> Option<usize> {
        if self.header().live as usize * 4 >= ENTRIES * 3 {
            self.sweep();
        }
        let start = hash(&cap.key);
        for n in 0..ENTRIES {
            let i = (start + n) % ENTRIES;
            let e = self.entry(i);
            if e.state != LIVE {
                *e = Entry {
                    state: LIVE,
                    scope: cap.key.scope as u8,
                    period: cap.key.period as u8,
                    _pad: [0; 2],
                    db: database(),
                    ref_id: cap.key.ref_id,
                    bucket: cap.key.bucket,
                    used,
                    reserved: 0,
                    ends: cap.ends,
                };
                self.header().live += 1;
                return Some(i);
            }
        }
        None
    }

    /// Drop idle entries whose period has ended, and idle per-source entries
    /// (their count is durable and is loaded again when needed).
    fn sweep(&self) {
        let now = Utc::now().timestamp();
        for i in 0..ENTRIES {
            let e = self.entry(i);
            let ended = e.ends != 0 && e.ends <= now;
            // (a phone's window: its sent codes are durable; a wrong code
            // kept after a rollback is lost only when the table is this full)
            let source = e.period == Period::Source as u8 || e.scope == Scope::Phone as u8;
            if e.state == LIVE && e.reserved == 0 && (ended || source) {
                e.state = TOMBSTONE;
                self.header().live -= 1;
            }
        }
        self.header().sweeps.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    static TABLE: Cell<Option<(*mut Header, *mut Entry)>> = const { Cell::new(None) };
}

const DIR: &str = "pg_iclear";
const HANDLE_FILE: &str = "pg_iclear/caps.handle";
const LOCK_FILE: &str = "pg_iclear/caps.lock";

/// This backend's view of the shared table: attach to the segment another
/// backend created, or create and pin it. Creation is serialised by a file
/// lock; a handle left by an earlier postmaster names no segment (or one
/// without our nonce), and a new one is made.
pub(super) fn table() -> Table {
    if let Some((h, e)) = TABLE.get() {
        return Table {
            header: h,
            entries: e,
        };
    }
    let _ = fs::create_dir_all(DIR);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| {
            crate::errors::Error::Internal(format!("iclear: cannot open {LOCK_FILE}: {e}")).raise()
        });
    unsafe {
        if libc::flock(lock.as_raw_fd(), libc::LOCK_EX) != 0 {
            crate::errors::Error::Internal(format!("iclear: cannot lock {LOCK_FILE}")).raise();
        }
    }
    let header = attach_existing().unwrap_or_else(create_segment);
    drop(lock); // closing the file releases the lock
    let entries = unsafe { (header as *mut u8).add(std::mem::size_of::<Header>()) } as *mut Entry;
    TABLE.set(Some((header, entries)));
    Table { header, entries }
}

fn attach_existing() -> Option<*mut Header> {
    let mut text = String::new();
    fs::File::open(HANDLE_FILE)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let mut parts = text.split_whitespace();
    let handle: u32 = parts.next()?.parse().ok()?;
    let nonce: u64 = parts.next()?.parse().ok()?;
    unsafe {
        let seg = pg_sys::dsm_attach(handle);
        if seg.is_null() {
            return None;
        }
        let header = pg_sys::dsm_segment_address(seg) as *mut Header;
        if pg_sys::dsm_segment_map_length(seg) < SEGMENT_SIZE
            || (*header).magic != MAGIC
            || (*header).nonce != nonce
        {
            pg_sys::dsm_detach(seg);
            return None;
        }
        pg_sys::dsm_pin_mapping(seg);
        Some(header)
    }
}

fn create_segment() -> *mut Header {
    let nonce: u64 = rand::random();
    unsafe {
        let seg = pg_sys::dsm_create(SEGMENT_SIZE, 0);
        let base = pg_sys::dsm_segment_address(seg) as *mut u8;
        std::ptr::write_bytes(base, 0, SEGMENT_SIZE);
        let header = base as *mut Header;
        (*header).magic = MAGIC;
        (*header).nonce = nonce;
        pg_sys::dsm_pin_segment(seg);
        pg_sys::dsm_pin_mapping(seg);
        let handle = pg_sys::dsm_segment_handle(seg);
        let tmp = format!("{HANDLE_FILE}.tmp");
        let written = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{handle} {nonce}\n").as_bytes())?;
                f.sync_all()
            })
            .and_then(|_| fs::rename(&tmp, HANDLE_FILE));
        if let Err(e) = written {
            crate::errors::Error::Internal(format!("iclear: cannot write {HANDLE_FILE}: {e}"))
                .raise();
        }
        header
    }
}

/// Changes with every start of the postmaster and every reinitialisation
/// after a crash (the segment is made anew): transaction ids are only
/// unique within one such lifetime.
pub fn lifetime() -> u64 {
    unsafe { (*table().header).nonce }
}

/// The table, if this backend has attached it (a transaction's end settles
/// slots only where some were taken).
pub(super) fn attached() -> Option<Table> {
    TABLE
        .get()
        .map(|(header, entries)| Table { header, entries })
}
