//! Cap slots: counted in shared memory, so that taking one never waits for
//! another lead's transaction and no lock is held across an HTTP call.
//!
//! Every cap period (a rule's day, month or source; a global rule's day or
//! month; a global cap's day or month from its start day) is one entry of a
//! shared table: `used` (committed or spent) and `reserved` (taken by a
//! transaction still open). A lead takes a slot when `used + reserved` is
//! below the limit, under a spinlock held for a few memory operations, and
//! writes one `iclear.cap_use` row in its own transaction. When the
//! transaction commits the slot moves to `used`; when it rolls back the slot
//! is given back, unless it paid for a request that was sent (see
//! `spent.rs`): the vendor billed it, so it stays counted.
//!
//! The table lives in a dynamic shared memory segment that the first backend
//! to need it creates and pins (its handle is kept in
//! `$PGDATA/pg_iclear/caps.handle`), so it works with or without
//! `shared_preload_libraries` and dies with the postmaster: after a restart
//! or a crash each entry is loaded again from what is durable, the committed
//! `cap_use` rows plus the spent requests of rolled-back leads not yet
//! reconciled.

use super::{query_value, INT8, INT8_ARRAY, TEXT, TEXT_ARRAY};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What a cap counts for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Scope {
    Rule = 1,
    GlobalRule = 2,
    Global = 3,
    /// A phone of a product (`ref_id`: a keyed digest of both): the SMS
    /// codes sent to it and the wrong codes tried for it, per window.
    Phone = 4,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Period {
    Daily = 1,
    Monthly = 2,
    Source = 3,
    /// `bucket`: the window's number (unix seconds / `iclear.sms_window`).
    SmsSent = 4,
    SmsFailed = 5,
}

/// One cap period: `bucket` is the period's first day (days since
/// 1970-01-01, UTC) for daily and monthly caps, the source id for a
/// per-source cap (`NO_SOURCE` for leads without one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CapKey {
    pub scope: Scope,
    pub period: Period,
    pub ref_id: i64,
    pub bucket: i64,
}

pub const NO_SOURCE: i64 = i64::MIN;

/// A cap to take a slot of.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    pub key: CapKey,
    pub limit: i64,
    /// When the period ends (unix seconds; 0 for a per-source cap, which
    /// never ends): past it, an idle entry may be dropped.
    pub ends: i64,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Rule => "rule",
            Scope::GlobalRule => "global_rule",
            Scope::Global => "global",
            Scope::Phone => "phone",
        }
    }
    fn of(s: &str) -> Option<Scope> {
        Some(match s {
            "rule" => Scope::Rule,
            "global_rule" => Scope::GlobalRule,
            "global" => Scope::Global,
            "phone" => Scope::Phone,
            _ => return None,
        })
    }
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
            Period::Source => "source",
            Period::SmsSent => "sms_sent",
            Period::SmsFailed => "sms_failed",
        }
    }
    fn of(s: &str) -> Option<Period> {
        Some(match s {
            "daily" => Period::Daily,
            "monthly" => Period::Monthly,
            "source" => Period::Source,
            "sms_sent" => Period::SmsSent,
            "sms_failed" => Period::SmsFailed,
            _ => return None,
        })
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")
}

fn day_number(d: NaiveDate) -> i64 {
    (d - epoch()).num_days()
}

fn seconds_at(d: NaiveDate) -> i64 {
    day_number(d) * 86_400
}

impl CapKey {
    /// `bucket` as `cap_use.bucket` holds it: the period's first day
    /// (YYYY-MM-DD), or the source id ('' for none).
    pub fn bucket_text(&self) -> String {
        match self.period {
            Period::Source if self.bucket == NO_SOURCE => String::new(),
            Period::Source | Period::SmsSent | Period::SmsFailed => self.bucket.to_string(),
            _ => (epoch() + chrono::Duration::days(self.bucket))
                .format("%Y-%m-%d")
                .to_string(),
        }
    }

    pub fn parse(scope: &str, period: &str, ref_id: i64, bucket: &str) -> Option<CapKey> {
        let period = Period::of(period)?;
        let bucket = match period {
            Period::Source if bucket.is_empty() => NO_SOURCE,
            Period::Source | Period::SmsSent | Period::SmsFailed => bucket.parse().ok()?,
            _ => day_number(NaiveDate::parse_from_str(bucket, "%Y-%m-%d").ok()?),
        };
        Some(CapKey {
            scope: Scope::of(scope)?,
            period,
            ref_id,
            bucket,
        })
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("a month");
    (first_next - NaiveDate::from_ymd_opt(y, m, 1).expect("a month")).num_days() as u32
}

/// The reset day of month (y, m) for a monthly cap from `start_day` (a start
/// day past the month's end resets on its last day).
fn reset_in(y: i32, m: u32, start_day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, start_day.min(days_in_month(y, m))).expect("a day")
}

fn shift_month(y: i32, m: u32, by: i32) -> (i32, u32) {
    let n = y * 12 + m as i32 - 1 + by;
    (n.div_euclid(12), n.rem_euclid(12) as u32 + 1)
}

/// A daily or monthly cap period containing `now`, as (first day, end in
/// unix seconds). Monthly periods start on `start_day` (1 for calendar
/// months), as `iclear.cap_period_start` computes them in SQL.
pub fn period_of(period: Period, start_day: u32, now: DateTime<Utc>) -> (i64, i64) {
    let today = now.date_naive();
    match period {
        Period::Daily => (
            day_number(today),
            seconds_at(today + chrono::Duration::days(1)),
        ),
        _ => {
            let (y, m) = (today.year(), today.month());
            let this = reset_in(y, m, start_day);
            let (start, next) = if today >= this {
                let (ny, nm) = shift_month(y, m, 1);
                (this, reset_in(ny, nm, start_day))
            } else {
                let (py, pm) = shift_month(y, m, -1);
                (reset_in(py, pm, start_day), this)
            };
            (day_number(start), seconds_at(next))
        }
    }
}

// ------------------------------------------------------------ shared table

const MAGIC: u64 = 0x6963_6c65_6172_6331; // "iclearc1"
/// Entries in the shared table (about 48 bytes each). Entries of ended
/// periods and idle per-source entries are dropped when it fills up.
const ENTRIES: usize = 16_384;
const EMPTY: u32 = 0;
const LIVE: u32 = 1;
const TOMBSTONE: u32 = 2;

#[repr(C)]
struct Header {
    magic: u64,
    nonce: u64,
    lock: AtomicU32,
    live: u32,
    /// Bumped by every sweep: a value loaded before a sweep may be stale.
    sweeps: AtomicU64,
}

#[repr(C)]
struct Entry {
    state: u32,
    scope: u8,
    period: u8,
    _pad: [u8; 2],
    /// The database whose iclear owns it: rule ids repeat across databases.
    db: u32,
    ref_id: i64,
    bucket: i64,
    used: i64,
    reserved: i64,
    ends: i64,
}

impl Entry {
    fn is(&self, k: &CapKey) -> bool {
        self.state == LIVE
            && self.db == database()
            && self.ref_id == k.ref_id
            && self.bucket == k.bucket
            && self.scope == k.scope as u8
            && self.period == k.period as u8
    }
}

const SEGMENT_SIZE: usize = std::mem::size_of::<Header>() + ENTRIES * std::mem::size_of::<Entry>();

struct Table {
    header: *mut Header,
    entries: *mut Entry,
}

/// Held while the table is read or changed: a few memory operations, never
/// an allocation, an error or a call into Postgres.
struct Guard<'t>(&'t Table);

impl Table {
    fn lock(&self) -> Guard<'_> {
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
    fn entry(&self, i: usize) -> &mut Entry {
        unsafe { &mut *self.0.entries.add(i) }
    }

    fn header(&self) -> &mut Header {
        unsafe { &mut *self.0.header }
    }

    fn find(&self, k: &CapKey) -> Option<usize> {
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

    fn insert(&self, cap: &Cap, used: i64) -> Option<usize> {
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
    static RESERVED: RefCell<Vec<Reservation>> = const { RefCell::new(Vec::new()) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

const DIR: &str = "pg_iclear";
const HANDLE_FILE: &str = "pg_iclear/caps.handle";
const LOCK_FILE: &str = "pg_iclear/caps.lock";

/// This backend's view of the shared table: attach to the segment another
/// backend created, or create and pin it. Creation is serialised by a file
/// lock; a handle left by an earlier postmaster names no segment (or one
/// without our nonce), and a new one is made.
fn table() -> Table {
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

// ------------------------------------------------------------ reservations

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
    let Some((h, e)) = TABLE.get() else { return };
    let t = Table {
        header: h,
        entries: e,
    };
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
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => super::spent::on_commit(),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => super::spent::on_abort(),
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> i64 {
        day_number(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[pg_test]
    fn periods_match_cap_period_start() {
        // the SQL function and the Rust one agree on every case they share
        for (period, start, now) in [
            (Period::Daily, 1, "2026-12-01T23:59:59Z"),
            (Period::Monthly, 1, "2026-12-01T00:00:00Z"),
            (Period::Monthly, 15, "2026-11-14T12:00:00Z"),
            (Period::Monthly, 15, "2026-11-15T00:00:00Z"),
            (Period::Monthly, 31, "2026-03-01T00:00:00Z"),
            (Period::Monthly, 31, "2026-02-28T10:00:00Z"),
            (Period::Monthly, 30, "2027-01-05T10:00:00Z"),
        ] {
            let (first, _) = period_of(period, start, at(now));
            let sql: String = Spi::get_one(&format!(
                "SELECT (iclear.cap_period_start('{}', {start}, '{now}') AT TIME ZONE 'UTC')::date::text",
                period.name()
            ))
            .unwrap()
            .unwrap();
            assert_eq!(first, day(&sql), "{period:?} {start} {now}");
        }
        let (first, ends) = period_of(Period::Monthly, 31, at("2026-02-28T10:00:00Z"));
        assert_eq!(first, day("2026-02-28"));
        assert_eq!(ends, day("2026-03-31") * 86_400);
    }
}
