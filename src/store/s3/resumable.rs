//! Resumable uploads shared by many instances (docs/guides/scaling-out.md): state in Redis, data in the
//! S3 bucket, so any instance can take the next request of any upload.
//!
//! In-order data (tus, the IETF draft, chunked) is an S3 multipart upload under the
//! finished file's key, plus a *tail*: the bytes after the last full part, too few
//! for a part (S3's minimum is 5 MiB), kept as the pending object
//! `partial/<id>/tail.<n>`, where `n` is the part number they will become. An append
//! fetches the tail to a local spool, adds the new bytes, ships each full part, and
//! puts the rest back as the new tail. The whole-file hash state travels in the
//! upload's state, so nothing is ever read back to hash it.
//!
//! Why this is safe without rewriting the state first: the state's offset is the
//! truth. An append the caller does not keep (a checksum mismatch, an overflow) may
//! have shipped parts and tails past it; the next append starts again from the
//! offset, overwriting those part numbers, and reads only the first `offset % part`
//! bytes of the tail, which an unkept append cannot have changed (it started there).
//! Part ETags are kept in Redis (`porter:data:<id>`), written before the state that
//! counts them.
//!
//! Out-of-order data (nginx-resumable segments) is one pending object per segment,
//! `partial/<id>/seg.<start>.<len>`; when every byte is in, `gather` reads them once,
//! in order, hashing and laying them into the multipart upload as parts, and the
//! commit completes it as for in-order data. That is the one place porter re-reads
//! data on S3, and it reads what the local store re-reads too.

use super::{S3Store, Spool};
use crate::resumable::state::Upload;
use crate::sink::Writer;
use crate::store::redis::Redis;
use crate::store::resumable::{
    DataFile, Finished, RandomWrites, ResumableStore, Visit, bad_id, valid_id,
};
use crate::store::{Location, StoreError};
use std::io::{self, Write};
use std::sync::Arc;

const UPLOAD_FIELD: &str = "upload";

/// Resumable uploads with their data in the bucket and their state in Redis.
#[derive(Clone)]
pub struct S3Resumable {
    s3: S3Store,
    redis: Arc<Redis>,
}

fn state_key(id: &str) -> String {
    format!("porter:up:{id}")
}

fn data_key(id: &str) -> String {
    format!("porter:data:{id}")
}

fn io_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(io::Error::other(e.to_string()))
}

/// What Redis records of an upload's S3 data.
#[derive(Default)]
struct Record {
    upload: Option<String>,
    etags: std::collections::BTreeMap<u32, String>,
}

impl S3Resumable {
    pub fn new(s3: S3Store, redis: Arc<Redis>) -> Self {
        S3Resumable { s3, redis }
    }

    fn redis<T>(
        &self,
        f: impl std::future::Future<Output = crate::store::redis::Result<T>>,
    ) -> Result<T, StoreError> {
        self.s3.block_on(f).map_err(io_error)
    }

    fn record(&self, id: &str) -> Result<Record, StoreError> {
        let mut r = Record::default();
        for (field, value) in self.redis(self.redis.hgetall(&data_key(id)))? {
            if field == UPLOAD_FIELD {
                r.upload = Some(value);
            } else if let Ok(n) = field.parse() {
                r.etags.insert(n, value);
            }
        }
        Ok(r)
    }

    fn tail_key(&self, id: &str, part: u32) -> String {
        format!("{}tail.{part}", self.s3.partial_prefix(id))
    }

    fn part_of(&self, offset: u64) -> Result<u32, StoreError> {
        u32::try_from(offset / self.s3.part_size() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| io_error("more than 10 000 S3 parts: raise part_size"))
    }

    /// A spool holding the upload's tail at `offset` (empty at a part boundary).
    fn tail_spool(&self, id: &str, offset: u64) -> Result<Spool, StoreError> {
        let mut spool = self.s3.spool(id)?;
        let tail = offset % self.s3.part_size();
        if tail > 0 {
            let key = self.tail_key(id, self.part_of(offset)?);
            let got = self.s3.fetch_into(&key, (0, tail - 1), &mut spool)?;
            if got != tail {
                return Err(io_error(format!("{key} holds {got} bytes, not {tail}")));
            }
        }
        Ok(spool)
    }

    /// Deletes every pending object of the upload and aborts its multipart upload.
    fn drop_data(&self, id: &str) -> Result<(), StoreError> {
        let record = self.record(id)?;
        let s3 = self.s3.client();
        if let Some(upload) = &record.upload {
            self.s3
                .block_on(s3.abort_multipart(&self.s3.key(id), upload))?;
        }
        self.drop_pending(id)?;
        self.redis(self.redis.del(&[data_key(id)]))
    }

    fn drop_pending(&self, id: &str) -> Result<(), StoreError> {
        let s3 = self.s3.client();
        for key in self.s3.block_on(s3.list(&self.s3.partial_prefix(id)))? {
            self.s3.block_on(s3.delete(&key))?;
        }
        Ok(())
    }

    /// The segments of an out-of-order upload: `(start, len, key)`, by start.
    fn segments(&self, id: &str) -> Result<Vec<(u64, u64, String)>, StoreError> {
        let prefix = self.s3.partial_prefix(id);
        let s3 = self.s3.client();
        let mut out: Vec<(u64, u64, String)> = self
            .s3
            .block_on(s3.list(&prefix))?
            .into_iter()
            .filter_map(|key| {
                let rest = key.strip_prefix(&prefix)?.strip_prefix("seg.")?;
                let (start, len) = rest.split_once('.')?;
                Some((start.parse().ok()?, len.parse().ok()?, key))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Completes the data of a `len`-byte upload as the object `key`.
    fn complete(&self, id: &str, key: &str, len: u64) -> Result<(), StoreError> {
        let record = self.record(id)?;
        let s3 = self.s3.client();
        let tail = len % self.s3.part_size();
        // Full parts, then the tail (if any) as part `full + 1`.
        let full = u32::try_from(len / self.s3.part_size()).map_err(io_error)?;
        let mut spool = self.tail_spool(id, len)?;
        if full == 0 {
            // Smaller than one part: one PUT of the tail.
            self.s3
                .block_on(s3.put_file(key, &spool.path, tail, self.s3.chunk()))?;
            if let Some(upload) = &record.upload {
                self.s3.block_on(s3.abort_multipart(key, upload))?;
            }
            return Ok(());
        }
        let upload = record
            .upload
            .clone()
            .ok_or_else(|| io_error("no multipart upload recorded"))?;
        let mut etags = Vec::new();
        for n in 1..=full {
            etags.push(
                record
                    .etags
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| io_error(format!("part {n} was never recorded")))?,
            );
        }
        if tail > 0 {
            spool.file.flush()?;
            let n = u16::try_from(full + 1).map_err(io_error)?;
            let etag = self.s3.block_on(s3.upload_part(
                key,
                &upload,
                n,
                &spool.path,
                tail,
                self.s3.chunk(),
            ))?;
            etags.push(etag);
        }
        self.s3
            .block_on(s3.complete_multipart(key, &upload, &etags))?;
        Ok(())
    }
}

impl ResumableStore for S3Resumable {
    fn create(&self, up: &Upload) -> Result<(), StoreError> {
        if !valid_id(&up.id) {
            return Err(bad_id());
        }
        let bytes = serde_json::to_vec(up).map_err(io_error)?;
        if self.redis(self.redis.set_new(&state_key(&up.id), &bytes))? {
            Ok(())
        } else {
            Err(StoreError::Io(io::ErrorKind::AlreadyExists.into()))
        }
    }

    fn load(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        match self.redis(self.redis.get(&state_key(id)))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
            None => Ok(None),
        }
    }

    fn save(&self, up: &Upload) -> Result<(), StoreError> {
        if !valid_id(&up.id) {
            return Err(bad_id());
        }
        let bytes = serde_json::to_vec(up).map_err(io_error)?;
        self.redis(self.redis.set_fenced(&up.id, &state_key(&up.id), &bytes))
    }

    fn open_at(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        if !valid_id(id) {
            return Err(bad_id());
        }
        let spool = self.tail_spool(id, offset)?;
        Ok(Box::new(InOrder {
            upload: self.record(id)?.upload,
            part: self.part_of(offset)?,
            spool,
            dirty: false,
            store: self.clone(),
            id: id.to_string(),
        }))
    }

    fn finish(&self, id: &str, len: u64, sniff: usize) -> Result<Finished, StoreError> {
        if !valid_id(id) {
            return Err(bad_id());
        }
        let key = self.s3.key(id);
        let s3 = self.s3.client();
        match self.complete(id, &key, len) {
            Ok(()) => {}
            Err(e) => {
                // Completed before a crash, but the state never learnt it.
                match self.s3.block_on(s3.head(&key))? {
                    Some(info) if info.size == len => {}
                    _ => return Err(e),
                }
            }
        }
        self.drop_pending(id)?;
        self.redis(self.redis.del(&[data_key(id)]))?;
        Ok(Finished {
            head: self.head(&key, len, sniff)?,
            location: self.location(id),
        })
    }

    fn remove(&self, id: &str, finished: Option<&Location>) -> Result<(), StoreError> {
        if !valid_id(id) {
            return Err(bad_id());
        }
        // State first, as on local disk: data without state is collected later.
        self.redis(self.redis.del(&[state_key(id)]))?;
        self.drop_data(id)?;
        if finished.is_some() {
            let s3 = self.s3.client();
            self.s3.block_on(s3.delete(&self.s3.key(id)))?;
        }
        Ok(())
    }

    /// The engine's lock is a Redis lease, which covers every process: once it holds
    /// it, no request anywhere writes this upload.
    fn remove_if_idle(&self, id: &str, finished: Option<&Location>) -> Result<bool, StoreError> {
        self.remove(id, finished)?;
        Ok(true)
    }

    fn ids(&self) -> Result<Vec<String>, StoreError> {
        let states = self.redis(self.redis.keys("porter:up:*"))?;
        let ids: std::collections::HashSet<String> = states
            .iter()
            .filter_map(|k| k.strip_prefix("porter:up:"))
            .filter(|id| valid_id(id))
            .map(str::to_string)
            .collect();
        // Data whose state is gone (an instance died while removing it).
        for key in self.redis(self.redis.keys("porter:data:*"))? {
            if let Some(id) = key.strip_prefix("porter:data:")
                && valid_id(id)
                && !ids.contains(id)
                && self.redis(self.redis.get(&state_key(id)))?.is_none()
            {
                self.drop_data(id)?;
            }
        }
        Ok(ids.into_iter().collect())
    }

    fn finished(&self, id: &str) -> Option<Location> {
        if !valid_id(id) {
            return None;
        }
        let s3 = self.s3.client();
        match self.s3.block_on(s3.head(&self.s3.key(id))) {
            Ok(Some(_)) => Some(self.location(id)),
            _ => None,
        }
    }

    /// State is written whole (one SET), so nothing is ever half-written.
    fn sweep(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn random_writes(&self) -> Option<&dyn RandomWrites> {
        Some(self)
    }
}

impl RandomWrites for S3Resumable {
    fn open_segment(&self, id: &str, offset: u64) -> Result<Box<dyn DataFile>, StoreError> {
        if !valid_id(id) {
            return Err(bad_id());
        }
        Ok(Box::new(Segment {
            store: self.clone(),
            id: id.to_string(),
            start: offset,
            spool: None,
        }))
    }

    /// Blocks come as the GET delivers them, whatever `block` asks.
    fn gather(&self, id: &str, len: u64, _block: usize, visit: Visit) -> Result<(), StoreError> {
        let mut out = self.open_at(id, 0)?;
        let mut at = 0;
        for (start, seg_len, key) in self.segments(id)? {
            if start + seg_len <= at || start > at || at >= len {
                continue;
            }
            // Straight from the GET into the hashes and the multipart upload's spool.
            let last = seg_len.min(len - start) - 1;
            self.s3.fetch(&key, (at - start, last), &mut |data| {
                visit(data);
                out.write_all(data)?;
                at += data.len() as u64;
                Ok(())
            })?;
        }
        if at != len {
            return Err(io_error(format!("segments cover {at} of {len} bytes")));
        }
        out.sync()
    }
}

impl S3Resumable {
    fn location(&self, id: &str) -> Location {
        Location {
            path: None,
            key: self.s3.key(id),
            bucket: self.s3.bucket(),
        }
    }

    /// The first `sniff` bytes of the finished object `key`, `len` bytes long.
    fn head(&self, key: &str, len: u64, sniff: usize) -> Result<Vec<u8>, StoreError> {
        let n = (sniff as u64).min(len);
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(n as usize);
        self.s3.fetch(key, (0, n - 1), &mut |data| {
            out.extend_from_slice(data);
            Ok(())
        })?;
        Ok(out)
    }

    /// Refuses to write once this instance's lease on the upload has run out: a
    /// successor may be writing it now.
    fn still_held(&self, id: &str) -> Result<(), StoreError> {
        if self.redis.holds(id) {
            Ok(())
        } else {
            Err(io_error(
                "this instance lost the upload's lock (its lease ran out)",
            ))
        }
    }
}

/// In-order data being appended: the spool holds the part being filled.
struct InOrder {
    store: S3Resumable,
    id: String,
    upload: Option<String>,
    /// The part number the spool will become.
    part: u32,
    spool: Spool,
    /// Bytes in the spool that no tail object holds yet.
    dirty: bool,
}

impl InOrder {
    /// Uploads the full spool as part `self.part` and starts the next one.
    fn ship(&mut self) -> Result<(), StoreError> {
        let st = &self.store;
        st.still_held(&self.id)?;
        let s3 = st.s3.client();
        let key = st.s3.key(&self.id);
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = st.s3.block_on(s3.create_multipart(&key))?;
                st.redis(
                    st.redis
                        .hset_fenced(&self.id, &data_key(&self.id), UPLOAD_FIELD, &u),
                )?;
                self.upload = Some(u.clone());
                u
            }
        };
        self.spool.file.flush()?;
        let n = u16::try_from(self.part).map_err(io_error)?;
        let etag = st.s3.block_on(s3.upload_part(
            &key,
            &upload,
            n,
            &self.spool.path,
            self.spool.len,
            st.s3.chunk(),
        ))?;
        st.redis(
            st.redis
                .hset(&data_key(&self.id), &self.part.to_string(), &etag),
        )?;
        self.part += 1;
        self.spool = st.s3.spool(&self.id)?;
        self.dirty = false;
        Ok(())
    }
}

impl Writer for InOrder {
    fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StoreError> {
        let part_size = self.store.s3.part_size();
        while !buf.is_empty() {
            let n = ((part_size - self.spool.len) as usize).min(buf.len());
            self.spool.file.write_all(&buf[..n])?;
            self.spool.len += n as u64;
            self.dirty = true;
            buf = &buf[n..];
            if self.spool.len == part_size {
                self.ship()?;
            }
        }
        Ok(())
    }
}

impl DataFile for InOrder {
    /// Puts the spool back as the tail object.
    fn sync(&mut self) -> Result<(), StoreError> {
        if !self.dirty || self.spool.len == 0 {
            return Ok(());
        }
        self.spool.file.flush()?;
        let st = &self.store;
        st.still_held(&self.id)?;
        let s3 = st.s3.client();
        let key = st.tail_key(&self.id, self.part);
        st.s3
            .block_on(s3.put_file(&key, &self.spool.path, self.spool.len, st.s3.chunk()))?;
        self.dirty = false;
        Ok(())
    }
}

/// One out-of-order segment, spooled, then put as its own object on `sync`.
struct Segment {
    store: S3Resumable,
    id: String,
    start: u64,
    spool: Option<Spool>,
}

impl Writer for Segment {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        let spool = match &mut self.spool {
            Some(s) => s,
            None => self.spool.insert(self.store.s3.spool(&self.id)?),
        };
        spool.file.write_all(buf)?;
        spool.len += buf.len() as u64;
        Ok(())
    }
}

impl DataFile for Segment {
    fn sync(&mut self) -> Result<(), StoreError> {
        let Some(spool) = self.spool.take() else {
            return Ok(());
        };
        let start = self.start;
        if spool.len == 0 {
            return Ok(());
        }
        let st = &self.store;
        st.still_held(&self.id)?;
        let key = format!(
            "{}seg.{start:020}.{:020}",
            st.s3.partial_prefix(&self.id),
            spool.len
        );
        let s3 = st.s3.client();
        st.s3
            .block_on(s3.put_file(&key, &spool.path, spool.len, st.s3.chunk()))?;
        Ok(())
    }
}
