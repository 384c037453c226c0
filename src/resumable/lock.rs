//! Who may touch an upload now: one request at a time per upload (others get 423, or
//! ask the holder to stop), and byte ranges claimed by parallel segment writers.
//!
//! The lock has two halves: a mutex in this process, taken first and without waiting,
//! and the `Locker`'s lease, which keeps other instances off (with `[state]`; a no-op
//! on one instance).

use crate::error::Error;
use crate::store::locker::{Lease, Locker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a lock held on another instance is waited for before 423.
const LEASE_PATIENCE: Duration = Duration::from_secs(1);

/// An upload held by one request; others get 423 until it is dropped, or ask it to
/// stop (`Locks::take_over`).
pub struct Lock {
    /// The lease: the lock across instances. Released first.
    lease: Box<dyn Lease>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    slot: Arc<Slot>,
    /// `slot.takeovers` when this lock was taken: a change means "stop".
    seen: u64,
}

/// One upload's lock and its stop signal.
#[derive(Default)]
struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    takeovers: AtomicU64,
    stop: tokio::sync::Notify,
}

impl Slot {
    /// Tells the request holding the lock to stop.
    fn stop(&self) {
        self.takeovers.fetch_add(1, Ordering::AcqRel);
        self.stop.notify_waiters();
    }
}

impl Lock {
    /// Lets go of the lock, waiting for another instance to be able to see it free.
    pub async fn release(self) {
        self.lease.release().await;
    }

    /// Resolves when a newer request asked to take the upload over.
    pub async fn stopped(&self) {
        loop {
            let notified = self.slot.stop.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.slot.takeovers.load(Ordering::Acquire) != self.seen {
                return;
            }
            notified.await;
        }
    }
}

type Slots = Arc<Mutex<HashMap<String, Weak<Slot>>>>;

/// The per-upload locks of one engine.
pub struct Locks {
    locker: Arc<dyn Locker>,
    slots: Slots,
    /// The subscription to other instances' takeover requests.
    listener: Option<tokio::task::JoinHandle<()>>,
    /// Byte ranges being written right now, per upload (segments in parallel).
    inflight: Inflight,
}

impl Drop for Locks {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
    }
}

impl Locks {
    /// Locks whose leases `locker` grants; a takeover asked for on another instance
    /// stops the request holding the upload here. Must be called on the runtime.
    pub fn new(locker: Arc<dyn Locker>) -> Locks {
        let slots: Slots = Arc::default();
        let map = Arc::downgrade(&slots);
        let listener = locker.on_stop(Box::new(move |id| {
            let slot = map.upgrade().and_then(|m| {
                m.lock()
                    .ok()
                    .and_then(|m| m.get(id).and_then(Weak::upgrade))
            });
            if let Some(slot) = slot {
                slot.stop();
            }
        }));
        Locks {
            locker,
            slots,
            listener,
            inflight: Arc::default(),
        }
    }

    /// Whether leases can be taken now (`/readyz`).
    pub async fn probe(&self) -> Result<(), String> {
        self.locker.probe().await
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        let mut map = self.slots.lock().ok()?;
        map.retain(|_, w| w.strong_count() > 0);
        Some(match map.get(id).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(Slot::default());
                map.insert(id.to_string(), Arc::downgrade(&s));
                s
            }
        })
    }

    /// Takes the upload's lock, or `None` if another request holds it. A lease another
    /// instance holds is waited for a moment: it may be on its way out (leases are
    /// released after the response).
    pub async fn try_lock(&self, id: &str) -> Result<Option<Lock>, Error> {
        let Some(slot) = self.slot(id) else {
            return Ok(None);
        };
        let Ok(guard) = slot.mutex.clone().try_lock_owned() else {
            return Ok(None);
        };
        self.lease(id, slot, guard, LEASE_PATIENCE, false).await
    }

    /// Waits for the upload's lock (short critical sections: load, change, save).
    pub async fn try_lock_wait(&self, id: &str) -> Result<Option<Lock>, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.try_lock(id).await? {
                return Ok(Some(l));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Adds the lease to a lock held in this process, waiting up to `wait` for
    /// another instance to let go (asking it to stop first, if `stop`).
    async fn lease(
        &self,
        id: &str,
        slot: Arc<Slot>,
        guard: tokio::sync::OwnedMutexGuard<()>,
        wait: Duration,
        stop: bool,
    ) -> Result<Option<Lock>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked = !stop;
        loop {
            let lost = Arc::downgrade(&slot);
            let lease = self
                .locker
                .lease(
                    id,
                    Box::new(move || {
                        if let Some(s) = lost.upgrade() {
                            s.stop();
                        }
                    }),
                )
                .await?;
            if let Some(lease) = lease {
                let seen = slot.takeovers.load(Ordering::Acquire);
                return Ok(Some(Lock {
                    lease,
                    _guard: guard,
                    slot,
                    seen,
                }));
            }
            if !asked {
                self.locker.ask_stop(id).await?;
                asked = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes the upload's lock, asking the request that holds it (here or on another
    /// instance) to stop (it keeps what it wrote) and waiting up to `wait` for it to
    /// let go. The IETF draft's rule: a client that lost its connection resumes at
    /// once, while porter may not have noticed the loss yet.
    pub async fn take_over(&self, id: &str, wait: Duration) -> Result<Option<Lock>, Error> {
        let Some(slot) = self.slot(id) else {
            return Ok(None);
        };
        let started = tokio::time::Instant::now();
        let guard = match slot.mutex.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                slot.stop();
                match tokio::time::timeout(wait, slot.mutex.clone().lock_owned()).await {
                    Ok(g) => g,
                    Err(_) => return Ok(None),
                }
            }
        };
        let left = wait.saturating_sub(started.elapsed());
        self.lease(id, slot, guard, left, true).await
    }

    /// Claims an inclusive byte range for writing, or `None` if it overlaps a range
    /// another request is writing.
    pub fn claim(&self, id: &str, range: (u64, u64)) -> Option<Claim> {
        let mut m = self.inflight.lock().ok()?;
        let list = m.entry(id.to_string()).or_default();
        if list.iter().any(|(a, b)| range.0 <= *b && *a <= range.1) {
            return None;
        }
        list.push(range);
        Some(Claim {
            map: self.inflight.clone(),
            id: id.to_string(),
            range,
        })
    }

    /// Like `claim`, waiting (bounded) for in-flight writers to finish.
    pub async fn claim_wait(&self, id: &str, range: (u64, u64)) -> Option<Claim> {
        for _ in 0..2000 {
            if let Some(c) = self.claim(id, range) {
                return Some(c);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

/// Byte ranges in flight, per upload id.
type Inflight = Arc<Mutex<HashMap<String, Vec<(u64, u64)>>>>;

/// A byte range of an upload that one request is writing; released on drop.
pub struct Claim {
    map: Inflight,
    id: String,
    range: (u64, u64),
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock()
            && let Some(v) = m.get_mut(&self.id)
        {
            v.retain(|r| *r != self.range);
            if v.is_empty() {
                m.remove(&self.id);
            }
        }
    }
}
