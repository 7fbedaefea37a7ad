//! Requests that were sent stay recorded, whatever becomes of the lead's
//! transaction.
//!
//! Before a synchronous lookup is sent, the backend writes (and fsyncs) a
//! small file under `$PGDATA/pg_iclear/spent/<database oid>/`: the lead, the global rule,
//! the cost, the cap slots the request paid for, and the id of the
//! (sub)transaction that will record it. After the answer it rewrites the
//! file with the request and the answer, and marks the request in
//! `iclear.sent_mark` in that transaction. When it commits, its
//! own rows (the filter log with the cost, the consent evidence, the
//! `cap_use` rows) say it all and the file is only removed. When it rolls
//! back, or the server stops before it ends, `reconcile()` (run by the
//! worker every round, and by `iclear.run_worker_once()`) writes what the
//! vendor billed: the `cap_use` rows, a `filter_log` row with outcome
//! `rolled_back` and the cost, and the consent evidence of an iClaim answer.
//! Until then a cap period loaded from disk counts the file
//! (`ended_for`), so a restart never hands its slot out again.

use super::cap_key::CapKey;
use super::{exec, query_value, INT8, JSON, TEXT};
use iclear_engine::facts::ServiceCall;
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// This database's directory of request files (a cluster may hold iclear in
/// several databases; each records and reconciles its own).
fn dir() -> String {
    format!(
        "pg_iclear/spent/{}",
        unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32()
    )
}

/// A spent request's file.
pub struct Spent {
    path: PathBuf,
    record: Value,
}

thread_local! {
    static SEQ: Cell<u64> = const { Cell::new(0) };
    /// Files reconciled by the current transaction: removed when it commits.
    static RECONCILED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Write the file whole (a reader sees the old version or the new one).
/// `durable`: fsync it and its directory first, unless the server runs with
/// `fsync = off`. The record before sending is durable (it is what keeps a
/// slot counted); the answer added after is not (a crash before the lead
/// commits loses the answer's detail, never the slot or the cost).
fn write_file(path: &Path, record: &Value, durable: bool) -> std::io::Result<()> {
    let durable = durable && unsafe { pgrx::pg_sys::enableFsync };
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(record.to_string().as_bytes())?;
    if durable {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if durable {
        fs::File::open(dir())?.sync_all()?;
    }
    Ok(())
}

/// Record that `call` is about to be sent, paying for the cap slots `caps`.
pub fn before_send(call: &ServiceCall, caps: &[CapKey]) -> Result<Spent, String> {
    let xid = unsafe { pg_sys::GetCurrentFullTransactionId() }.value;
    let top = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    let lifetime = super::cap_table::lifetime();
    let n = SEQ.get() + 1;
    SEQ.set(n);
    let pid = std::process::id();
    let dir = dir();
    // the name says whose it is, so that a reconciler skips the files of
    // a transaction still running without reading them
    let path = PathBuf::from(format!("{dir}/{lifetime}-{top}-{xid}-{pid}-{n}.json"));
    let record = json!({
        "id": format!("{xid}-{pid}-{n}"),
        "xid": xid.to_string(),
        "top_xid": top.to_string(),
        "lifetime": lifetime.to_string(),
        "lead_id": call.lead_id,
        "value": call.value,
        "product": call.product,
        "global_rule_id": call.rule.id,
        "service": call.rule.service,
        "cost": call.rule.cost,
        "caps": caps.iter().map(|k| json!([k.scope.name(), k.ref_id, k.period.name(), k.bucket_text()]))
            .collect::<Vec<_>>(),
    });
    fs::create_dir_all(&dir)
        .and_then(|_| write_file(&path, &record, true))
        .map_err(|e| format!("iclear: cannot record a request before sending it ({dir}): {e}"))?;
    exec(
        "INSERT INTO iclear.sent_mark (id) VALUES ($1)",
        &[TEXT],
        &[record["id"].as_str().unwrap_or_default().into()],
    );
    Ok(Spent { path, record })
}

impl Spent {
    /// Add the request as logged and the answer (None: no answer).
    pub fn answered(mut self, request: &Value, response: Option<&Value>) {
        self.record["request"] = request.clone();
        self.record["response"] = response.cloned().unwrap_or(Value::Null);
        if let Err(e) = write_file(&self.path, &self.record, false) {
            warning!("iclear: cannot record the answer of a sent request: {e}");
        }
    }
}

/// A request's file, by its name: (path, server lifetime, top-level
/// transaction id).
struct Named {
    path: PathBuf,
    lifetime: u64,
    top: u64,
}

/// This database's request files, in one order for every reconciler (two
/// never wait on each other's rows).
fn listing() -> Vec<Named> {
    let Ok(dir) = fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut files: Vec<Named> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_string();
            let mut parts = stem.split('-');
            let lifetime = parts.next()?.parse().ok()?;
            let top = parts.next()?.parse().ok()?;
            Some(Named {
                path,
                lifetime,
                top,
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn read(f: &Named) -> Option<Value> {
    serde_json::from_str(&fs::read_to_string(&f.path).ok()?).ok()
}

/// Has the transaction that wrote the file ended? Yes if the file is from
/// an earlier life of the server (after a restart or a crash, ids that never
/// reached the disk are handed out again). Within one life its top-level id
/// was handed out before the file was written, so `pg_xact_status` knows
/// it; a subtransaction's files wait for their top-level transaction. (A
/// snapshot's xmax is no bound: a transaction that got its id after the
/// last one to end is at or past it and still running. The demo's 1,200-row
/// INSERT showed it: one lead in flight was recorded as rolled back.)
/// `asked` keeps each top-level id's answer for one pass.
fn ended(f: &Named, asked: &mut HashMap<u64, bool>) -> bool {
    if f.lifetime != super::cap_table::lifetime() {
        return true;
    }
    *asked.entry(f.top).or_insert_with(|| {
        !query_value::<bool>(
            "SELECT pg_catalog.pg_xact_status($1::text::pg_catalog.xid8) IS NOT DISTINCT FROM 'in progress'",
            &[TEXT],
            &[f.top.to_string().as_str().into()],
        )
        .unwrap_or(false)
    })
}

/// Did the lead commit? Its mark says (read with a snapshot taken now).
fn marked(id: &str) -> bool {
    super::latest(|| {
        query_value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM iclear.sent_mark WHERE id = $1)",
            &[TEXT],
            &[id.into()],
        )
    })
    .unwrap_or(false)
}

fn caps_of(record: &Value) -> Vec<CapKey> {
    record["caps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            CapKey::parse(
                c[0].as_str()?,
                c[2].as_str()?,
                c[1].as_i64()?,
                c[3].as_str()?,
            )
        })
        .collect()
}

/// The files of sent requests paying for cap period `k` whose lead's
/// transaction has ended. Those without a mark (rolled back) and without a
/// `spent_request` row (not reconciled yet) are a slot each (`caps.rs`
/// reads that with the durable rows, in one snapshot taken after this scan,
/// so a request reconciled in between is counted once).
pub fn ended_for(k: &CapKey) -> Vec<String> {
    let mut asked = HashMap::new();
    listing()
        .iter()
        .filter(|f| ended(f, &mut asked))
        .filter_map(read)
        .filter(|r| caps_of(r).contains(k))
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// Write what rolled-back leads' sent requests cost; returns how many.
/// Files of committed leads are removed (and their marks); files of
/// transactions still open are left for a later round.
pub fn reconcile() -> i64 {
    register_callback();
    let mut n = 0;
    let mut asked = HashMap::new();
    for f in listing() {
        if !ended(&f, &mut asked) {
            continue;
        }
        let Some(r) = read(&f) else { continue };
        let id = r["id"].as_str().unwrap_or_default();
        if marked(id) {
            // the lead committed: its own rows say it all
            let _ = fs::remove_file(&f.path);
            exec(
                "DELETE FROM iclear.sent_mark WHERE id = $1",
                &[TEXT],
                &[id.into()],
            );
        } else {
            n += i64::from(record(&r));
            RECONCILED.with_borrow_mut(|v| v.push(f.path));
        }
    }
    n
}

/// Record one rolled-back lead's sent request, unless it already is (a
/// crash between recording it and removing its file). True: recorded now.
fn record(r: &Value) -> bool {
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    let product_id: Option<i64> = query_value(
        "SELECT id FROM iclear.product WHERE name = $1",
        &[TEXT],
        &[text("product").as_str().into()],
    );
    let gr = r["global_rule_id"].as_i64();
    let new = query_value::<bool>(
        "INSERT INTO iclear.spent_request (id, lead_id, product_id, global_rule_id, service, cost, request, response)
         VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8)
         ON CONFLICT (id) DO NOTHING RETURNING true",
        &[TEXT, TEXT, INT8, INT8, TEXT, TEXT, JSON, JSON],
        &[
            text("id").as_str().into(),
            text("lead_id").as_str().into(),
            product_id.into(),
            gr.into(),
            text("service").as_str().into(),
            r["cost"].to_string().as_str().into(),
            super::json_datum(r["request"].to_string()),
            super::json_datum(r["response"].to_string()),
        ],
    )
    .unwrap_or(false);
    if !new {
        return false;
    }
    for k in caps_of(r) {
        exec(
            "INSERT INTO iclear.cap_use (scope, ref_id, period, bucket) VALUES ($1, $2, $3, $4)",
            &[TEXT, INT8, TEXT, TEXT],
            &[
                k.scope.name().into(),
                k.ref_id.into(),
                k.period.name().into(),
                k.bucket_text().as_str().into(),
            ],
        );
    }
    let answered = !r["response"].is_null();
    let detail = json!({
        "source": "api",
        "cost": r["cost"],
        "reason": "the lead's transaction rolled back after the request was sent",
    });
    exec(
        "INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name, outcome,
                                        detail, request, response)
         VALUES ($1, $2, 'post', 'sync', 'service', $3, $4, 'rolled_back', $5, $6, $7)",
        &[TEXT, INT8, INT8, TEXT, JSON, JSON, JSON],
        &[
            text("lead_id").as_str().into(),
            product_id.into(),
            gr.into(),
            text("service").as_str().into(),
            super::json_datum(detail.to_string()),
            super::json_datum(r["request"].to_string()),
            super::json_datum(r["response"].to_string()),
        ],
    );
    if text("service") == "iclaim" && answered {
        let ev = iclear_engine::service::iclaim::evidence(&r["response"]);
        let session = text("value");
        exec(
            "INSERT INTO iclear.consent_evidence (lead_id, product_id, session_id, outcome, expires_at, response)
             VALUES ($1, $2, $3, $4, $5::timestamptz, $6)",
            &[TEXT, INT8, TEXT, TEXT, TEXT, JSON],
            &[
                text("lead_id").as_str().into(),
                product_id.into(),
                session.as_str().into(),
                ev["outcome"].as_str().unwrap_or("error").into(),
                ev["expires_at"].as_str().into(),
                super::json_datum(r["response"].to_string()),
            ],
        );
    }
    true
}

thread_local! {
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// The end of a transaction that reconciled files settles them.
fn register_callback() {
    if CALLBACK.get() {
        return;
    }
    unsafe { pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut()) };
    CALLBACK.set(true);
}

unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => on_commit(),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => on_abort(),
        _ => {}
    }
}

/// The transaction that reconciled files committed: remove them.
fn on_commit() {
    for p in RECONCILED.with_borrow_mut(std::mem::take) {
        let _ = fs::remove_file(p);
    }
}

/// It rolled back: the files stay for the next round.
fn on_abort() {
    RECONCILED.with_borrow_mut(Vec::clear);
}
