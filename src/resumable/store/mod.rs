//! Where resumable uploads live: a trait, so the engine does not care (tusd's data
//! stores), and two implementations:
//!
//! * `local`: data and state as files under `storage.temp` (one machine);
//! * `shared`: data in the S3 bucket, state in Redis (SPEC §9: many instances).

mod local;
mod shared;

pub use local::LocalResumable;
pub use shared::SharedResumable;

use super::state::Upload;
use crate::sink::Writer;
use crate::store::{Location, StoreError};
use std::path::PathBuf;

/// A partial upload's data, open for writing.
pub trait DataFile: Writer {
    /// Writes at an absolute position (segments that arrive out of order).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), StoreError>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// A store of resumable uploads. Methods block: the engine runs them off the workers.
pub trait ResumableStore: Send + Sync + 'static {
    fn create(&self, up: &Upload) -> Result<(), StoreError>;
    fn load(&self, id: &str) -> Result<Option<Upload>, StoreError>;
    fn save(&self, up: &Upload) -> Result<(), StoreError>;
    /// Opens the data for appending at `offset`, cutting off anything beyond it.
    fn open_at(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError>;
    /// Opens the data for writing anywhere, keeping what is there.
    fn open_random(&self, id: &str) -> Result<Box<dyn DataFile>, StoreError>;
    /// Reads up to `len` bytes at `offset` (tus concatenation, where `concatenates`).
    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;
    /// Reads the first `len` bytes in order, in blocks, handing each to `visit`: for
    /// hashing data that arrived out of order.
    fn gather(
        &self,
        id: &str,
        len: u64,
        block: usize,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError>;
    /// Moves the complete data (`len` bytes) to its final place.
    fn commit(&self, id: &str, len: u64) -> Result<Location, StoreError>;
    /// The first `len` bytes of the finished file (at `path`, if local), to sniff its type.
    fn head(&self, id: &str, path: &str, len: usize) -> Result<Vec<u8>, StoreError>;
    /// Whether partial data can be read back, as tus concatenation needs.
    fn concatenates(&self) -> bool {
        true
    }
    /// Deletes the data and the state (the finished file too, if `stored` is given).
    fn remove(&self, id: &str, stored: Option<&str>) -> Result<(), StoreError>;
    /// Like `remove`, but only if no request (in any process) has the data open;
    /// returns whether it removed anything. Also drops stale scratch files.
    fn remove_if_idle(&self, id: &str, stored: Option<&str>) -> Result<bool, StoreError>;
    /// Every upload id, for garbage collection.
    fn ids(&self) -> Result<Vec<String>, StoreError>;
    /// A local path for scratch data named `name`.
    fn scratch(&self, name: &str) -> PathBuf;
    /// Where upload `id`'s finished file is, if it was moved there (possibly by a run
    /// that died before its state recorded the move).
    fn committed(&self, id: &str) -> Option<String>;
    /// Removes every scratch file and half-written state: called once when `porter
    /// serve` starts, before it accepts, so none can be in use. (`porter gc`, which may
    /// run beside a live server, leaves them until they are a day old.)
    fn sweep_scratch(&self) -> Result<usize, StoreError>;
}

/// Upload ids are 32 lowercase hex digits; anything else is refused before it is
/// used in a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Writer for Box<dyn DataFile> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        (**self).write_all(buf)
    }
}
