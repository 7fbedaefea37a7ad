//! Service calls on threads. HTTP never runs on the backend's main thread
//! and Postgres is never called from another one: the main thread waits
//! here, checking for interrupts (a cancelled query does not wait out a
//! vendor's timeout), while threads run the adapters.

use iclear_engine::facts::{CallResult, ServiceCall};
use iclear_engine::global::GlobalRule;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `ServiceCall` that owns its data, so it can move to a thread.
pub struct OwnedCall {
    pub rule: GlobalRule,
    pub value: String,
    pub lead_id: String,
    pub product: String,
    pub fields: Map<String, Value>,
    pub timeout_s: u8,
}

impl OwnedCall {
    pub fn of(c: &ServiceCall) -> OwnedCall {
        OwnedCall {
            rule: c.rule.clone(),
            value: c.value.to_string(),
            lead_id: c.lead_id.to_string(),
            product: c.product.to_string(),
            fields: c.fields.clone(),
            timeout_s: c.timeout_s,
        }
    }

    pub fn run(&self) -> CallResult {
        iclear_services::call(&ServiceCall {
            rule: &self.rule,
            value: &self.value,
            lead_id: &self.lead_id,
            product: &self.product,
            fields: &self.fields,
            timeout_s: self.timeout_s,
        })
    }
}

/// One piece of HTTP work of a batch.
pub enum Work {
    Lookup(Box<OwnedCall>),
    Sms {
        endpoint: String,
        to: String,
        text: String,
        reference: String,
        code: String,
    },
    /// A tracking event: `body` POSTed as JSON to the tracking webhook.
    Tracking {
        endpoint: String,
        body: Value,
    },
}

impl Work {
    fn run(&self) -> CallResult {
        match self {
            Work::Lookup(c) => c.run(),
            Work::Sms {
                endpoint,
                to,
                text,
                reference,
                code,
            } => iclear_services::sms::send(endpoint, to, text, reference, code),
            Work::Tracking { endpoint, body } => iclear_services::tracking::send(endpoint, body),
        }
    }
}

/// Run the calls on up to `concurrency` threads; results in input order.
pub fn run_all(calls: Vec<Work>, concurrency: usize) -> Vec<CallResult> {
    run_until(calls, concurrency, || false)
        .into_iter()
        .map(|r| r.unwrap_or_else(never_started))
        .collect()
}

fn never_started() -> CallResult {
    CallResult::NoResponse {
        reason: "the service thread ended without an answer".into(),
        timed_out: false,
        retryable: true,
        request: Value::Null,
    }
}

/// `run_all`, checking `stop` while it waits: once it says so no call is
/// started any more, the calls in flight are waited for (each bounded by
/// its timeout), and a call never started comes back as None (the worker
/// gives its job back to the queue).
pub fn run_until(
    calls: Vec<Work>,
    concurrency: usize,
    mut stop: impl FnMut() -> bool,
) -> Vec<Option<CallResult>> {
    let n = calls.len();
    if n == 0 {
        return Vec::new();
    }
    // the egress policy the threads' connections are judged by; a setting
    // that cannot be read leaves public addresses only
    if let Err(e) = crate::gucs::apply_egress_policy() {
        pgrx::warning!("iclear: {e}");
    }
    let queue: Arc<Mutex<VecDeque<(usize, Work)>>> =
        Arc::new(Mutex::new(calls.into_iter().enumerate().collect()));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    // on the backend's call threads (kept between calls: call_threads.rs)
    for _ in 0..concurrency.clamp(1, n) {
        let (queue, tx, stopping) = (queue.clone(), tx.clone(), stopping.clone());
        crate::call_threads::run(move || loop {
            if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
            let Some((i, call)) = next else { break };
            // a panicking adapter is a failed lookup, not a lost one
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.run()))
                .unwrap_or_else(|_| CallResult::NoResponse {
                    reason: "the service adapter failed".into(),
                    timed_out: false,
                    retryable: true,
                    request: Value::Null,
                });
            if tx.send((i, r)).is_err() {
                break;
            }
        });
    }
    drop(tx);
    let mut out: Vec<Option<CallResult>> = (0..n).map(|_| None).collect();
    let mut got = 0;
    while got < n {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok((i, r)) => {
                out[i] = Some(r);
                got += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
                if stop() {
                    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out
}
