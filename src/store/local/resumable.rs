//! Resumable uploads on local disk.
//!
//! Layout: `storage.temp/resumable/<id>.data` (data) and `<id>.json` (state).
//! Durability rule: data is fsync'd before a state that counts it is written, and the
//! state is replaced atomically (write, fsync, rename), so after a crash the state's
//! offset never claims bytes that are not on disk. Bytes past the offset (written but
//! never acknowledged) are cut off when the upload is next opened.

use super::LocalStore;
use crate::resumable::state::Upload;
use crate::sink::Writer;
use crate::store::resumable::{
    DataFile, Finished, RandomWrites, ReadBack, ResumableStore, Visit, bad_id, valid_id,
};
use crate::store::{Location, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

pub struct LocalResumable {
    dir: PathBuf,
    files: LocalStore,
}

struct LocalData(File);

impl Writer for LocalData {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        Ok(self.0.write_all(buf)?)
    }
}

impl DataFile for LocalData {
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.0.sync_data()?)
    }
}

impl LocalResumable {
    pub fn open(files: LocalStore) -> io::Result<LocalResumable> {
        let cfg = files.settings();
        let dir = cfg.temp.join("resumable");
        super::ensure_dir(&dir, cfg.dir_mode)?;
        Ok(LocalResumable { dir, files })
    }

    fn data(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn state(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The data file, opened for writing; created when `create` (an upload whose state
    /// exists but whose data a crash kept from being made).
    fn data_file(&self, id: &str, create: bool) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(create)
            .mode(self.files.settings().file_mode)
            .open(self.data(id))
    }

    fn check(id: &str) -> Result<(), StoreError> {
        if valid_id(id) { Ok(()) } else { Err(bad_id()) }
    }

    /// The first `len` bytes of the finished file at `path`.
    /// The first `len` bytes of the finished file at `path`.
    fn head(path: &std::path::Path, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(len);
        File::open(path)?.take(len as u64).read_to_end(&mut out)?;
        Ok(out)
    }
}

impl ResumableStore for LocalResumable {
    /// State first, then data: a collector (`porter gc`, in another process too)
    /// deletes data files that have no state, so data must never exist without it.
    /// A crash in between leaves a state without data, which the first write creates.
    fn create(&self, up: &Upload) -> Result<(), StoreError> {
        Self::check(&up.id)?;
        if self.state(&up.id).exists() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists).into());
        }
        self.save(up)?;
        let f = self.data_file(&up.id, true)?;
        f.sync_all()?;
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        match fs::read(self.state(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, up: &Upload) -> Result<(), StoreError> {
        Self::check(&up.id)?;
        let tmp = self
            .dir
            .join(format!("{}.{}.tmp", up.id, uuid::Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec(up).map_err(|e| StoreError::Io(io::Error::other(e)))?;
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.state(&up.id))?;
        super::sync_dir(&self.dir)?;
        Ok(())
    }

    fn open_at(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        Self::check(id)?;
        let mut f = self.data_file(id, offset == 0)?;
        f.lock_shared()?;
        if f.metadata()?.len() != offset {
            f.set_len(offset)?;
        }
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(LocalData(f)))
    }

    fn finish(&self, id: &str, _len: u64, sniff: usize) -> Result<Finished, StoreError> {
        Self::check(id)?;
        let path = self.data(id);
        // Moved before a crash, but the state never learnt it: the move is done.
        let location = match self.files.existing(id) {
            Some(loc) if !path.exists() => loc,
            _ => self.files.adopt(&File::open(&path)?, &path, id)?,
        };
        let head = match &location.path {
            Some(p) => Self::head(p, sniff)?,
            None => Vec::new(),
        };
        Ok(Finished { location, head })
    }

    fn remove(&self, id: &str, finished: Option<&Location>) -> Result<(), StoreError> {
        Self::check(id)?;
        // State first: a crash in between leaves data without state (swept later),
        // never a state that claims data that is gone.
        for p in [self.state(id), self.data(id)] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if let Some(loc) = finished {
            crate::store::Store::remove(&self.files, loc)?;
        }
        Ok(())
    }

    fn remove_if_idle(&self, id: &str, finished: Option<&Location>) -> Result<bool, StoreError> {
        Self::check(id)?;
        let _held = match File::open(self.data(id)) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Some(f),
                Err(_) => return Ok(false),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        self.remove(id, finished)?;
        Ok(true)
    }

    fn finished(&self, id: &str) -> Option<Location> {
        if !valid_id(id) {
            return None;
        }
        self.files.existing(id)
    }

    fn sweep(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for e in fs::read_dir(&self.dir)? {
            let path = e?.path();
            if path.to_string_lossy().ends_with(".tmp") {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let day = std::time::Duration::from_secs(86400);
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Half-written state of requests that died with the process.
            let stale = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if stale && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
            // Data whose state is gone (a crash during removal), if no one holds it.
            if let Some(id) = name.strip_suffix(".data")
                && !self.state(id).exists()
                && let Ok(f) = File::open(e.path())
                && f.try_lock().is_ok()
            {
                let _ = fs::remove_file(e.path());
            }
            if let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id)) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }

    fn read_back(&self) -> Option<&dyn ReadBack> {
        Some(self)
    }

    fn random_writes(&self) -> Option<&dyn RandomWrites> {
        Some(self)
    }
}

impl ReadBack for LocalResumable {
    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        Self::check(id)?;
        let f = File::open(self.data(id))?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f.read_at(&mut buf[got..], offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }
}

impl RandomWrites for LocalResumable {
    fn open_segment(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        Self::check(id)?;
        let mut f = self.data_file(id, true)?;
        // Shared: parallel segments write together; `porter gc` needs it exclusive.
        f.lock_shared()?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(LocalData(f)))
    }

    fn gather(&self, id: &str, len: u64, block: usize, visit: Visit) -> Result<(), StoreError> {
        let mut at = 0;
        while at < len {
            let chunk = self.read_at(id, at, block.min((len - at) as usize))?;
            if chunk.is_empty() {
                return Err(StoreError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            visit(&chunk);
            at += chunk.len() as u64;
        }
        Ok(())
    }
}
