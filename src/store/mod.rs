//! Where upload bytes live (tusd's data stores): traits that the layers above talk to,
//! and one folder per store that implements them.
//!
//! * this module: finished files (`Store`, `PartFile`: multipart and raw uploads
//!   write here) and the `Objects` capability (finished files read back by key, for
//!   downloads);
//! * `resumable`: resumable uploads' state and data (`ResumableStore`, its core and
//!   capabilities);
//! * `locker`: per-upload leases across instances;
//! * `local/`, `s3/`, `memory/`: the stores; `redis`: the shared-state client.
//!
//! Store methods block: the sink and the engine call them from tokio's blocking pool,
//! in large batches, so I/O never stalls the async workers.

pub mod local;
pub mod locker;
pub mod memory;
pub mod redis;
pub mod resumable;
pub mod s3;

use std::io;
use std::path::PathBuf;
use uuid::Uuid;

pub use local::LocalStore;
pub use locker::BoxFuture;

/// Where a finished file lives, as the backend is told (docs/reference/metadata.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Absolute path (local storage), `None` for object stores.
    pub path: Option<PathBuf>,
    /// `ab/cd/<id>`: the path relative to `storage.root`, or the object key.
    pub key: String,
    /// The bucket (object stores), else empty.
    pub bucket: String,
}

/// Why a store operation failed: full storage is a 507, anything else a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage is full")]
    Full,
    #[error("storage failed: {0}")]
    Io(io::Error),
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::Full,
            _ => StoreError::Io(e),
        }
    }
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        use crate::error::{Error, ErrorKind};
        match e {
            StoreError::Full => {
                Error::new(ErrorKind::InsufficientStorage, "not enough storage space")
            }
            StoreError::Io(io) => {
                tracing::error!(error = %io, "storage failure");
                Error::internal("storage failure")
            }
        }
    }
}

/// A file committed to its final place whose app has not been told yet. Until it is,
/// a marker in `storage.temp`, locked while this lives, says so: if porter dies before
/// telling the app, the next start-up sweep (or `porter gc`) finds the marker unlocked
/// and deletes the file, which no one else knows about.
pub struct Unsent {
    marker: PathBuf,
    _lock: std::fs::File,
}

impl Unsent {
    pub fn new(marker: PathBuf, lock: std::fs::File) -> Unsent {
        Unsent {
            marker,
            _lock: lock,
        }
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// What `PartFile::commit` gives back.
pub struct Committed {
    pub location: Location,
    pub unsent: Option<Unsent>,
}

/// A finished file, deleted when dropped unless `keep` was called: whoever holds it
/// (even a task whose requester went away) cannot leave it behind by accident.
pub struct Stored {
    location: Location,
    store: std::sync::Arc<dyn Store>,
    keep: bool,
    unsent: Option<Unsent>,
}

impl Stored {
    pub fn new(committed: Committed, store: std::sync::Arc<dyn Store>) -> Stored {
        Stored {
            location: committed.location,
            store,
            keep: false,
            unsent: committed.unsent,
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The app is being told about the file now: from here on a crash leaves it to
    /// the app rather than to the sweep (a file the app may have accepted is never
    /// deleted behind its back).
    pub fn told(&mut self) {
        self.unsent = None;
    }

    /// The file now belongs to the app.
    pub fn keep(&mut self) {
        self.keep = true;
        self.told();
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = self.store.remove(&self.location)
        {
            tracing::error!(key = %self.location.key, error = %e, "cannot delete a stored file");
        }
    }
}

/// A store of uploaded files.
pub trait Store: Send + Sync + 'static {
    /// Opens a new, empty, locked partial file for upload `id`.
    fn create(&self, id: Uuid) -> Result<Box<dyn PartFile>, StoreError>;
    /// Deletes a finished file; a missing file is not an error.
    fn remove(&self, loc: &Location) -> io::Result<()>;
    /// Free bytes where new uploads land (`min_free` is checked against this).
    fn free_bytes(&self) -> io::Result<u64>;
    /// Removes partial files that no live upload holds; returns how many. Blocks (an
    /// object store's sweep makes requests): call it off the async workers.
    fn sweep(&self) -> io::Result<usize>;
    /// Whether creating, writing and committing a small file costs less than a trip to
    /// the blocking pool: local files that are not synced (a page-cache write and a
    /// rename, which nginx does on its event loop too). Never for a store that waits on
    /// a device or the network.
    fn quick_small_files(&self) -> bool {
        false
    }
}

/// A file being written. Dropping it without `commit` deletes it.
pub trait PartFile: Send {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError>;
    /// Makes the bytes durable (per config) and moves them to their final place.
    fn commit(self: Box<Self>) -> Result<Committed, StoreError>;
}

/// A finished object's size and validators.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    pub modified: Option<std::time::SystemTime>,
}

/// Capability of a store of finished files: they can be read back by key
/// (`[[internal]] store = "s3"` downloads).
pub trait Objects: Send + Sync + 'static {
    /// Whether `key` is one of this store's (under its prefix): no other is served.
    fn serves(&self, key: &str) -> bool;
    /// The object's size and validators; `None` when there is no such object.
    fn info<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, String>>;
    /// The bytes `range` (inclusive) of `key`, streaming.
    fn read<'a>(
        &'a self,
        key: &'a str,
        range: (u64, u64),
    ) -> BoxFuture<'a, Result<crate::http::Body, crate::http::BoxError>>;
    /// Whether the store answers now (`/readyz`).
    fn probe(&self) -> BoxFuture<'_, Result<(), String>>;
}
