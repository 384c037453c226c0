//! Scratch files in `storage.temp/resumable`: a chunk whose upload is known only once
//! its whole request is read (django-chunked-upload names the upload after the file)
//! is spooled here first, whatever the store. Protocols get a `Spool` from the engine
//! and never touch the file system.

use crate::sink::Writer;
use crate::store::StoreError;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".chunk";

/// Where spools go.
pub struct Spools {
    dir: PathBuf,
    file_mode: u32,
}

impl Spools {
    pub fn new(dir: PathBuf, file_mode: u32) -> Spools {
        Spools { dir, file_mode }
    }

    /// A new, empty spool, deleted when dropped.
    pub fn create(&self) -> Result<Spool, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file_mode)
            .open(&path)?;
        Ok(Spool {
            path,
            file: Some(file),
            len: 0,
        })
    }

    /// Removes spools older than `age` (all of them, with zero: at start-up, before
    /// any request runs); returns how many.
    pub fn sweep(&self, age: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= age);
            if old && e.file_name().to_string_lossy().ends_with(SUFFIX) {
                fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A scratch file being written, then read back once; deleted when dropped.
pub struct Spool {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl Spool {
    /// Bytes written.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the spool from its start, `block` bytes at a time.
    pub(super) fn read_blocks(
        &self,
        block: usize,
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        read_blocks(&self.path, self.len, block, visit)
    }
}

fn read_blocks(
    path: &Path,
    len: u64,
    block: usize,
    visit: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut src = File::open(path)?;
    let mut buf = vec![0u8; block.max(1)];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(StoreError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        visit(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

impl Writer for Spool {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Io(io::Error::other("the spool is closed")))?;
        file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.path);
    }
}
