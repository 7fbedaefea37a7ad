//! Progress of long work (backtest, import_config, maintain, forget,
//! rebuild_history) as PostgreSQL's own long commands report theirs: in the
//! backend's progress slot, which `iclear.progress` shows to another session
//! while the work runs (pg_stat_progress_copy's mechanism), and a NOTICE
//! about every 5 s (`iclear.progress_notice_interval`) with what is done,
//! the rate and the time left.
//!
//! An extension cannot add a command type: the slot is the COPY one, marked
//! with `MAGIC` in its first parameter so the view tells it from a real
//! COPY (which, in the meantime, `pg_stat_progress_copy` shows as a COPY
//! with no table). A transaction that aborts ends it, as PostgreSQL ends
//! its own.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::time::Instant;

/// "iclr": the mark of an iclear progress slot (parameter 0).
pub const MAGIC: i64 = 0x6963_6c72;

/// What is running (parameter 1; the view names it).
#[derive(Clone, Copy, Debug)]
pub enum Command {
    Backtest = 1,
    ImportConfig = 2,
    Maintain = 3,
    Forget = 4,
    RebuildHistory = 5,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Backtest => "backtest",
            Command::ImportConfig => "import_config",
            Command::Maintain => "maintain",
            Command::Forget => "forget",
            Command::RebuildHistory => "rebuild_history",
        }
    }

    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "backtest" => Command::Backtest,
            "import_config" => Command::ImportConfig,
            "maintain" => Command::Maintain,
            "forget" => Command::Forget,
            "rebuild_history" => Command::RebuildHistory,
            _ => return None,
        })
    }
}

struct State {
    command: Command,
    started: Instant,
    noticed: Instant,
    done: i64,
    total: i64,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn set(index: i32, value: i64) {
    unsafe { pg_sys::pgstat_progress_update_param(index, value) };
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Start reporting `command` (of `product_id`, if one) with `total` steps.
pub fn start(command: Command, product_id: Option<i64>, total: i64) {
    unsafe {
        pg_sys::pgstat_progress_start_command(
            pg_sys::ProgressCommandType::PROGRESS_COMMAND_COPY,
            pg_sys::InvalidOid,
        );
    }
    let now = unix_now();
    set(0, MAGIC);
    set(1, command as i64);
    set(2, 0);
    set(3, total);
    set(4, now);
    set(5, now);
    set(6, product_id.unwrap_or(0));
    STATE.set(Some(State {
        command,
        started: Instant::now(),
        noticed: Instant::now(),
        done: 0,
        total,
    }));
}

/// `done` steps of the work are done (and `total` is now known, if given).
pub fn update(done: i64, total: Option<i64>) {
    STATE.with_borrow_mut(|s| {
        let Some(s) = s.as_mut() else {
            return;
        };
        s.done = done;
        if let Some(t) = total {
            s.total = t;
            set(3, t);
        }
        set(2, done);
        set(5, unix_now());
        let every = crate::gucs::progress_notice_interval();
        if every.is_some_and(|e| s.noticed.elapsed() >= e) {
            s.noticed = Instant::now();
            let secs = s.started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let left = if rate > 0.0 && s.total > done {
                format!(", about {:.0} s left", (s.total - done) as f64 / rate)
            } else {
                String::new()
            };
            notice!(
                "iclear.{}: {done} of {} done ({:.0} a second{left})",
                s.command.name(),
                s.total,
                rate
            );
        }
    });
}

/// The work is over.
pub fn end() {
    if STATE.take().is_some() {
        unsafe { pg_sys::pgstat_progress_end_command() };
    }
}

/// Report `command` while `f` runs (ended whether it returns or raises:
/// an abort ends the slot too).
pub fn reporting<R>(
    command: Command,
    product_id: Option<i64>,
    total: i64,
    f: impl FnOnce() -> R,
) -> R {
    start(command, product_id, total);
    let r = f();
    end();
    r
}

struct Load {
    started: Instant,
    noticed: Instant,
    rows: i64,
}

thread_local! {
    static LOAD: RefCell<Option<Load>> = const { RefCell::new(None) };
}

/// A row of a bulk list load went by (called by the list_entry trigger):
/// while a real COPY runs, a NOTICE about every 5 s with the rows done, the
/// rate and, when the COPY knows its size (a file), the time left, read from
/// the COPY's own progress slot. The view shows the load from that slot.
pub fn list_row() {
    let entry = unsafe { pg_sys::MyBEEntry };
    if entry.is_null() {
        return;
    }
    let (command, params) = unsafe { ((*entry).st_progress_command, (*entry).st_progress_param) };
    if command != pg_sys::ProgressCommandType::PROGRESS_COMMAND_COPY || params[0] == MAGIC {
        return;
    }
    // Parameters of a COPY: bytes processed, bytes total, tuples processed.
    let (bytes, bytes_total, rows) = (params[0], params[1], params[2]);
    let Some(every) = crate::gucs::progress_notice_interval() else {
        return;
    };
    LOAD.with_borrow_mut(|l| {
        // A new COPY starts again from its first row.
        if l.as_ref().is_none_or(|l| rows < l.rows) {
            *l = Some(Load {
                started: Instant::now(),
                noticed: Instant::now(),
                rows,
            });
        }
        let l = l.as_mut().expect("set above");
        l.rows = rows;
        // Instant::now is cheap; once per 1024 rows is cheaper still.
        if rows % 1024 != 0 || l.noticed.elapsed() < every {
            return;
        }
        l.noticed = Instant::now();
        let secs = l.started.elapsed().as_secs_f64().max(0.001);
        let rate = rows as f64 / secs;
        let left = if bytes_total > bytes && bytes > 0 {
            let byte_rate = bytes as f64 / secs;
            format!(
                ", about {:.0} s left",
                (bytes_total - bytes) as f64 / byte_rate
            )
        } else {
            String::new()
        };
        notice!("iclear.list_load: {rows} rows done ({rate:.0} a second{left})");
    });
}

/// `iclear.progress_update(done, total)`.
#[pg_extern(volatile, parallel_unsafe)]
fn progress_update(done: i64, total: default!(Option<i64>, "NULL")) {
    update(done, total);
}

/// `iclear.progress_end()`.
#[pg_extern(volatile, parallel_unsafe)]
fn progress_end() {
    end();
}

/// The command of an iclear progress slot, by its code (the view's).
#[pg_extern(immutable, parallel_safe)]
fn progress_command(code: i64) -> Option<&'static str> {
    [
        Command::Backtest,
        Command::ImportConfig,
        Command::Maintain,
        Command::Forget,
        Command::RebuildHistory,
    ]
    .into_iter()
    .find(|c| *c as i64 == code)
    .map(Command::name)
}
