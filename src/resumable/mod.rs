//! Resumable uploads: one engine, several protocols (tusd's shape).
//!
//! * `state`: what is persisted about an upload;
//! * `store`: where data and state live (`ResumableStore`; local files now);
//! * this module: the `Engine`: per-upload locks, create / load / append / commit /
//!   remove / expire, all protocol-neutral;
//! * `complete`: turning a finished upload into the app's metadata request, with
//!   SPEC §4.3's rules for what the app's answer means;
//! * `tus`: the tus 1.0 front-end; `draft`: the IETF resumable-upload draft, answered
//!   on the same `tus` route; `front`: what those two share;
//! * `chunked`, `nginx`: django-chunked-upload and nginx-upload-module's protocol.

pub mod chunked;
pub mod complete;
pub mod draft;
mod front;
pub mod nginx;
pub mod state;
pub mod store;
pub mod tus;

use crate::error::{Error, ErrorKind};
use crate::http::body::GuardedBody;
use crate::http::stats::RequestStats;
use crate::sink::Pipe;
use crate::sink::hashes::{Algorithm, Hashes};
use crate::store::StoreError;
use crate::store::redis::Redis;
use state::Upload;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use store::{DataFile, ResumableStore};

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Error::from),
        Err(e) => Err(Error::internal(e.to_string())),
    }
}

/// An upload held by one request; others get 423 until it is dropped, or ask it to
/// stop (`Engine::take_over`).
pub struct Lock {
    /// The Redis lease, with `[state]`: the lock across instances. Released first.
    _lease: Option<crate::store::redis::Lease>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    slot: Arc<Slot>,
    /// `slot.takeovers` when this lock was taken: a change means "stop".
    seen: u64,
}

/// One upload's lock and its stop signal.
#[derive(Default)]
struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    takeovers: std::sync::atomic::AtomicU64,
    stop: tokio::sync::Notify,
}

impl Slot {
    /// Tells the request holding the lock to stop.
    fn stop(&self) {
        self.takeovers
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.stop.notify_waiters();
    }
}

impl Lock {
    fn new(
        slot: Arc<Slot>,
        guard: tokio::sync::OwnedMutexGuard<()>,
        lease: Option<crate::store::redis::Lease>,
    ) -> Lock {
        let seen = slot.takeovers.load(std::sync::atomic::Ordering::Acquire);
        Lock {
            _lease: lease,
            _guard: guard,
            slot,
            seen,
        }
    }

    /// Lets go of the lock, waiting for another instance to be able to see it free.
    pub async fn release(self) {
        if let Some(lease) = self._lease {
            lease.release().await;
        }
    }

    /// Resolves when a newer request asked to take the upload over.
    pub async fn stopped(&self) {
        loop {
            let notified = self.slot.stop.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .slot
                .takeovers
                .load(std::sync::atomic::Ordering::Acquire)
                != self.seen
            {
                return;
            }
            notified.await;
        }
    }
}

pub struct Engine {
    store: Arc<dyn ResumableStore>,
    /// With `[state]`: locks are Redis leases too, and takeovers travel over Redis.
    redis: Option<Arc<Redis>>,
    /// The subscription to other instances' takeover requests.
    listener: Option<tokio::task::JoinHandle<()>>,
    locks: Arc<Mutex<HashMap<String, Weak<Slot>>>>,
    /// Byte ranges being written right now, per upload (segments in parallel).
    inflight: Inflight,
}

/// How long a lock held on another instance is waited for before 423.
const LEASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

fn unavailable(e: crate::store::redis::RedisError) -> Error {
    Error::new(ErrorKind::Busy, e.to_string())
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
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

/// The result of one append.
pub struct Appended {
    /// Bytes this request brought.
    pub size: u64,
    /// The whole-file hash state after them.
    pub hashes: Hashes,
    /// The digest of just these bytes, when a checksum was asked for.
    pub check: Option<Hashes>,
    /// Set when the body would go past the upload's length or the size limit: nothing
    /// of this request may be kept.
    pub overflow: bool,
    /// The body broke off early (client gone, idle): the bytes received are kept.
    pub broken: Option<Error>,
    /// The open, locked data file: hold it until the new state is saved, so a `porter
    /// gc` in another process cannot collect the upload in between.
    pub hold: Option<Box<dyn DataFile>>,
}

impl Engine {
    pub fn new(store: Arc<dyn ResumableStore>) -> Engine {
        Engine {
            store,
            redis: None,
            listener: None,
            locks: Arc::default(),
            inflight: Arc::default(),
        }
    }

    /// An engine whose uploads many instances share: locks are Redis leases, and a
    /// takeover asked for on another instance stops the request holding the upload
    /// here. Must be called on the runtime.
    pub fn shared(store: Arc<dyn ResumableStore>, redis: Arc<Redis>) -> Engine {
        let locks: Arc<Mutex<HashMap<String, Weak<Slot>>>> = Arc::default();
        let map = Arc::downgrade(&locks);
        let listener = redis.on_stop(move |id| {
            let slot = map.upgrade().and_then(|m| {
                m.lock()
                    .ok()
                    .and_then(|m| m.get(id).and_then(Weak::upgrade))
            });
            if let Some(slot) = slot {
                slot.stop();
            }
        });
        Engine {
            store,
            redis: Some(redis),
            listener: Some(listener),
            locks,
            inflight: Arc::default(),
        }
    }

    /// The Redis server of `[state]`, if any (for `/readyz`).
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref()
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        let mut map = self.locks.lock().ok()?;
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

    /// Takes the upload's lock, or `None` if another request holds it. With `[state]`,
    /// a lease another instance holds is waited for a moment: it may be on its way
    /// out (leases are released after the response).
    pub async fn try_lock(&self, id: &str) -> Result<Option<Lock>, Error> {
        let Some(slot) = self.slot(id) else {
            return Ok(None);
        };
        let Ok(guard) = slot.mutex.clone().try_lock_owned() else {
            return Ok(None);
        };
        self.lease(id, slot, guard, LEASE_PATIENCE, false).await
    }

    /// Adds the Redis lease to a lock held in this process, waiting up to `wait` for
    /// another instance to let go (asking it to stop first, if `stop`).
    async fn lease(
        &self,
        id: &str,
        slot: Arc<Slot>,
        guard: tokio::sync::OwnedMutexGuard<()>,
        wait: std::time::Duration,
        stop: bool,
    ) -> Result<Option<Lock>, Error> {
        let Some(redis) = &self.redis else {
            return Ok(Some(Lock::new(slot, guard, None)));
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked = !stop;
        loop {
            let lost = Arc::downgrade(&slot);
            let lease = redis
                .lease(id, move || {
                    if let Some(s) = lost.upgrade() {
                        s.stop();
                    }
                })
                .await
                .map_err(unavailable)?;
            if let Some(lease) = lease {
                return Ok(Some(Lock::new(slot, guard, Some(lease))));
            }
            if !asked {
                redis.publish_stop(id).await.map_err(unavailable)?;
                asked = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Takes the upload's lock, asking the request that holds it (here or on another
    /// instance) to stop (it keeps what it wrote) and waiting up to `wait` for it to
    /// let go. The IETF draft's rule: a client that lost its connection resumes at
    /// once, while porter may not have noticed the loss yet.
    pub async fn take_over(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Lock>, Error> {
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
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        None
    }

    /// Writes a body at `offset` (segments out of order); returns bytes written.
    pub async fn write_segment<B>(
        &self,
        id: &str,
        offset: u64,
        body: &mut GuardedBody<B>,
        buffer: usize,
    ) -> Result<u64, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: Into<crate::http::BoxError>,
    {
        let (s, sid) = (self.store.clone(), id.to_string());
        let file = blocking(move || s.open_random(&sid)).await?;
        let mut pipe = Pipe::new(At { file, pos: offset }, Hashes::new(&[]), None, buffer);
        while let Some(d) = body.next_data().await? {
            pipe.write(d).await?;
        }
        let drained = pipe.drain().await?;
        let mut at = drained.file;
        blocking(move || at.file.sync()).await?;
        Ok(drained.size)
    }

    /// Hashes a complete upload by reading it (segments that came out of order).
    pub async fn hash_file(
        &self,
        up: &Upload,
        algos: &[Algorithm],
        block: usize,
    ) -> Result<Hashes, Error> {
        let (s, id, len) = (self.store.clone(), up.id.clone(), up.offset);
        let mut hashes = Hashes::new(algos);
        blocking(move || {
            s.gather(&id, len, block, &mut |chunk| hashes.update(chunk))?;
            Ok(hashes)
        })
        .await
    }

    /// Whether tus concatenation is available (partial data can be read back).
    pub fn concatenates(&self) -> bool {
        self.store.concatenates()
    }

    /// Waits for the upload's lock (short critical sections: load, change, save).
    pub async fn try_lock_wait(&self, id: &str) -> Result<Option<Lock>, Error> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(l) = self.try_lock(id).await? {
                return Ok(Some(l));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub async fn create(&self, up: &Upload) -> Result<(), Error> {
        RequestStats::note_upload_id(&up.id);
        let (s, up) = (self.store.clone(), up.clone());
        blocking(move || s.create(&up)).await
    }

    pub async fn load(&self, id: &str) -> Result<Option<Upload>, Error> {
        RequestStats::note_upload_id(id);
        let (s, id) = (self.store.clone(), id.to_string());
        blocking(move || s.load(&id)).await
    }

    pub async fn save(&self, up: &Upload) -> Result<(), Error> {
        let (s, up) = (self.store.clone(), up.clone());
        blocking(move || s.save(&up)).await
    }

    /// Deletes an upload's data, state and finished file.
    pub async fn remove(&self, up: &Upload) -> Result<(), Error> {
        let (s, id) = (self.store.clone(), up.id.clone());
        let stored = up.stored.as_ref().map(|(_, path)| path.clone());
        blocking(move || s.remove(&id, stored.as_deref())).await
    }

    pub async fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let (s, id) = (self.store.clone(), id.to_string());
        blocking(move || s.read_at(&id, offset, len)).await
    }

    /// Moves the finished data to its final place, sniffs its type from the first
    /// bytes there, and records both. Returns what was sniffed when it moved the data
    /// now, `None` when an earlier completion already had.
    pub async fn commit(
        &self,
        up: &mut Upload,
    ) -> Result<Option<Option<crate::upload::accept::Sniffed>>, Error> {
        if up.stored.is_some() {
            return Ok(None);
        }
        let (s, id, len) = (self.store.clone(), up.id.clone(), up.offset);
        let (loc, head) = blocking(move || {
            let loc = s.commit(&id, len)?;
            let path = loc
                .path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let head = s.head(&id, &path, crate::upload::accept::SNIFF_BYTES)?;
            Ok((loc, head))
        })
        .await?;
        let sniffed = crate::upload::accept::sniff(&head);
        up.detected_type = sniffed.map(|s| s.mime.to_string()).unwrap_or_default();
        let path = loc
            .path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        up.stored = Some((loc.key, path));
        up.bucket = loc.bucket;
        self.save(up).await?;
        Ok(Some(sniffed))
    }

    pub async fn ids(&self) -> Result<Vec<String>, Error> {
        let s = self.store.clone();
        blocking(move || s.ids()).await
    }

    /// Appends the body at the upload's offset. The caller decides, from the result,
    /// whether to keep the bytes (update the offset and save) or not (leave the state as
    /// it was: the next open cuts the bytes off). A takeover of `lock` ends the body
    /// early, like a client gone: what arrived is kept.
    pub async fn append<B>(
        &self,
        up: &Upload,
        lock: &Lock,
        body: &mut GuardedBody<B>,
        max_size: u64,
        check: &[Algorithm],
        buffer: usize,
    ) -> Result<Appended, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: Into<crate::http::BoxError>,
    {
        let (s, id, offset) = (self.store.clone(), up.id.clone(), up.offset);
        let file = blocking(move || s.open_at(&id, offset)).await?;
        let hashes =
            Hashes::restore(&up.hashes).ok_or_else(|| Error::internal("damaged hash state"))?;
        let check = (!check.is_empty()).then(|| Hashes::new(check));
        let room = up
            .length
            .unwrap_or(max_size)
            .min(max_size)
            .saturating_sub(offset);
        let mut pipe = Pipe::new(file, hashes, check, buffer);
        let mut overflow = false;
        let mut broken = None;
        loop {
            let next = tokio::select! {
                biased;
                () = lock.stopped() => {
                    broken = Some(Error::new(
                        ErrorKind::Conflict,
                        "a newer request took this upload over",
                    ));
                    break;
                }
                next = body.next_data() => next,
            };
            match next {
                Ok(Some(d)) if pipe.size() + d.len() as u64 > room => {
                    overflow = true;
                    break;
                }
                Ok(Some(d)) => pipe.write(d).await?,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(Error::from(e));
                    break;
                }
            }
        }
        let drained = pipe.drain().await?;
        let mut file: Box<dyn DataFile> = drained.file;
        let file = blocking(move || file.sync().map(|()| file)).await?;
        Ok(Appended {
            hold: Some(file),
            size: drained.size,
            hashes: drained.hashes,
            check: drained.check,
            overflow,
            broken,
        })
    }

    /// Writes `blocks` at `offset`, hashing them; returns the new offset and hashes.
    pub async fn write_blocks(
        &self,
        id: &str,
        offset: u64,
        blocks: Vec<bytes::Bytes>,
        mut hashes: Hashes,
    ) -> Result<(u64, Hashes), Error> {
        let (s, id) = (self.store.clone(), id.to_string());
        blocking(move || {
            let mut f = s.open_at(&id, offset)?;
            let mut at = offset;
            for b in &blocks {
                hashes.update(b);
                f.write_all(b)?;
                at += b.len() as u64;
            }
            f.sync()?;
            Ok((at, hashes))
        })
        .await
    }

    /// Appends a spooled chunk (a file of `len` bytes) at the upload's offset, hashing it
    /// into the upload's running hashes; returns them. The caller saves the state.
    pub async fn append_file(
        &self,
        up: &Upload,
        spool: std::path::PathBuf,
        len: u64,
        block: usize,
    ) -> Result<Hashes, Error> {
        let (s, id, offset) = (self.store.clone(), up.id.clone(), up.offset);
        let mut hashes =
            Hashes::restore(&up.hashes).ok_or_else(|| Error::internal("damaged hash state"))?;
        blocking(move || {
            use std::io::Read;
            let mut src = std::fs::File::open(&spool)?;
            let mut dst = s.open_at(&id, offset)?;
            let mut buf = vec![0u8; block];
            let mut left = len;
            while left > 0 {
                let n = src.read(&mut buf[..block.min(left as usize)])?;
                if n == 0 {
                    return Err(StoreError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                hashes.update(&buf[..n]);
                dst.write_all(&buf[..n])?;
                left -= n as u64;
            }
            dst.sync()?;
            Ok(hashes)
        })
        .await
    }

    /// A scratch file beside the uploads, for a chunk whose upload is known only once
    /// the whole request is read. Deleted when the returned guard drops.
    pub fn spool_path(&self) -> Spool {
        Spool(
            self.store
                .scratch(&uuid::Uuid::new_v4().simple().to_string()),
        )
    }

    /// Removes what requests of an earlier run left half-written (see
    /// `ResumableStore::sweep_scratch`); only for start-up.
    pub fn sweep_scratch(&self) -> Result<usize, StoreError> {
        self.store.sweep_scratch()
    }

    /// Removes expired uploads and settled completions; returns how many.
    pub async fn collect(&self) -> Result<usize, Error> {
        let now = state::now();
        let mut removed = 0;
        for id in self.ids().await? {
            let Some(lock) = self.try_lock(&id).await? else {
                continue;
            };
            let removed_it = self.collect_one(&id, now).await;
            lock.release().await;
            removed += usize::from(removed_it?);
        }
        Ok(removed)
    }

    /// Removes upload `id` (locked) if it expired; returns whether it did.
    async fn collect_one(&self, id: &str, now: u64) -> Result<bool, Error> {
        let up = match self.load(id).await {
            Ok(Some(up)) => up,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!(%id, error = %e, "skipping an unreadable resumable upload");
                return Ok(false);
            }
        };
        let accepted = matches!(up.completion, Some(state::Completion::Accepted { .. }));
        let expired = match &up.completion {
            Some(state::Completion::Pending { until, .. }) => *until <= now,
            _ => up.expires <= now,
        };
        if !expired {
            return Ok(false);
        }
        let stored = up.stored.as_ref().map(|(_, path)| path.clone());
        let (s, id) = (self.store.clone(), up.id.clone());
        blocking(move || {
            let stored = if accepted {
                // An accepted file belongs to the app: only porter's record goes.
                None
            } else {
                // A move the state never learnt of (porter died between the two) left
                // the file where the app was never told of it: it goes too.
                stored.or_else(|| s.committed(&id))
            };
            s.remove_if_idle(&id, stored.as_deref())
        })
        .await
    }
}

/// Positioned writes through the pipe.
struct At {
    file: Box<dyn DataFile>,
    pos: u64,
}

impl crate::sink::Writer for At {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.file.write_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

/// Progress under a resumable upload's own id (SPEC §6), for one request.
pub struct UploadProgress(Option<crate::progress::Tracker>);

impl UploadProgress {
    pub fn start(progress: &Arc<crate::progress::Registry>, up: &Upload) -> UploadProgress {
        UploadProgress(progress.start_at(&up.id, up.offset, up.length.unwrap_or(0)))
    }

    pub fn tracker(&self) -> Option<crate::progress::Tracker> {
        self.0.clone()
    }

    /// Done when the app accepted the file, an error when it refused, else paused.
    pub fn settle(mut self, up: &Upload) {
        let Some(t) = self.0.take() else { return };
        match &up.completion {
            Some(state::Completion::Accepted { status, .. }) => t.finish(*status),
            Some(state::Completion::Refused) => t.finish(410),
            _ => t.pause(),
        }
    }
}

impl Drop for UploadProgress {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.pause();
        }
    }
}

/// A scratch file that is deleted when dropped.
pub struct Spool(pub std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The error for an upload id that does not exist (or was collected).
pub fn not_found() -> Error {
    Error::new(ErrorKind::NotFound, "no such upload")
}
