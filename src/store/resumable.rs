//! Where resumable uploads live, as the engine sees it (tusd's data store shape): a
//! small core every store has — state, in-order data, finishing, removal — and
//! optional capabilities a store may add. The engine asks for a capability and
//! derives what it offers from the answer (tus concatenation needs `ReadBack`), so no
//! protocol names a store.
//!
//! Methods block: the engine runs them off the async workers.

use crate::resumable::state::Upload;
use crate::sink::Writer;
use crate::store::{Location, StoreError};

/// A partial upload's data, open for writing.
pub trait DataFile: Writer {
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// A finished upload's data in its final place, and its first bytes (to sniff the type).
pub struct Finished {
    pub location: Location,
    pub head: Vec<u8>,
}

/// The core of a store of resumable uploads.
pub trait ResumableStore: Send + Sync + 'static {
    /// Records a new upload; an id that exists is an error.
    fn create(&self, up: &Upload) -> Result<(), StoreError>;
    fn load(&self, id: &str) -> Result<Option<Upload>, StoreError>;
    fn save(&self, up: &Upload) -> Result<(), StoreError>;
    /// Every upload id, for garbage collection.
    fn ids(&self) -> Result<Vec<String>, StoreError>;
    /// Opens the data for appending at `offset`, cutting off anything beyond it.
    fn open_at(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError>;
    /// Moves the complete data (`len` bytes) to its final place, once: a second call
    /// (a retry after a crash) finds it there. Returns it with its first `sniff` bytes.
    fn finish(&self, id: &str, len: u64, sniff: usize) -> Result<Finished, StoreError>;
    /// Where upload `id`'s finished file is, if it was moved there (possibly by a run
    /// that died before its state recorded the move).
    fn finished(&self, id: &str) -> Option<Location>;
    /// Deletes the data and the state (the finished file too, if `finished`).
    fn remove(&self, id: &str, finished: Option<&Location>) -> Result<(), StoreError>;
    /// Like `remove`, but only if no request (in any process) has the data open;
    /// returns whether it removed anything.
    fn remove_if_idle(&self, id: &str, finished: Option<&Location>) -> Result<bool, StoreError>;
    /// Removes half-written state: called once when `porter serve` starts, before it
    /// accepts, so none can be in use.
    fn sweep(&self) -> Result<usize, StoreError>;

    /// Partial data can be read back (tus concatenation).
    fn read_back(&self) -> Option<&dyn ReadBack> {
        None
    }
    /// Data can be written at any offset and gathered in order at the end
    /// (nginx-resumable segments).
    fn random_writes(&self) -> Option<&dyn RandomWrites> {
        None
    }
}

/// Capability: reading partial data back.
pub trait ReadBack {
    /// Reads up to `len` bytes at `offset`.
    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;
}

/// Capability: segments written anywhere, in any order, in parallel.
pub trait RandomWrites {
    /// Opens the data for writing one run of bytes starting at `offset`, keeping what
    /// is there.
    fn open_segment(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError>;
    /// Reads the first `len` bytes in order, in blocks, handing each to `visit`: for
    /// hashing data that arrived out of order. May lay them out for `finish` as it goes.
    fn gather(&self, id: &str, len: u64, block: usize, visit: Visit) -> Result<(), StoreError>;
}

/// What `gather` hands each block of data to, in order.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8]);

/// What a store can do beyond the core, as the protocols are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub read_back: bool,
    pub random_writes: bool,
}

impl Capabilities {
    pub fn of(store: &dyn ResumableStore) -> Capabilities {
        Capabilities {
            read_back: store.read_back().is_some(),
            random_writes: store.random_writes().is_some(),
        }
    }
}

/// Upload ids are 32 lowercase hex digits; anything else is refused before it is
/// used in a path or a key.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The error for an id that is not one.
pub fn bad_id() -> StoreError {
    StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "bad upload id",
    ))
}

impl Writer for Box<dyn DataFile> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        (**self).write_all(buf)
    }
}
