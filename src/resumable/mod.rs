//! The resumable engine (tusd's handler core): one engine under every resumable
//! protocol (`protocol::{tus, chunked, nginx}`), protocol-neutral.
//!
//! * `state`: what is persisted about an upload;
//! * this module: the `Engine`: create / load / append / commit / remove / expire,
//!   over a `store::resumable::ResumableStore` and the capabilities it offers;
//! * `lock`: per-upload locks (with a `store::locker::Locker`'s lease across
//!   instances) and claimed byte ranges; `spool`: scratch files.
//!
//! The steps the protocols share on top of it (loading with the expiry rules, the
//! retried notify, the one completion path) are `ingest::{resumable, complete}`.

pub mod lock;
pub mod spool;
pub mod state;

use crate::error::{Error, ErrorKind};
use crate::http::body::GuardedBody;
use crate::http::stats::RequestStats;
use crate::sink::Pipe;
use crate::sink::hashes::{Algorithm, Hashes};
use crate::store::locker::Locker;
use crate::store::resumable::{Capabilities, DataFile, ResumableStore};
use crate::store::{Location, StoreError};
use lock::Locks;
pub use lock::{Claim, Lock};
pub use spool::{Spool, Spools};
use state::Upload;
use std::sync::Arc;

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Error> {
    match crate::workers::spawn_blocking(f).await {
        Ok(r) => r.map_err(Error::from),
        Err(e) => Err(Error::internal(e.to_string())),
    }
}

/// The resumable engine: protocol-neutral uploads over one store, with their locks.
pub struct Engine {
    store: Arc<dyn ResumableStore>,
    locks: Locks,
    spools: Spools,
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
    /// An engine over `store`, whose uploads `locker` keeps other instances off, with
    /// its scratch files in `spools`. Must be called on the runtime.
    pub fn new(store: Arc<dyn ResumableStore>, locker: Arc<dyn Locker>, spools: Spools) -> Engine {
        Engine {
            store,
            locks: Locks::new(locker),
            spools,
        }
    }

    /// What the store can do beyond the core (the protocols offer what it can).
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::of(self.store.as_ref())
    }

    /// Whether the engine's locks can be taken now (`/readyz`).
    pub async fn probe(&self) -> Result<(), String> {
        self.locks.probe().await
    }

    /// Takes the upload's lock, or `None` if another request holds it (see `Locks`).
    pub async fn try_lock(&self, id: &str) -> Result<Option<Lock>, Error> {
        self.locks.try_lock(id).await
    }

    /// Waits (bounded) for the upload's lock.
    pub async fn try_lock_wait(&self, id: &str) -> Result<Option<Lock>, Error> {
        self.locks.try_lock_wait(id).await
    }

    /// Takes the upload's lock, asking its holder to stop (see `Locks::take_over`).
    pub async fn take_over(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Lock>, Error> {
        self.locks.take_over(id, wait).await
    }

    /// Claims an inclusive byte range for writing (see `Locks::claim`).
    pub fn claim(&self, id: &str, range: (u64, u64)) -> Option<Claim> {
        self.locks.claim(id, range)
    }

    /// Like `claim`, waiting (bounded) for in-flight writers to finish.
    pub async fn claim_wait(&self, id: &str, range: (u64, u64)) -> Option<Claim> {
        self.locks.claim_wait(id, range).await
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
        let file = blocking(move || random_writes(s.as_ref())?.open_segment(&sid, offset)).await?;
        let mut pipe = Pipe::new(file, Hashes::new(&[]), None, buffer);
        while let Some(d) = body.next_data().await? {
            pipe.write(d).await?;
        }
        let drained = pipe.drain().await?;
        let mut file = drained.file;
        blocking(move || file.sync()).await?;
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
            random_writes(s.as_ref())?
                .gather(&id, len, block, &mut |chunk| hashes.update(chunk))?;
            Ok(hashes)
        })
        .await
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
        let (s, id, finished) = (self.store.clone(), up.id.clone(), finished(up));
        blocking(move || s.remove(&id, finished.as_ref())).await
    }

    /// Moves the finished data to its final place, sniffs its type from the first
    /// bytes there, and records both. Returns what was sniffed when it moved the data
    /// now, `None` when an earlier completion already had.
    pub async fn commit(
        &self,
        up: &mut Upload,
    ) -> Result<Option<Option<crate::sink::accept::Sniffed>>, Error> {
        if up.file.stored.is_some() {
            return Ok(None);
        }
        let (s, id, len) = (self.store.clone(), up.id.clone(), up.offset);
        let sniff = crate::sink::accept::SNIFF_BYTES;
        let done = blocking(move || s.finish(&id, len, sniff)).await?;
        let (loc, sniffed) = (done.location, crate::sink::accept::sniff(&done.head));
        up.detected_type = sniffed.map(|s| s.mime.to_string()).unwrap_or_default();
        let path = loc
            .path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        up.file.stored = Some((loc.key, path));
        up.file.bucket = loc.bucket;
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

    /// Writes the complete `parts`, in order, as the data of upload `up` (tus
    /// concatenation), hashing them; returns the new offset and hashes. Needs a store
    /// that reads partial data back.
    pub async fn concatenate(
        &self,
        up: &Upload,
        parts: &[Upload],
        mut hashes: Hashes,
        block: usize,
    ) -> Result<(u64, Hashes), Error> {
        let s = self.store.clone();
        let id = up.id.clone();
        let parts: Vec<(String, u64)> = parts.iter().map(|p| (p.id.clone(), p.offset)).collect();
        blocking(move || {
            let read = s
                .read_back()
                .ok_or_else(|| unsupported("reading partial data back"))?;
            let mut out = s.open_at(&id, 0)?;
            let mut at = 0;
            for (part, len) in &parts {
                let mut done = 0;
                while done < *len {
                    let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(block);
                    let chunk = read.read_at(part, done, want)?;
                    if chunk.is_empty() {
                        return Err(StoreError::Io(std::io::Error::other(
                            "a partial upload is shorter than its offset",
                        )));
                    }
                    hashes.update(&chunk);
                    out.write_all(&chunk)?;
                    done += chunk.len() as u64;
                }
                at += done;
            }
            out.sync()?;
            Ok((at, hashes))
        })
        .await
    }

    /// Appends a spooled chunk at the upload's offset, hashing it into the upload's
    /// running hashes; returns them. The caller saves the state.
    pub async fn append_spool(
        &self,
        up: &Upload,
        spool: Spool,
        block: usize,
    ) -> Result<Hashes, Error> {
        let (s, id, offset) = (self.store.clone(), up.id.clone(), up.offset);
        let mut hashes =
            Hashes::restore(&up.hashes).ok_or_else(|| Error::internal("damaged hash state"))?;
        blocking(move || {
            let mut dst = s.open_at(&id, offset)?;
            spool.read_blocks(block, &mut |b| {
                hashes.update(b);
                dst.write_all(b)
            })?;
            dst.sync()?;
            Ok(hashes)
        })
        .await
    }

    /// A scratch file for a chunk whose upload is known only once the whole request is
    /// read (see `spool`).
    pub fn spool(&self) -> Result<Spool, Error> {
        Ok(self.spools.create()?)
    }

    /// Removes what requests of an earlier run left half-written: spools and
    /// half-written state. Only for start-up, before any request runs.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        Ok(self.spools.sweep(std::time::Duration::ZERO)? + self.store.sweep()?)
    }

    /// Removes expired uploads and settled completions; returns how many.
    pub async fn collect(&self) -> Result<usize, Error> {
        let now = state::now();
        // Spools of requests that died with their process (`porter gc` may run beside
        // a live server: only old ones).
        if let Err(e) = self.spools.sweep(std::time::Duration::from_secs(86400)) {
            tracing::warn!(error = %e, "cannot sweep stale spools");
        }
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
        let (s, id, known) = (self.store.clone(), up.id.clone(), finished(&up));
        blocking(move || {
            let finished = if accepted {
                // An accepted file belongs to the app: only porter's record goes.
                None
            } else {
                // A move the state never learnt of (porter died between the two) left
                // the file where the app was never told of it: it goes too.
                known.or_else(|| s.finished(&id))
            };
            s.remove_if_idle(&id, finished.as_ref())
        })
        .await
    }
}

/// Where an upload's finished file is, as its state records it.
fn finished(up: &Upload) -> Option<Location> {
    let (key, path) = up.file.stored.clone()?;
    Some(Location {
        path: (!path.is_empty()).then(|| path.into()),
        key,
        bucket: up.file.bucket.clone(),
    })
}

/// The store cannot do `what` (a capability it lacks).
fn unsupported(what: &str) -> StoreError {
    StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("this store does not support {what}"),
    ))
}

fn random_writes(
    s: &dyn ResumableStore,
) -> Result<&dyn crate::store::resumable::RandomWrites, StoreError> {
    s.random_writes()
        .ok_or_else(|| unsupported("writing segments out of order"))
}

/// Progress under a resumable upload's own id (docs/guides/authorize-and-progress.md), for one request.
pub struct UploadProgress(Option<crate::progress::Tracker>);

impl UploadProgress {
    pub fn start(progress: &Arc<crate::progress::Registry>, up: &Upload) -> UploadProgress {
        UploadProgress(progress.start_at(&up.id, up.offset, up.length.unwrap_or(0)))
    }

    pub fn tracker(&self) -> Option<crate::progress::Tracker> {
        self.0.clone()
    }

    /// Done when the app accepted the file, an error when it refused, else paused.
    pub fn end(mut self, up: &Upload) {
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

/// The error for an upload id that does not exist (or was collected).
pub fn not_found() -> Error {
    Error::new(ErrorKind::NotFound, "no such upload")
}
