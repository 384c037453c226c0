//! Resumable uploads in memory: the core and both capabilities.

use super::MemoryStore;
use crate::resumable::state::Upload;
use crate::sink::Writer;
use crate::store::resumable::{
    DataFile, Finished, RandomWrites, ReadBack, ResumableStore, Visit, bad_id, valid_id,
};
use crate::store::{Location, StoreError};
use std::io;
use std::sync::Arc;

/// Bytes written at `at` and onwards, into the upload's data when synced.
struct MemoryData {
    store: MemoryStore,
    id: String,
    at: u64,
    pending: Vec<u8>,
}

impl Writer for MemoryData {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.pending.extend_from_slice(buf);
        Ok(())
    }
}

impl DataFile for MemoryData {
    fn sync(&mut self) -> Result<(), StoreError> {
        let mut inner = self.store.inner()?;
        let data = inner.data.entry(self.id.clone()).or_default();
        let start = usize::try_from(self.at).map_err(io::Error::other)?;
        let end = start
            .checked_add(self.pending.len())
            .ok_or_else(|| io::Error::other("offset past the address space"))?;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(&self.pending);
        self.at += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

fn checked(id: &str) -> Result<(), StoreError> {
    if valid_id(id) { Ok(()) } else { Err(bad_id()) }
}

fn to_json(up: &Upload) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(up).map_err(|e| StoreError::Io(io::Error::other(e)))
}

impl MemoryStore {
    fn data_file(&self, id: &str, at: u64) -> Box<dyn DataFile> {
        Box::new(MemoryData {
            store: self.clone(),
            id: id.to_string(),
            at,
            pending: Vec::new(),
        })
    }
}

impl ResumableStore for MemoryStore {
    fn create(&self, up: &Upload) -> Result<(), StoreError> {
        checked(&up.id)?;
        let mut inner = self.inner()?;
        if inner.states.contains_key(&up.id) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists).into());
        }
        inner.states.insert(up.id.clone(), to_json(up)?);
        inner.data.insert(up.id.clone(), Vec::new());
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let inner = self.inner()?;
        let Some(json) = inner.states.get(id) else {
            return Ok(None);
        };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn save(&self, up: &Upload) -> Result<(), StoreError> {
        checked(&up.id)?;
        let json = to_json(up)?;
        self.inner()?.states.insert(up.id.clone(), json);
        Ok(())
    }

    fn ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.inner()?.states.keys().cloned().collect())
    }

    fn open_at(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        checked(id)?;
        let cut = usize::try_from(offset).map_err(io::Error::other)?;
        self.inner()?
            .data
            .entry(id.to_string())
            .or_default()
            .truncate(cut);
        Ok(self.data_file(id, offset))
    }

    fn finish(&self, id: &str, len: u64, sniff: usize) -> Result<Finished, StoreError> {
        checked(id)?;
        let location = Self::location(id);
        let mut inner = self.inner()?;
        let file = match inner.data.remove(id) {
            Some(mut data) => {
                data.truncate(usize::try_from(len).map_err(io::Error::other)?);
                let file = Arc::new(data);
                inner.files.insert(location.key.clone(), file.clone());
                file
            }
            // Moved by an earlier call.
            None => inner
                .files
                .get(&location.key)
                .cloned()
                .ok_or_else(|| StoreError::Io(io::Error::from(io::ErrorKind::NotFound)))?,
        };
        let head = file[..sniff.min(file.len())].to_vec();
        Ok(Finished { location, head })
    }

    fn finished(&self, id: &str) -> Option<Location> {
        let location = Self::location(id);
        self.file(&location.key).map(|_| location)
    }

    fn remove(&self, id: &str, finished: Option<&Location>) -> Result<(), StoreError> {
        checked(id)?;
        let mut inner = self.inner()?;
        inner.states.remove(id);
        inner.data.remove(id);
        if let Some(loc) = finished {
            inner.files.remove(&loc.key);
        }
        Ok(())
    }

    /// Every write happens under the engine's lock, which the collector holds too.
    fn remove_if_idle(&self, id: &str, finished: Option<&Location>) -> Result<bool, StoreError> {
        self.remove(id, finished)?;
        Ok(true)
    }

    fn sweep(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn read_back(&self) -> Option<&dyn ReadBack> {
        Some(self)
    }

    fn random_writes(&self) -> Option<&dyn RandomWrites> {
        Some(self)
    }
}

impl ReadBack for MemoryStore {
    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let inner = self.inner()?;
        let data = inner.data.get(id).map_or(&[][..], Vec::as_slice);
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }
}

impl RandomWrites for MemoryStore {
    fn open_segment(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        checked(id)?;
        Ok(self.data_file(id, offset))
    }

    fn gather(&self, id: &str, len: u64, block: usize, visit: Visit) -> Result<(), StoreError> {
        let data = self.read_at(id, 0, usize::try_from(len).map_err(io::Error::other)?)?;
        if (data.len() as u64) < len {
            return Err(StoreError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        data.chunks(block.max(1)).for_each(visit);
        Ok(())
    }
}
