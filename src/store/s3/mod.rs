//! Finished files as objects in an S3-compatible store (docs/guides/scaling-out.md), written the way
//! tusd's s3store writes them: the bytes are spooled to `storage.temp` one part at a
//! time and each full part is uploaded while the next one fills, so an upload holds at
//! most two parts on local disk and none in memory. A file smaller than one part is a
//! single PUT; a larger one is an S3 multipart upload, completed on commit, so the object
//! appears under its final key only when it is whole. An upload that fails is aborted.
//!
//! The store's methods block (the sink calls them on tokio's blocking pool); the S3
//! requests they make run on the runtime, reached through the handle taken at start.

pub mod client;
mod objects;
mod resumable;
mod xml;

pub use resumable::S3Resumable;

use super::{Committed, Location, PartFile, Store, StoreError, Unsent};
use client::S3;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use uuid::Uuid;

const SPOOL_SUFFIX: &str = ".s3spool";
const UNSENT_SUFFIX: &str = ".s3unsent";
/// "This multipart upload is in progress here": held locked while its upload lives,
/// so `porter gc` aborts the multipart uploads of a process that was killed.
const UPLOAD_SUFFIX: &str = ".s3upload";

/// What every part file of the store shares.
struct Shared {
    s3: Arc<S3>,
    rt: Handle,
    temp: PathBuf,
    prefix: String,
    part_size: u64,
    /// Read size when streaming a spooled part to S3.
    chunk: usize,
    file_mode: u32,
}

/// A store of finished files in one S3 bucket.
#[derive(Clone)]
pub struct S3Store(Arc<Shared>);

/// How to reach the bucket and shape its keys.
pub struct Settings {
    pub s3: client::Settings,
    pub prefix: String,
    pub part_size: u64,
}

impl S3Store {
    /// Opens the store; must be called on the runtime (it keeps its handle).
    pub fn open(
        storage: &crate::config::Storage,
        settings: &Settings,
        chunk: usize,
    ) -> io::Result<S3Store> {
        super::local::ensure_dir(&storage.temp, storage.dir_mode)?;
        let s3 = S3::new(&settings.s3).map_err(io::Error::other)?;
        Ok(S3Store(Arc::new(Shared {
            s3: Arc::new(s3),
            rt: Handle::current(),
            temp: storage.temp.clone(),
            prefix: settings.prefix.clone(),
            part_size: settings.part_size,
            chunk: chunk.max(64 << 10),
            file_mode: storage.file_mode,
        })))
    }

    pub fn client(&self) -> Arc<S3> {
        self.0.s3.clone()
    }

    /// `prefix` + `ab/cd/<id>`: a finished file.
    pub(crate) fn key(&self, id: &str) -> String {
        format!("{}{}/{}/{id}", self.0.prefix, &id[0..2], &id[2..4])
    }

    /// `prefix` + `partial/<id>/`: where a resumable upload keeps its pending objects
    /// (never under a finished file's key).
    pub(crate) fn partial_prefix(&self, id: &str) -> String {
        format!("{}partial/{id}/", self.0.prefix)
    }

    pub(crate) fn part_size(&self) -> u64 {
        self.0.part_size
    }

    pub(crate) fn chunk(&self) -> usize {
        self.0.chunk
    }

    pub(crate) fn bucket(&self) -> String {
        self.0.s3.bucket().to_string()
    }

    /// Runs an S3 request to its end; for the blocking store methods.
    pub(crate) fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.0.rt.block_on(f)
    }

    /// A new, locked spool file in `storage.temp` (swept by `sweep` once unlocked).
    pub(crate) fn spool(&self, name: &str) -> io::Result<Spool> {
        let path = self
            .0
            .temp
            .join(format!("{name}.{}{SPOOL_SUFFIX}", Uuid::new_v4().simple()));
        let file = create_locked(&path, self.0.file_mode)?;
        Ok(Spool { path, file, len: 0 })
    }

    /// Streams `key`'s bytes `range` (inclusive) to `f`, block by block as they
    /// arrive; returns how many there were.
    pub(crate) fn fetch(
        &self,
        key: &str,
        range: (u64, u64),
        f: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        use http_body_util::BodyExt;
        let s3 = self.0.s3.clone();
        let mut body = self.block_on(s3.get(key, Some(range)))?;
        let mut got = 0;
        while let Some(frame) = self.block_on(body.frame()) {
            let frame = frame.map_err(|e| StoreError::Io(io::Error::other(e)))?;
            if let Ok(data) = frame.into_data() {
                f(&data)?;
                got += data.len() as u64;
            }
        }
        Ok(got)
    }

    /// Runs an S3 request in the background: deleting a file must never stall the
    /// caller, which may be an async worker dropping a failed upload.
    fn spawn<F>(&self, what: &'static str, f: F)
    where
        F: std::future::Future<Output = Result<(), client::S3Error>> + Send + 'static,
    {
        self.0.rt.spawn(async move {
            if let Err(e) = f.await {
                tracing::error!(error = %e, "S3 {what} failed");
            }
        });
    }

    /// Downloads `key`'s bytes `range` (inclusive) to the end of `spool`.
    pub(crate) fn fetch_into(
        &self,
        key: &str,
        range: (u64, u64),
        spool: &mut Spool,
    ) -> Result<u64, StoreError> {
        self.fetch(key, range, &mut |data| {
            spool.file.write_all(data)?;
            spool.len += data.len() as u64;
            Ok(())
        })
    }
}

impl Store for S3Store {
    fn create(&self, id: Uuid) -> Result<Box<dyn PartFile>, StoreError> {
        let id = id.simple().to_string();
        Ok(Box::new(S3Part {
            key: self.key(&id),
            store: self.clone(),
            id,
            spool: None,
            upload: None,
            marker: None,
            etags: Vec::new(),
            inflight: None,
            done: false,
        }))
    }

    fn remove(&self, loc: &Location) -> io::Result<()> {
        let (s3, key) = (self.0.s3.clone(), loc.key.clone());
        self.spawn("delete", async move { s3.delete(&key).await });
        Ok(())
    }

    fn free_bytes(&self) -> io::Result<u64> {
        super::local::free_bytes(&self.0.temp)
    }

    /// Spool files no live upload holds, and objects whose app was never told of them
    /// (their instance died between completing and telling). Blocks: call it off the
    /// async workers.
    fn sweep(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.0.temp)? {
            let path = entry?.path();
            let name = path.to_string_lossy().into_owned();
            if ![SPOOL_SUFFIX, UNSENT_SUFFIX, UPLOAD_SUFFIX]
                .iter()
                .any(|s| name.ends_with(s))
            {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            if name.ends_with(UNSENT_SUFFIX) {
                let key = fs::read_to_string(&path)?;
                let s3 = self.0.s3.clone();
                self.0
                    .rt
                    .block_on(async move { s3.delete(key.trim()).await })
                    .map_err(io::Error::other)?;
            }
            if name.ends_with(UPLOAD_SUFFIX) {
                let text = fs::read_to_string(&path)?;
                if let Some((key, upload)) = text.trim().split_once('\n') {
                    let s3 = self.0.s3.clone();
                    self.0
                        .rt
                        .block_on(async move { s3.abort_multipart(key, upload).await })
                        .map_err(io::Error::other)?;
                }
            }
            fs::remove_file(&path)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A part being filled on local disk; deleted when dropped.
pub(crate) struct Spool {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) len: u64,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A locked scratch file that is new (`O_EXCL`), so no one else can be using it.
fn create_locked(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.try_lock().map_err(io::Error::other)?;
    Ok(file)
}

/// An upload on its way into S3.
struct S3Part {
    store: S3Store,
    id: String,
    key: String,
    spool: Option<Spool>,
    /// The multipart upload, once the file outgrew one part.
    upload: Option<String>,
    /// Its marker (`UPLOAD_SUFFIX`), held until the upload completes or is aborted.
    marker: Option<Spool>,
    etags: Vec<String>,
    /// The part being uploaded while the next one fills.
    inflight: Option<JoinHandle<Result<String, client::S3Error>>>,
    done: bool,
}

impl S3Part {
    fn shared(&self) -> &Shared {
        &self.store.0
    }

    fn spool(&mut self) -> Result<&mut Spool, StoreError> {
        if self.spool.is_none() {
            let n = self.etags.len() + usize::from(self.inflight.is_some()) + 1;
            let path = self
                .shared()
                .temp
                .join(format!("{}.{n}{SPOOL_SUFFIX}", self.id));
            let file = create_locked(&path, self.shared().file_mode)?;
            self.spool = Some(Spool { path, file, len: 0 });
        }
        self.spool
            .as_mut()
            .ok_or_else(|| StoreError::Io(io::Error::other("no spool")))
    }

    /// Waits for the part in flight and records its ETag.
    fn wait_part(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.inflight.take() {
            let etag = self
                .shared()
                .rt
                .block_on(task)
                .map_err(|e| StoreError::Io(io::Error::other(e.to_string())))??;
            self.etags.push(etag);
        }
        Ok(())
    }

    /// Starts uploading the full spool as the next part.
    fn ship(&mut self) -> Result<(), StoreError> {
        let Some(spool) = self.spool.take() else {
            return Ok(());
        };
        let s = self.store.0.clone();
        if self.upload.is_none() {
            let key = self.key.clone();
            let s3 = s.s3.clone();
            let upload =
                s.rt.block_on(async move { s3.create_multipart(&key).await })?;
            self.marker = Some(self.mark(&upload)?);
            self.upload = Some(upload);
        }
        self.wait_part()?;
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| {
                StoreError::Io(io::Error::other(
                    "more than 10 000 S3 parts: raise part_size",
                ))
            })?;
        let (key, upload) = (self.key.clone(), self.upload.clone().unwrap_or_default());
        let (s3, chunk) = (s.s3.clone(), s.chunk);
        self.inflight = Some(s.rt.spawn(async move {
            let r = s3
                .upload_part(&key, &upload, number, &spool.path, spool.len, chunk)
                .await;
            drop(spool);
            r
        }));
        Ok(())
    }

    /// A marker that says "this multipart upload is alive in this process".
    fn mark(&self, upload: &str) -> Result<Spool, StoreError> {
        let path = self
            .shared()
            .temp
            .join(format!("{}{UPLOAD_SUFFIX}", self.id));
        let mut file = create_locked(&path, self.shared().file_mode)?;
        file.write_all(format!("{}\n{upload}", self.key).as_bytes())?;
        file.sync_all()?;
        Ok(Spool { path, file, len: 0 })
    }

    /// A marker that says "this object exists but its app has not been told".
    fn unsent(&self) -> Result<Unsent, StoreError> {
        let marker = self
            .shared()
            .temp
            .join(format!("{}{UNSENT_SUFFIX}", self.id));
        let mut file = create_locked(&marker, self.shared().file_mode)?;
        file.write_all(self.key.as_bytes())?;
        file.sync_all()?;
        Ok(Unsent::new(marker, file))
    }
}

impl PartFile for S3Part {
    fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StoreError> {
        let part_size = self.shared().part_size;
        while !buf.is_empty() {
            let spool = self.spool()?;
            let n = ((part_size - spool.len) as usize).min(buf.len());
            spool.file.write_all(&buf[..n])?;
            spool.len += n as u64;
            buf = &buf[n..];
            if spool.len == part_size {
                self.ship()?;
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<Committed, StoreError> {
        let unsent = self.unsent()?;
        let s = self.store.0.clone();
        let key = self.key.clone();
        if self.upload.is_none() {
            self.spool()?;
            let spool = self.spool.take();
            let s3 = s.s3.clone();
            let (path, len) = spool
                .as_ref()
                .map(|sp| (sp.path.clone(), sp.len))
                .unwrap_or_default();
            let (k, chunk) = (key.clone(), s.chunk);
            s.rt.block_on(async move { s3.put_file(&k, &path, len, chunk).await })?;
            drop(spool);
        } else {
            if self.spool.as_ref().is_some_and(|sp| sp.len > 0) {
                self.ship()?;
            }
            self.wait_part()?;
            let (s3, upload, etags) = (
                s.s3.clone(),
                self.upload.clone().unwrap_or_default(),
                self.etags.clone(),
            );
            let k = key.clone();
            s.rt.block_on(async move { s3.complete_multipart(&k, &upload, &etags).await })?;
        }
        self.done = true;
        Ok(Committed {
            location: Location {
                path: None,
                key,
                bucket: s.s3.bucket().to_string(),
            },
            unsent: Some(unsent),
        })
    }
}

impl Drop for S3Part {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inflight = self.inflight.take();
        if let Some(upload) = self.upload.take() {
            let (s3, key) = (self.shared().s3.clone(), self.key.clone());
            // The marker goes only once the abort is done.
            let marker = self.marker.take();
            self.store.spawn("abort of a multipart upload", async move {
                if let Some(t) = inflight {
                    let _ = t.await;
                }
                let r = s3.abort_multipart(&key, &upload).await;
                drop(marker);
                r
            });
        }
    }
}
