//! The async queue's consumer (docs/architecture.md "Services and the worker"): the background worker registered
//! from `shared_preload_libraries`, and `iclear.run_worker_once()`, which
//! drains due jobs in the calling session. Both claim jobs with
//! `FOR UPDATE SKIP LOCKED` and a lease, run the HTTP on threads
//! (`remote`), and write results, cache and async actions on the main thread.
//! A worker that dies mid-batch leaves its jobs `running` with a lease that
//! expires; the next claim takes them again, so no job is lost.

use crate::gucs;
use crate::remote::{run_until, OwnedCall, Work};
use crate::store;
use crate::store::jobs::Job;
use iclear_engine::facts::CallResult;
use iclear_engine::global::GlobalRule;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Register the worker (only possible while shared_preload_libraries load).
pub fn register() {
    BackgroundWorkerBuilder::new("iclear worker")
        .set_function("iclear_worker_main")
        .set_library("iclear")
        .set_type("iclear worker")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Claim up to `limit` due jobs, leased for the whole batch: its calls run
/// `http_concurrency` at a time, at most 5 s each.
fn claim(limit: i64) -> Vec<Job> {
    let rounds = limit / gucs::http_concurrency() as i64 + 1;
    let lease_s = gucs::job_lease_s().max(rounds * 6);
    store::jobs::claim(limit, gucs::job_max_attempts(), lease_s)
}

/// The call a job makes, or why it cannot be made (e.g. the rule was deleted).
fn prepare(
    job: &Job,
) -> Result<(std::rc::Rc<iclear_engine::config::ProductConfig>, OwnedCall), String> {
    let product = job.payload["product"].as_str().unwrap_or("");
    let cfg = store::config::product(product)
        .map_err(|e| format!("configuration cannot be loaded: {e}"))?
        .ok_or_else(|| format!("product {product:?} no longer exists"))?;
    let rule_id = job.payload["global_rule_id"].as_i64().unwrap_or(0);
    let rule: &GlobalRule = cfg
        .global_rules
        .iter()
        .find(|g| g.id == rule_id)
        .ok_or_else(|| format!("global rule {rule_id} no longer exists"))?;
    let timeout_s = rule.settings.async_timeout_s();
    let call = OwnedCall {
        rule: rule.clone(),
        value: job.payload["value"].as_str().unwrap_or("").to_string(),
        lead_id: job.lead_id.clone(),
        product: cfg.name.clone(),
        fields: job.payload["fields"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        timeout_s,
    };
    Ok((cfg, call))
}

/// A retry while the job has attempts left, else failed.
fn retry_or_fail(job: &Job) -> &'static str {
    if job.attempts < gucs::job_max_attempts() {
        "queued"
    } else {
        "failed"
    }
}

/// Mark a job by what its call came back with: done, re-queued (a retryable
/// failure with attempts left) or failed. True when its answer is to be
/// written now (done or failed, and this claim still owns the job).
fn settle(job: &Job, result: &CallResult) -> bool {
    let (status, error) = match result {
        CallResult::Response { .. } => ("done", None),
        CallResult::NoResponse {
            retryable: true,
            reason,
            ..
        } => (retry_or_fail(job), Some(reason.as_str())),
        CallResult::NoResponse { reason, .. } => ("failed", Some(reason.as_str())),
    };
    store::jobs::mark(job, status, error) && status != "queued"
}

/// Write what a job's call came back with.
fn complete(job: &Job, cfg: &iclear_engine::config::ProductConfig, result: CallResult) {
    let rule_id = job.payload["global_rule_id"].as_i64().unwrap_or(0);
    if !settle(job, &result) {
        return;
    }
    let (log, effects) =
        iclear_engine::pipeline::complete_async(cfg, rule_id, &job.payload, result);
    store::persist::save_log(&job.lead_id, job.product_id, &log);
    store::persist::apply(&effects, &job.lead_id, job.product_id);
}

/// Write what sending an SMS came back with (a `service` row named sms).
fn complete_sms(job: &Job, cost: f64, result: CallResult) {
    if !settle(job, &result) {
        return;
    }
    store::verification::forget_sms_code(job.id);
    let (outcome, detail, request, response) = match result {
        CallResult::Response { data, request } => (
            "sent",
            serde_json::json!({"source": "api", "cost": cost}),
            request,
            // providers echo the message: keep only what says it was accepted
            Some(
                serde_json::json!({"status": data.get("status").cloned().unwrap_or(Value::Null),
                                    "id": data.get("id").or_else(|| data.get("sid")).cloned().unwrap_or(Value::Null)}),
            ),
        ),
        CallResult::NoResponse {
            reason, request, ..
        } => (
            "no_response",
            serde_json::json!({"source": "none", "cost": 0, "reason": reason}),
            request,
            None,
        ),
    };
    let entry = iclear_engine::pipeline::LogEntry {
        stage: "verification",
        origin: "async",
        kind: "service",
        ref_id: None,
        name: Some("sms".into()),
        outcome: outcome.into(),
        detail,
        request: Some(request),
        response,
    };
    store::persist::save_log(&job.lead_id, job.product_id, &[entry]);
}

/// Claim, call, complete one batch in the current transaction (the caller's,
/// for run_worker_once). Returns the jobs claimed.
fn batch_in_one_transaction(limit: i64) -> usize {
    let jobs = claim(limit);
    let (ready, calls) = split(&jobs);
    let results = run_until(calls, gucs::http_concurrency(), || false);
    finish(&jobs, ready, results);
    jobs.len()
}

/// What completing a job needs besides its call's result.
enum Prep {
    Lookup(std::rc::Rc<iclear_engine::config::ProductConfig>),
    Sms { cost: f64 },
    Tracking { event: String },
}

/// A tracking event: delivered while the tracking service is subscribed.
fn prepare_tracking(job: &Job) -> Result<(Prep, Work), (String, &'static str)> {
    let endpoint = store::config::subscribed_endpoint("tracking").ok_or_else(|| {
        (
            "the tracking service is not subscribed or has no endpoint".to_string(),
            "failed",
        )
    })?;
    let event = job.payload["event"].as_str().unwrap_or("").to_string();
    Ok((
        Prep::Tracking { event },
        Work::Tracking {
            endpoint,
            body: job.payload.clone(),
        },
    ))
}

/// Log a tracking event's delivery (or why not) and settle its job.
fn complete_tracking(job: &Job, event: String, result: CallResult) {
    if !settle(job, &result) {
        return;
    }
    let (outcome, detail, request, response) = match result {
        CallResult::Response { data, request } => {
            ("sent", serde_json::json!({"cost": 0}), request, Some(data))
        }
        CallResult::NoResponse {
            reason, request, ..
        } => (
            "no_response",
            serde_json::json!({"cost": 0, "reason": reason}),
            request,
            None,
        ),
    };
    let entry = iclear_engine::pipeline::LogEntry {
        stage: "tracking",
        origin: "async",
        kind: "tracking",
        ref_id: None,
        name: Some(event),
        outcome: outcome.into(),
        detail,
        request: Some(request),
        response,
    };
    store::persist::save_log(&job.lead_id, job.product_id, &[entry]);
}

type Ready = Vec<Option<Prep>>;

/// An SMS of pause_for_verification: sent only while its code is pending.
fn prepare_sms(job: &Job) -> Result<(Prep, Work), (String, &'static str)> {
    let product = job.payload["product"].as_str().unwrap_or("");
    let phone = job.payload["phone"].as_str().unwrap_or("");
    let (endpoint, cost, code) = match store::verification::sms_to_send(job.id, product, phone) {
        Ok(Ok(found)) => found,
        Ok(Err(nothing)) => {
            store::verification::forget_sms_code(job.id);
            return Err((nothing, "done"));
        }
        Err(e) => {
            return Err((
                format!("the verification history cannot be read: {e}"),
                retry_or_fail(job),
            ))
        }
    };
    let work = Work::Sms {
        endpoint,
        to: phone.to_string(),
        text: format!("{product}: your verification code is {code}"),
        reference: job.lead_id.clone(),
        code,
    };
    Ok((Prep::Sms { cost }, work))
}

/// Prepare each job in its own subtransaction: a job whose preparation
/// raises an ERROR (a configuration that cannot be loaded, say) is failed
/// with the reason, and the rest of the batch goes on (an error that aborted
/// the claim would have the same batch claimed again forever).
fn split(jobs: &[Job]) -> (Ready, Vec<Work>) {
    let mut ready = Vec::with_capacity(jobs.len());
    let mut calls = Vec::new();
    for job in jobs {
        let prepared = store::guarded(std::panic::AssertUnwindSafe(|| {
            if job.kind == "sms" {
                prepare_sms(job)
            } else if job.kind == "tracking" {
                prepare_tracking(job)
            } else {
                prepare(job)
                    .map(|(cfg, call)| (Prep::Lookup(cfg), Work::Lookup(Box::new(call))))
                    .map_err(|why| (why, "failed"))
            }
        }))
        .unwrap_or_else(|e| Err((format!("it could not be prepared: {e}"), "failed")));
        match prepared {
            Ok((prep, work)) => {
                ready.push(Some(prep));
                calls.push(work);
            }
            // nothing to send any more is done; a lookup that cannot run failed
            Err((why, status)) => {
                store::jobs::mark(job, status, Some(&why));
                ready.push(None);
            }
        }
    }
    (ready, calls)
}

/// Complete each job in its own subtransaction: a job whose answer cannot be
/// written (an ERROR) is failed with the reason, and the rest of the batch is
/// written all the same. A job whose call was never started (the worker is
/// stopping) goes back to the queue.
fn finish(jobs: &[Job], ready: Ready, results: Vec<Option<CallResult>>) {
    let mut results = results.into_iter();
    for (job, prep) in jobs.iter().zip(ready) {
        let Some(prep) = prep else { continue };
        let Some(r) = results.next() else { break };
        let Some(r) = r else {
            store::jobs::release(job);
            continue;
        };
        let done = std::panic::AssertUnwindSafe((job, prep, r));
        let written = store::guarded(move || {
            let (job, prep, r) = done.0;
            match prep {
                Prep::Lookup(cfg) => complete(job, &cfg, r),
                Prep::Sms { cost } => complete_sms(job, cost, r),
                Prep::Tracking { event } => complete_tracking(job, event, r),
            }
        });
        if let Err(e) = written {
            store::jobs::mark(
                job,
                "failed",
                Some(&format!("its answer could not be written: {e}")),
            );
        }
    }
}

/// Drain due async jobs in this session (tests, cron, clusters without the
/// preloaded worker). Returns the jobs processed.
#[pg_extern(volatile, parallel_unsafe)]
fn run_worker_once(max_jobs: default!(i32, 100)) -> i32 {
    let mut done = 0usize;
    let max = max_jobs.max(0) as usize;
    while done < max {
        let n = batch_in_one_transaction((max - done).min(gucs::worker_batch_size()) as i64);
        if n == 0 {
            break;
        }
        done += n;
    }
    tally();
    done as i32
}

/// Bookkeeping of every round: what rolled-back leads' sent requests cost
/// (`store::spent`), expired pauses, and the append-only counter and cap
/// rows folded.
fn tally() {
    crate::store::spent::reconcile();
    // paused leads whose code expired unconfirmed are rejected
    crate::lead::finish_paused(
        crate::store::paused::take_expired(100),
        iclear_engine::pipeline::PauseEnd::Expired,
    );
    store::jobs::fold();
}

/// Is the background worker running? Read from the backends' status, not
/// from `pg_stat_activity`, which shows a backend's type only to its own
/// role and to members of `pg_read_all_stats` (`iclear.health` is read by
/// the iclear roles).
#[pg_extern(volatile, parallel_safe)]
fn worker_alive() -> bool {
    unsafe {
        (1..=pg_sys::pgstat_fetch_stat_numbackends()).any(|i| {
            let local = pg_sys::pgstat_fetch_stat_local_beentry(i);
            if local.is_null()
                || (*local).backendStatus.st_backendType != pg_sys::BackendType::B_BG_WORKER
            {
                return false;
            }
            let kind = pg_sys::GetBackgroundWorkerTypeByPid((*local).backendStatus.st_procpid);
            !kind.is_null() && std::ffi::CStr::from_ptr(kind) == c"iclear worker"
        })
    }
}

// ------------------------------------------------------------ the bgworker

static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Has the worker been told to stop? (`sigterm_received` clears the flag
/// when read: the answer is remembered.)
fn stopping() -> bool {
    use std::sync::atomic::Ordering;
    if BackgroundWorker::sigterm_received() {
        STOPPING.store(true, Ordering::Relaxed);
    }
    STOPPING.load(Ordering::Relaxed)
}

/// Run `f` in its own transaction, as `iclear_processor` (the worker's
/// session is a superuser's, which iclear's work never needs); an ERROR
/// aborts it and is logged, and the worker goes on (None).
fn in_transaction<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Option<R> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = PgTryBuilder::new(|| Some(crate::privilege::as_processor(f)))
        .catch_others(|e| {
            let msg = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    ereport.message().to_string()
                }
            };
            warning!("iclear worker: {msg}");
            None
        })
        .execute();
    unsafe {
        if r.is_some() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    r
}

/// One batch with the HTTP outside any transaction: claim (commit, so the
/// lease is visible), call, complete (commit). Returns the jobs claimed.
fn worker_batch(limit: i64) -> usize {
    let claimed = in_transaction(|| {
        if !store::jobs::extension_ready() {
            return None;
        }
        let jobs = claim(limit);
        let (ready, calls) = split(&jobs);
        Some((jobs, ready, calls))
    })
    .flatten();
    let Some((jobs, ready, calls)) = claimed else {
        return 0;
    };
    let n = jobs.len();
    // a SIGTERM stops the batch: no call is started after it, and the calls
    // in flight are waited for (review 0.5 finding 9)
    let results = run_until(calls, gucs::http_concurrency(), stopping);
    let ready = std::panic::AssertUnwindSafe(ready);
    let results = std::panic::AssertUnwindSafe(results);
    let jobs = std::panic::AssertUnwindSafe(jobs);
    in_transaction(move || finish(&jobs, ready.0, results.0));
    n
}

/// Daily upkeep: partitions and retention (iclear.maintain()), and done
/// jobs older than 7 days.
/// Some(true): done; Some(false): iclear is not created yet (try again next
/// round); None: it failed (logged; try again in an hour).
fn maintain() -> Option<bool> {
    in_transaction(|| {
        if !store::jobs::extension_ready() {
            return false;
        }
        store::jobs::upkeep();
        true
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn iclear_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::worker_database().unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    // The worker is a superuser session: objects another role planted in a
    // schema on the database's path must never be called (review finding 3).
    // An override, so neither ALTER DATABASE ... SET nor a reload replaces it.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    log!("iclear worker: serving the job queue of database {db:?}");
    let mut next_upkeep = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            log!("iclear worker: configuration reloaded");
            let now = gucs::worker_database();
            if now.as_deref() != Some(db.as_str()) {
                // a worker serves one database: exit and be restarted for the new one
                log!("iclear worker: iclear.database changed to {now:?}; restarting");
                unsafe { pg_sys::proc_exit(1) };
            }
        }
        // Batches back to back while the queue is full, for at most a
        // second: then the round's bookkeeping, upkeep and a reload run even
        // under a backlog. SIGTERM is read once per batch and remembered
        // (reading it clears it).
        let started = Instant::now();
        let (busy, stop) = loop {
            let limit = gucs::worker_batch_size();
            let busy = worker_batch(limit as i64) >= limit;
            let stop = stopping();
            if !busy || stop || started.elapsed() >= Duration::from_secs(1) {
                break (busy, stop);
            }
        };
        if stop {
            break;
        }
        in_transaction(|| {
            if store::jobs::extension_ready() {
                tally();
            }
        });
        if Instant::now() >= next_upkeep {
            next_upkeep = Instant::now()
                + match maintain() {
                    Some(true) => Duration::from_secs(86_400),
                    Some(false) => Duration::ZERO,
                    None => Duration::from_secs(3_600),
                };
        }
        // more work waiting: no nap, but still a look at the latch (SIGTERM)
        let nap = if busy {
            Duration::ZERO
        } else {
            gucs::worker_naptime()
        };
        if !BackgroundWorker::wait_latch(Some(nap)) {
            break;
        }
    }
    // SIGTERM: exit 1, so that the postmaster restarts a worker stopped with
    // pg_terminate_backend() (at shutdown nothing is restarted); exit 0
    // would unregister it for good.
    unsafe { pg_sys::proc_exit(1) };
}
