//! A store that keeps everything in memory: finished files, resumable state and data.
//! It loses all of it when the process ends, so porter never opens one from a config;
//! tests use it to run the protocols without a disk, and it shows what a store is:
//! this folder (finished files here, resumable uploads in `resumable.rs`) and the line
//! in `app::storage` that picks it.

mod resumable;

use super::{BoxFuture, Committed, Location, ObjectInfo, Objects, PartFile, Store, StoreError};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// Everything the store holds, shared by its clones.
#[derive(Default)]
struct Inner {
    /// Finished files, by key.
    files: HashMap<String, Arc<Vec<u8>>>,
    /// Resumable uploads' state (as JSON, the way the other stores keep it) and data.
    states: HashMap<String, Vec<u8>>,
    data: HashMap<String, Vec<u8>>,
}

/// An in-memory store; clones share their contents.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl MemoryStore {
    fn inner(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError::Io(io::Error::other("the memory store is poisoned")))
    }

    /// The finished file `key`, if there is one.
    pub fn file(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.inner().ok()?.files.get(key).cloned()
    }

    /// `ab/cd/<id>`, as the other stores name finished files.
    fn key(id: &str) -> String {
        format!("{}/{}/{id}", &id[0..2], &id[2..4])
    }

    fn location(id: &str) -> Location {
        Location {
            path: None,
            key: Self::key(id),
            bucket: String::new(),
        }
    }
}

/// A file being written: bytes in a buffer until `commit` files them.
struct MemoryPart {
    store: MemoryStore,
    id: String,
    bytes: Vec<u8>,
}

impl PartFile for MemoryPart {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<Committed, StoreError> {
        let location = MemoryStore::location(&self.id);
        let bytes = Arc::new(self.bytes);
        self.store
            .inner()?
            .files
            .insert(location.key.clone(), bytes);
        Ok(Committed {
            location,
            unsent: None,
        })
    }
}

impl Store for MemoryStore {
    fn quick_small_files(&self) -> bool {
        true
    }

    fn create(&self, id: Uuid) -> Result<Box<dyn PartFile>, StoreError> {
        Ok(Box::new(MemoryPart {
            store: self.clone(),
            id: id.simple().to_string(),
            bytes: Vec::new(),
        }))
    }

    fn remove(&self, loc: &Location) -> io::Result<()> {
        if let Ok(mut inner) = self.0.lock() {
            inner.files.remove(&loc.key);
        }
        Ok(())
    }

    fn free_bytes(&self) -> io::Result<u64> {
        Ok(u64::MAX)
    }

    fn sweep(&self) -> io::Result<usize> {
        Ok(0)
    }
}

impl Objects for MemoryStore {
    fn serves(&self, key: &str) -> bool {
        self.file(key).is_some()
    }

    fn info<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, String>> {
        let info = self.file(key).map(|f| ObjectInfo {
            size: f.len() as u64,
            etag: None,
            modified: None,
        });
        Box::pin(async move { Ok(info) })
    }

    fn read<'a>(
        &'a self,
        key: &'a str,
        (first, last): (u64, u64),
    ) -> BoxFuture<'a, Result<crate::http::Body, crate::http::BoxError>> {
        let file = self.file(key);
        Box::pin(async move {
            let file = file.ok_or("no such object")?;
            let end = usize::try_from(last.saturating_add(1))?.min(file.len());
            let start = usize::try_from(first)?.min(end);
            Ok(crate::http::full(bytes::Bytes::copy_from_slice(
                &file[start..end],
            )))
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
