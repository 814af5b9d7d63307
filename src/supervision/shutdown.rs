//! Stopping a worker thread without a polled flag: the owner holds a [`StopHandle`], the thread a
//! [`StopSignal`]. Dropping the handle (or calling `stop`) fires the signal, and a thread waiting
//! on it (`Clock::wait`) wakes at once, as mini-redis shuts down by dropping senders.
//!
//! [`Finished`] is the other direction: each thread of a group holds a clone of a
//! [`FinishToken`], and whoever waits for the group learns that all of them ended when the last
//! token is dropped, however the threads ended (returned, or unwound from a panic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct Shared {
    /// Read without the lock on hot paths (FFmpeg's interrupt callback asks every few packets).
    fired: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Held by a thread's owner; the thread stops when it is dropped.
pub struct StopHandle(Arc<Shared>);

/// What the thread sees. Cheap to clone.
#[derive(Clone)]
pub struct StopSignal(Arc<Shared>);

/// A new handle and its signal.
pub fn stop_signal() -> (StopHandle, StopSignal) {
    let shared = Arc::new(Shared::default());
    (StopHandle(shared.clone()), StopSignal(shared))
}

impl StopHandle {
    /// Fires the signal now (dropping the handle does the same).
    pub fn stop(&self) {
        let _guard = self.0.lock.lock();
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.wake.notify_all();
    }

    /// Another signal fired by this handle.
    pub fn signal(&self) -> StopSignal {
        StopSignal(self.0.clone())
    }
}

impl Drop for StopHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl StopSignal {
    pub fn is_stopped(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Blocks for `timeout` or until stopped; true when stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut guard = self.0.lock.lock();
        if !self.is_stopped() {
            let _ = self.0.wake.wait_for(&mut guard, timeout);
        }
        self.is_stopped()
    }
}

/// Held (cloned) by every thread of a group; the group has finished when the last one is dropped.
#[derive(Clone)]
pub struct FinishToken(#[allow(dead_code)] Sender<()>);

/// Waits for a group of threads, each holding a [`FinishToken`].
pub struct Finished(Receiver<()>);

/// A group's token (clone it into each thread, and drop the original once the group can grow no
/// more) and the way to wait for it.
pub fn finish_group() -> (FinishToken, Finished) {
    let (tx, rx) = std::sync::mpsc::channel();
    (FinishToken(tx), Finished(rx))
}

impl Finished {
    /// Whether every token was dropped within `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        matches!(self.0.recv_timeout(timeout), Err(RecvTimeoutError::Disconnected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_handle_wakes_a_waiting_thread_at_once() {
        let (handle, signal) = stop_signal();
        let waiter = std::thread::spawn(move || signal.wait_timeout(Duration::from_secs(600)));
        drop(handle);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(waiter.join().unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the waiter was not woken");
    }

    #[test]
    fn an_unfired_signal_waits_out_its_timeout() {
        let (_handle, signal) = stop_signal();
        assert!(!signal.wait_timeout(Duration::from_millis(1)));
        assert!(!signal.is_stopped());
    }

    #[test]
    fn a_group_finishes_when_its_last_token_is_dropped_even_by_a_panic() {
        let (token, finished) = finish_group();
        let quiet = token.clone();
        let panicking = token.clone();
        drop(token);
        let thread = std::thread::spawn(move || {
            let _token = panicking;
            panic!("a worker died");
        });
        let _ = thread.join();
        assert!(!finished.wait(Duration::from_millis(1)), "one token is still held");
        drop(quiet);
        assert!(finished.wait(Duration::from_secs(10)));
    }
}
