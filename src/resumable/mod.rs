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

impl Lock {
    fn new(slot: Arc<Slot>, guard: tokio::sync::OwnedMutexGuard<()>) -> Lock {
        let seen = slot.takeovers.load(std::sync::atomic::Ordering::Acquire);
        Lock {
            _guard: guard,
            slot,
            seen,
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
    locks: Mutex<HashMap<String, Weak<Slot>>>,
    /// Byte ranges being written right now, per upload (segments in parallel).
    inflight: Inflight,
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
            locks: Mutex::new(HashMap::new()),
            inflight: Arc::default(),
        }
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

    /// Takes the upload's lock, or `None` if another request holds it.
    pub fn try_lock(&self, id: &str) -> Option<Lock> {
        let slot = self.slot(id)?;
        let guard = slot.mutex.clone().try_lock_owned().ok()?;
        Some(Lock::new(slot, guard))
    }

    /// Takes the upload's lock, asking the request that holds it to stop (it keeps
    /// what it wrote) and waiting up to `wait` for it to let go. The IETF draft's rule:
    /// a client that lost its connection resumes at once, while porter may not have
    /// noticed the loss yet.
    pub async fn take_over(&self, id: &str, wait: std::time::Duration) -> Option<Lock> {
        let slot = self.slot(id)?;
        if let Ok(guard) = slot.mutex.clone().try_lock_owned() {
            return Some(Lock::new(slot, guard));
        }
        slot.takeovers
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        slot.stop.notify_waiters();
        let guard = tokio::time::timeout(wait, slot.mutex.clone().lock_owned())
            .await
            .ok()?;
        Some(Lock::new(slot, guard))
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
            let mut at = 0;
            while at < len {
                let chunk = s.read_at(&id, at, block.min((len - at) as usize))?;
                if chunk.is_empty() {
                    return Err(StoreError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                hashes.update(&chunk);
                at += chunk.len() as u64;
            }
            Ok(hashes)
        })
        .await
    }

    /// Waits for the upload's lock (short critical sections: load, change, save).
    pub async fn try_lock_wait(&self, id: &str) -> Option<Lock> {
        for _ in 0..2000 {
            if let Some(l) = self.try_lock(id) {
                return Some(l);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        None
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

    /// Moves the finished data to its final place and records where.
    pub async fn commit(&self, up: &mut Upload) -> Result<(), Error> {
        if up.stored.is_some() {
            return Ok(());
        }
        let (s, id) = (self.store.clone(), up.id.clone());
        let loc = blocking(move || s.commit(&id)).await?;
        let path = loc
            .path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        up.stored = Some((loc.key, path));
        self.save(up).await
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
            let Some(_lock) = self.try_lock(&id) else {
                continue;
            };
            let up = match self.load(&id).await {
                Ok(Some(up)) => up,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "skipping an unreadable resumable upload");
                    continue;
                }
            };
            let expired = match &up.completion {
                // An accepted file belongs to the app: only the state goes.
                Some(state::Completion::Accepted { .. }) => up.expires <= now,
                Some(state::Completion::Pending { until, .. }) => *until <= now,
                _ => up.expires <= now,
            };
            if !expired {
                continue;
            }
            let stored = match up.completion {
                // An accepted file belongs to the app: only porter's record goes.
                Some(state::Completion::Accepted { .. }) => None,
                // A move the state never learnt of (porter died between the two) left
                // the file where the app was never told of it: it goes too.
                _ => up
                    .stored
                    .as_ref()
                    .map(|(_, path)| path.clone())
                    .or_else(|| self.store.committed(&up.id)),
            };
            let (s, id) = (self.store.clone(), up.id.clone());
            if blocking(move || s.remove_if_idle(&id, stored.as_deref())).await? {
                removed += 1;
            }
        }
        Ok(removed)
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
    pub fn start(app: &crate::app::App, up: &Upload) -> UploadProgress {
        UploadProgress(
            app.progress
                .start_at(&up.id, up.offset, up.length.unwrap_or(0)),
        )
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
