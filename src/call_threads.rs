//! The threads a backend runs its HTTP calls on, kept between calls: a
//! lead's sync lookup used to start a thread (and map its stack) for every
//! call, a tenth of a millisecond each on a loopback sandbox that answers
//! at once (issue 30 item 5). A call goes to an idle thread if there is
//! one, or to a new one; a thread that finishes waits for the next call.
//! Threads start with every signal blocked, so Postgres's handlers
//! (statement_timeout, cancel, latches) only ever run on the backend's own
//! thread, and they never call Postgres.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

type Task = Box<dyn FnOnce() + Send + 'static>;

/// Idle threads beyond this many end instead of waiting (a worker round of
/// many calls does not leave its peak behind for good).
const MAX_IDLE: usize = 32;

/// Threads started so far (the tests read it).
static STARTED: AtomicUsize = AtomicUsize::new(0);

struct Pool {
    tx: Mutex<Sender<Task>>,
    rx: Arc<Mutex<Receiver<Task>>>,
    /// Threads waiting for a task, or about to: each send is matched by one
    /// of them (claimed here) or by a new thread, so no task waits behind a
    /// busy one.
    idle: Arc<AtomicUsize>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel();
        Pool {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    })
}

/// Run `task` on a call thread.
pub fn run(task: impl FnOnce() + Send + 'static) {
    let p = pool();
    let claimed = p
        .idle
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| i.checked_sub(1))
        .is_ok();
    if !claimed {
        let (rx, idle) = (p.rx.clone(), p.idle.clone());
        let saved = block_signals();
        STARTED.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || loop {
            let next = rx.lock().map(|r| r.recv());
            let Ok(Ok(task)) = next else { break };
            // a task catches its own panics; one that gets here ends the
            // thread, which was not counted idle
            task();
            if idle.load(Ordering::Acquire) >= MAX_IDLE {
                break;
            }
            idle.fetch_add(1, Ordering::AcqRel);
        });
        restore_signals(&saved);
    }
    let sent = p.tx.lock().map(|tx| tx.send(Box::new(task)));
    debug_assert!(
        matches!(sent, Ok(Ok(()))),
        "the call threads' channel is never closed"
    );
}

fn block_signals() -> libc::sigset_t {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

fn restore_signals(old: &libc::sigset_t) {
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// One test, so that no other one shares the pool meanwhile.
    #[test]
    fn threads_are_reused_and_concurrent_calls_each_get_one() {
        let (tx, rx) = mpsc::channel();
        let before = STARTED.load(Ordering::Relaxed);
        for _ in 0..20 {
            let tx = tx.clone();
            run(move || tx.send(()).unwrap());
            rx.recv().unwrap();
            // the thread is idle again before the next call
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            STARTED.load(Ordering::Relaxed) - before <= 1,
            "twenty calls in turn, one thread"
        );
        let barrier = Arc::new(std::sync::Barrier::new(6));
        for _ in 0..6 {
            let (b, tx) = (barrier.clone(), tx.clone());
            // each waits for all six: a call queued behind a busy thread
            // would never get there
            run(move || {
                b.wait();
                tx.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            rx.recv_timeout(std::time::Duration::from_secs(5))
                .expect("every call ran at once");
        }
    }
}
