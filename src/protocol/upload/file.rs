//! One file of an upload on its way in: named, type-checked, size-capped, sniffed,
//! and streamed through the sink into the store.

use crate::app::App;
use crate::backend::metadata::FileMeta;
use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::http::names::{safe_file_name, split_content_type};
use crate::sink::Sink;
use crate::sink::accept::{self, SNIFF_BYTES, Sniffed};
use crate::store::Stored;
use bytes::Bytes;
use uuid::Uuid;

/// A file being received.
pub struct FileReceiver<'r> {
    route: &'r UploadRoute,
    meta: FileMeta,
    sink: Sink,
    /// The first bytes, kept for the sniffer until it has enough.
    head: Vec<u8>,
    sniffed: Option<Option<Sniffed>>,
}

impl<'r> FileReceiver<'r> {
    /// Checks the name against `accept` and opens the sink. `filename` is the client's.
    pub async fn start(
        app: &App,
        route: &'r UploadRoute,
        field: &str,
        filename: &str,
        content_type: Option<&str>,
    ) -> Result<FileReceiver<'r>, Error> {
        let name = safe_file_name(filename);
        let (content_type, charset) = split_content_type(content_type);
        accept::check_name(&route.accept, &name)
            .map_err(|m| Error::new(ErrorKind::UnsupportedType, m).with_file(&name))?;
        let id = Uuid::new_v4();
        crate::http::stats::RequestStats::note_upload_id(&id.to_string());
        let sink = Sink::open(
            app.store.clone(),
            id,
            &route.hashes,
            app.config.limits.buffer,
        );
        Ok(FileReceiver {
            route,
            meta: FileMeta {
                field: field.to_string(),
                name,
                content_type,
                charset,
                detected_type: String::new(),
                path: String::new(),
                key: String::new(),
                bucket: String::new(),
                id: id.to_string(),
                size: 0,
                hashes: Vec::new(),
            },
            sink,
            head: Vec::new(),
            sniffed: None,
        })
    }

    pub async fn push(&mut self, data: Bytes) -> Result<(), Error> {
        if self.sink.size() + data.len() as u64 > self.route.max_file_size {
            return Err(Error::too_large(format!(
                "the file is larger than {} bytes",
                self.route.max_file_size
            ))
            .with_file(&self.meta.name));
        }
        if self.sniffed.is_none() {
            let want = SNIFF_BYTES - self.head.len();
            self.head.extend_from_slice(&data[..want.min(data.len())]);
            if self.head.len() >= SNIFF_BYTES {
                self.check_type()?;
            }
        }
        self.sink
            .write(data)
            .await
            .map_err(|e| Error::from(e).with_file(&self.meta.name))
    }

    fn check_type(&mut self) -> Result<(), Error> {
        let sniffed = accept::sniff(&self.head);
        self.sniffed = Some(sniffed);
        self.head = Vec::new();
        self.meta.detected_type = sniffed.map(|s| s.mime.to_string()).unwrap_or_default();
        accept::check_sniffed(&self.route.accept, &self.meta.name, sniffed)
            .map_err(|m| Error::new(ErrorKind::UnsupportedType, m).with_file(&self.meta.name))
    }

    /// Completes the file: it is durable and in its final place when this returns.
    pub async fn finish(mut self) -> Result<StoredFile, Error> {
        if self.sniffed.is_none() {
            self.check_type()?;
        }
        let name = self.meta.name.clone();
        let done = self
            .sink
            .finish()
            .await
            .map_err(|e| Error::from(e).with_file(&name))?;
        let mut meta = self.meta;
        let loc = done.stored.location();
        meta.size = done.size;
        meta.path = loc
            .path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        meta.key = loc.key.clone();
        meta.bucket = loc.bucket.clone();
        meta.hashes = done.digests.0;
        Ok(StoredFile {
            meta,
            stored: done.stored,
        })
    }
}

/// A finished file with its metadata. The file is deleted when this is dropped, unless
/// `keep` was called: any failure before the app accepts it leaves nothing behind.
pub struct StoredFile {
    pub meta: FileMeta,
    stored: Stored,
}

impl StoredFile {
    /// The app is about to be told (see `Stored::told`).
    pub fn told(&mut self) {
        self.stored.told();
    }

    /// The file now belongs to the app.
    pub fn keep(&mut self) {
        self.stored.keep();
    }
}
