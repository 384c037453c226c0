//! The sink: hashes and writes one file's bytes, off the async workers, with bounded
//! memory and backpressure.
//!
//! Bytes are batched up to `limits.buffer`, then one blocking task hashes and writes the
//! batch while the connection receives the next one. An upload whose first large batch
//! comes while there are fewer uploads than cores, and which has several algorithms,
//! is fanned out instead, for good: one task per algorithm plus one for the write,
//! living as long as the upload and taking batches from queues (`fanout`). The next
//! batch waits for the previous one (or for room in the queues), so memory stays within
//! about two batches per upload (three when fanned) and a slow disk slows the socket
//! (backpressure); when many uploads stream at once, their batches shrink (`share`).
//! Only tasks with work occupy the blocking pool, so a thousand idle uploads cost no
//! threads; a fanned upload holds its few for its life, and only a few fan out.
//! A small body that arrived whole, for a store whose writes are page-cache writes,
//! is finished in place: hashing and writing a few KiB is cheaper than the hand-off.
//!
//! `Pipe` is that machinery over any `Writer`; `Sink` uses it for a new file that is
//! committed into the store, the resumable engine for appending to a partial upload.

pub mod accept;
mod fanout;
pub mod hashes;
mod share;

use crate::store::{PartFile, Store, StoreError, Stored};
use bytes::{Bytes, BytesMut};
use hashes::{Algorithm, Digests, Hashes};
use share::Share;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Where a pipe's bytes go; called on the blocking pool (or in place, for a small
/// body and a quick store: `Pipe::finish_with`).
pub trait Writer: Send + 'static {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError>;
}

impl Writer for Box<dyn PartFile> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        (**self).write_all(buf)
    }
}

struct State<W> {
    file: W,
    hashes: Hashes,
    /// A second set of digests over just these bytes (a tus chunk checksum).
    check: Option<Hashes>,
}

impl<W: Writer> State<W> {
    /// Hashes a batch, then writes it, on the calling (blocking) thread; the turn at
    /// hashing (`share`) is given back before the write, which may wait on a device.
    fn take_in(
        mut self: Box<Self>,
        batch: &[Bytes],
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<Box<Self>, StoreError> {
        for b in batch {
            self.hashes.update(b);
            if let Some(c) = &mut self.check {
                c.update(b);
            }
        }
        drop(turn);
        for b in batch {
            self.file.write_all(b)?;
        }
        Ok(self)
    }

    /// Whether a batch has anything to hash.
    fn hashes(&self) -> bool {
        self.width() > 0
    }

    /// How many algorithms a batch goes through, the chunk checksum's included.
    fn width(&self) -> usize {
        self.hashes.width() + self.check.as_ref().map_or(0, Hashes::width)
    }

    /// Whether a batch of `len` bytes is worth one task per algorithm: each hand-off to
    /// the blocking pool costs a few microseconds, which only pays when there are two
    /// algorithms or more to overlap and enough bytes for each to chew on. Small
    /// uploads, whose per-request cost matters most, keep the single task.
    /// Not when the uploads alone keep every core busy (`cores_idle` false): more tasks
    /// would only add threads.
    fn fans_out(&self, len: usize, cores_idle: bool) -> bool {
        let width = self.width();
        cores_idle && width >= 2 && len >= fanout::MIN_BATCH
    }
}

/// The batch in flight, and whoever holds the state meanwhile.
enum Pending<W> {
    One(JoinHandle<Result<Box<State<W>>, StoreError>>),
    Fanned(fanout::Fanned<W>),
}

/// Batched, pipelined hashing and writing into a `Writer`.
pub struct Pipe<W: Writer> {
    /// `None` while a batch is being written (the state travels with the task).
    state: Option<Box<State<W>>>,
    pending: Option<Pending<W>>,
    batch: Vec<Bytes>,
    /// Small pieces not yet in `batch`, copied together (`SMALL_PIECE`).
    small: BytesMut,
    batch_len: usize,
    buffer: usize,
    size: u64,
    share: Share,
}

/// What a pipe hands back once everything is written.
pub struct Drained<W> {
    pub file: W,
    pub hashes: Hashes,
    pub check: Option<Hashes>,
    /// Bytes that went through this pipe.
    pub size: u64,
}

/// Pieces smaller than this are copied together before they join a batch.
const SMALL_PIECE: usize = 4096;

/// Bytes (times one for the write and one per algorithm) that a finish does in place
/// (`Pipe::finish_with`): 64 KiB written, or about 20 KiB with md5 and sha256.
const INLINE_WORK: usize = 64 * 1024;

/// A turn at hashing (`share`), for a batch that has something to hash.
async fn turn(hashes: bool) -> Option<OwnedSemaphorePermit> {
    match hashes {
        true => share::hashing_turn().await,
        false => None,
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

impl<W: Writer> Pipe<W> {
    pub fn new(file: W, hashes: Hashes, check: Option<Hashes>, buffer: usize) -> Pipe<W> {
        Pipe {
            state: Some(Box::new(State {
                file,
                hashes,
                check,
            })),
            pending: None,
            batch: Vec::new(),
            small: BytesMut::new(),
            batch_len: 0,
            buffer,
            size: 0,
            share: Share::join(),
        }
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        self.batch_len += data.len();
        // Small pieces (1-byte chunks, tiny h2 frames) are copied together: each piece
        // of a batch costs a slot, a hash call and a write, whatever its size.
        if data.len() < SMALL_PIECE {
            self.small.extend_from_slice(&data);
            if self.small.len() >= SMALL_PIECE {
                self.batch.push(self.small.split().freeze());
            }
        } else {
            self.seal();
            self.batch.push(data);
        }
        if self.batch_len >= self.share.batch(self.buffer) {
            self.flush().await?;
        }
        Ok(())
    }

    async fn wait_written(&mut self) -> Result<Box<State<W>>, StoreError> {
        match self.pending.take() {
            Some(Pending::One(task)) => return task.await.map_err(join_error)?,
            Some(Pending::Fanned(f)) => return f.join().await,
            None => {}
        }
        self.state
            .take()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("sink used after a failure")))
    }

    /// Moves the small pieces gathered so far into the batch, in their place.
    fn seal(&mut self) {
        if !self.small.is_empty() {
            self.batch.push(self.small.split().freeze());
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.seal();
        let batch = std::mem::take(&mut self.batch);
        let len = std::mem::take(&mut self.batch_len);
        match self.pending.take() {
            // A fanned pipe stays fanned: its tasks take the batch from their queues.
            Some(Pending::Fanned(f)) => {
                self.pending = Some(Pending::Fanned(f.feed(batch, len).await?));
                return Ok(());
            }
            other => self.pending = other,
        }
        let state = self.wait_written().await?;
        self.pending = Some(if state.fans_out(len, self.share.may_fan_out()) {
            Pending::Fanned(fanout::Fanned::start(*state).feed(batch, len).await?)
        } else {
            let turn = turn(state.hashes()).await;
            Pending::One(crate::workers::spawn_blocking(move || {
                state.take_in(&batch, turn)
            }))
        });
        Ok(())
    }

    /// Writes what is left and runs `then` on everything, in the same trip to the
    /// blocking pool: a body that fits one batch is created, written and committed
    /// in one hand-off instead of three (each costs a thread wake-up).
    /// With `quick` (the writer's work is only page-cache writes), a body that came
    /// whole and is small enough to hash and write in a few microseconds is finished
    /// right here instead: the trip to the blocking pool and back would cost more.
    pub async fn finish_with<T, F>(mut self, quick: bool, then: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Drained<W>) -> Result<T, StoreError> + Send + 'static,
    {
        self.seal();
        let inline = quick && self.pending.is_none() && self.small_enough();
        let state = self.wait_written().await?;
        let batch = std::mem::take(&mut self.batch);
        let batch_is_empty = batch.is_empty();
        let size = self.size;
        let finish = move |state: Box<State<W>>, turn| {
            let State {
                file,
                hashes,
                check,
            } = *state.take_in(&batch, turn)?;
            then(Drained {
                file,
                hashes,
                check,
                size,
            })
        };
        if inline {
            return finish(state, None);
        }
        let turn = turn(state.hashes() && !batch_is_empty).await;
        crate::workers::spawn_blocking(move || finish(state, turn))
            .await
            .map_err(join_error)?
    }

    /// Whether what is batched costs about as little as one trip to the blocking pool:
    /// `INLINE_WORK` bytes hashed or written in all.
    fn small_enough(&self) -> bool {
        let width = self.state.as_ref().map_or(0, |s| s.width());
        self.batch_len.saturating_mul(1 + width) <= INLINE_WORK
    }

    /// Writes what is left and hands everything back.
    pub async fn drain(mut self) -> Result<Drained<W>, StoreError> {
        self.seal();
        if !self.batch.is_empty() {
            self.flush().await?;
        }
        let state = self.wait_written().await?;
        let State {
            file,
            hashes,
            check,
        } = *state;
        Ok(Drained {
            file,
            hashes,
            check,
            size: self.size,
        })
    }
}

/// A new file being received into the store.
pub struct Sink {
    pipe: Pipe<LazyPart>,
    /// The store's small files are quick to write (`Store::quick_small_files`).
    quick: bool,
}

/// A file fully written, hashed and moved to its final place.
pub struct Finished {
    /// Deletes the file if dropped before someone keeps it.
    pub stored: Stored,
    pub size: u64,
    pub digests: Digests,
}

/// The store's partial file, created where the first bytes are written (on the
/// blocking pool), so a small body takes one trip there, not one more to create it.
struct LazyPart {
    store: Arc<dyn Store>,
    id: Uuid,
    file: Option<Box<dyn PartFile>>,
}

impl LazyPart {
    fn open(&mut self) -> Result<&mut Box<dyn PartFile>, StoreError> {
        let file = match self.file.take() {
            Some(file) => file,
            None => self.store.create(self.id)?,
        };
        Ok(self.file.insert(file))
    }

    /// Commits the file (created now if no byte came: an empty file is a file).
    fn commit(self) -> Result<Stored, StoreError> {
        let file = match self.file {
            Some(file) => file,
            None => self.store.create(self.id)?,
        };
        Ok(Stored::new(file.commit()?, self.store))
    }
}

impl Writer for LazyPart {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.open()?.write_all(buf)
    }
}

impl Sink {
    /// A sink for file `id`; the file itself is created with the first batch.
    pub fn open(store: Arc<dyn Store>, id: Uuid, algos: &[Algorithm], buffer: usize) -> Sink {
        let quick = store.quick_small_files();
        let file = LazyPart {
            store,
            id,
            file: None,
        };
        Sink {
            pipe: Pipe::new(file, Hashes::new(algos), None, buffer),
            quick,
        }
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.pipe.size()
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.pipe.write(data).await
    }

    /// Writes what is left, makes it durable and moves it into place.
    pub async fn finish(self) -> Result<Finished, StoreError> {
        let quick = self.quick;
        self.pipe
            .finish_with(quick, |drained| {
                Ok(Finished {
                    stored: drained.file.commit()?,
                    size: drained.size,
                    digests: drained.hashes.finish(),
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::*;

    impl Writer for Vec<u8> {
        fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
            self.extend_from_slice(buf);
            Ok(())
        }
    }

    /// Bytes that differ from block to block, so a lost or repeated piece shows.
    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn oneshot(algos: &[Algorithm], data: &[u8]) -> Hashes {
        let mut h = Hashes::new(algos);
        h.update(data);
        h
    }

    /// Streams `data` in pieces of `piece` bytes through a pipe of `buffer`, starting
    /// from `hashes`, and checks the file, the size and both sets against one-shot ones.
    async fn stream(
        hashes: Hashes,
        check: &[Algorithm],
        data: &[u8],
        piece: usize,
        buffer: usize,
    ) -> Drained<Vec<u8>> {
        let check = (!check.is_empty()).then(|| Hashes::new(check));
        let mut pipe = Pipe::new(Vec::new(), hashes, check, buffer);
        for p in data.chunks(piece) {
            pipe.write(Bytes::copy_from_slice(p)).await.unwrap();
        }
        let drained = pipe.drain().await.unwrap();
        assert_eq!(drained.file, data);
        assert_eq!(drained.size, data.len() as u64);
        drained
    }

    async fn same_as_oneshot(
        algos: &[Algorithm],
        check: &[Algorithm],
        len: usize,
        piece: usize,
        buffer: usize,
    ) {
        let d = data(len);
        let got = stream(Hashes::new(algos), check, &d, piece, buffer).await;
        assert_eq!(got.hashes.save(), oneshot(algos, &d).save());
        assert_eq!(got.hashes.finish(), oneshot(algos, &d).finish());
        let want = (!check.is_empty()).then(|| oneshot(check, &d).finish());
        assert_eq!(got.check.map(Hashes::finish), want);
    }

    const SHAPES: [(usize, usize, usize); 5] = [
        // (length, piece, buffer)
        (10 * 1024, 1024, 256 * 1024),         // one small batch
        (3 << 20, 16 * 1024, 256 * 1024),      // many full batches
        (1_000_003, 7 * 1024 + 3, 100 * 1000), // batches end inside a hash block
        (2 << 20, 1 << 20, 256 * 1024),        // one piece larger than the buffer
        (300 * 1024 + 5, 4097, 64 * 1024 - 1), // around the fan-out threshold
    ];

    const SETS: [&[Algorithm]; 4] = [&Algorithm::ALL, &[Md5, Sha256], &[Md5], &[]];

    #[tokio::test]
    async fn batches_give_the_oneshot_digests() {
        for (len, piece, buffer) in SHAPES {
            for algos in SETS {
                same_as_oneshot(algos, &[], len, piece, buffer).await;
            }
        }
    }

    #[tokio::test]
    async fn a_check_set_gets_the_same_bytes() {
        for (len, piece, buffer) in SHAPES {
            for algos in SETS {
                same_as_oneshot(algos, &[Sha1, Crc32], len, piece, buffer).await;
                same_as_oneshot(algos, &[Sha256], len, piece, buffer).await;
            }
        }
    }

    /// A resumed upload: the set restored from a saved state carries on exactly.
    #[tokio::test]
    async fn a_restored_set_resumes_through_a_pipe() {
        let d = data(2_000_001);
        let (head, tail) = d.split_at(700_001);
        let saved = oneshot(&Algorithm::ALL, head).save();
        let resumed = Hashes::restore(&saved).unwrap();
        let got = stream(resumed, &[Md5, Crc32], tail, 10_000, 256 * 1024).await;
        assert_eq!(got.hashes.save(), oneshot(&Algorithm::ALL, &d).save());
        let check = got.check.map(Hashes::finish);
        assert_eq!(check, Some(oneshot(&[Md5, Crc32], tail).finish()));
    }

    #[test]
    fn only_large_batches_of_several_algorithms_fan_out() {
        let state = |algos: &[Algorithm], check: Option<&[Algorithm]>| State {
            file: Vec::new(),
            hashes: Hashes::new(algos),
            check: check.map(Hashes::new),
        };
        let big = fanout::MIN_BATCH;
        assert!(state(&[Md5, Sha256], None).fans_out(big, true));
        assert!(state(&[Md5], Some(&[Sha1])).fans_out(big, true));
        assert!(state(&[], Some(&[Sha1, Md5])).fans_out(big, true));
        assert!(!state(&[Md5, Sha256], None).fans_out(big - 1, true));
        assert!(!state(&[Md5], None).fans_out(big * 4, true));
        assert!(!state(&[], Some(&[Sha1])).fans_out(big * 4, true));
        // As many uploads as cores: each keeps its batch on one task.
        assert!(!state(&[Md5, Sha256], None).fans_out(big * 4, false));
    }
}
