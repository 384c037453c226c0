//! The sink: hashes and writes one file's bytes, off the async workers, with bounded
//! memory and backpressure.
//!
//! Bytes are batched up to `limits.buffer`, then one blocking task hashes and writes the
//! batch while the connection receives the next one. The next batch waits for the
//! previous write to finish, so memory stays within about two buffers per upload and a
//! slow disk slows the socket (backpressure). Only tasks with work occupy the blocking
//! pool, so a thousand idle uploads cost no threads.
//!
//! `Pipe` is that machinery over any `Writer`; `Sink` uses it for a new file that is
//! committed into the store, the resumable engine for appending to a partial upload.

pub mod accept;
pub mod hashes;

use crate::store::{PartFile, Store, StoreError, Stored};
use bytes::Bytes;
use hashes::{Algorithm, Digests, Hashes};
use std::sync::Arc;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Where a pipe's bytes go; called on the blocking pool.
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

type Pending<W> = JoinHandle<Result<Box<State<W>>, StoreError>>;

/// Batched, pipelined hashing and writing into a `Writer`.
pub struct Pipe<W: Writer> {
    /// `None` while a batch is being written (the state travels with the task).
    state: Option<Box<State<W>>>,
    pending: Option<Pending<W>>,
    batch: Vec<Bytes>,
    batch_len: usize,
    buffer: usize,
    size: u64,
}

/// What a pipe hands back once everything is written.
pub struct Drained<W> {
    pub file: W,
    pub hashes: Hashes,
    pub check: Option<Hashes>,
    /// Bytes that went through this pipe.
    pub size: u64,
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
            batch_len: 0,
            buffer,
            size: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        self.batch_len += data.len();
        self.batch.push(data);
        if self.batch_len >= self.buffer {
            self.flush().await?;
        }
        Ok(())
    }

    async fn wait_written(&mut self) -> Result<Box<State<W>>, StoreError> {
        if let Some(p) = self.pending.take() {
            return p.await.map_err(join_error)?;
        }
        self.state
            .take()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("sink used after a failure")))
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut state = self.wait_written().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            write_batch(&mut state, &batch)?;
            Ok(state)
        }));
        Ok(())
    }

    /// Writes what is left and runs `then` on everything, in the same trip to the
    /// blocking pool: a body that fits one batch is created, written and committed
    /// in one hand-off instead of three (each costs a thread wake-up).
    pub async fn finish_with<T, F>(mut self, then: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Drained<W>) -> Result<T, StoreError> + Send + 'static,
    {
        let mut state = self.wait_written().await?;
        let batch = std::mem::take(&mut self.batch);
        let size = self.size;
        tokio::task::spawn_blocking(move || {
            write_batch(&mut state, &batch)?;
            let State {
                file,
                hashes,
                check,
            } = *state;
            then(Drained {
                file,
                hashes,
                check,
                size,
            })
        })
        .await
        .map_err(join_error)?
    }

    /// Writes what is left and hands everything back.
    pub async fn drain(mut self) -> Result<Drained<W>, StoreError> {
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

/// Hashes and writes one batch, in order.
fn write_batch<W: Writer>(state: &mut State<W>, batch: &[Bytes]) -> Result<(), StoreError> {
    for b in batch {
        state.hashes.update(b);
        if let Some(c) = &mut state.check {
            c.update(b);
        }
        state.file.write_all(b)?;
    }
    Ok(())
}

/// A new file being received into the store.
pub struct Sink {
    pipe: Pipe<LazyPart>,
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
enum LazyPart {
    Unopened { store: Arc<dyn Store>, id: Uuid },
    Open(Box<dyn PartFile>, Arc<dyn Store>),
}

impl LazyPart {
    fn open(&mut self) -> Result<&mut Box<dyn PartFile>, StoreError> {
        if let LazyPart::Unopened { store, id } = self {
            let file = store.create(*id)?;
            *self = LazyPart::Open(file, store.clone());
        }
        match self {
            LazyPart::Open(file, _) => Ok(file),
            LazyPart::Unopened { .. } => Err(StoreError::Io(std::io::Error::other(
                "the partial file was not created",
            ))),
        }
    }

    /// Commits the file (created now if no byte came: an empty file is a file).
    fn commit(mut self) -> Result<Stored, StoreError> {
        self.open()?;
        match self {
            LazyPart::Open(file, store) => Ok(Stored::new(file.commit()?, store)),
            LazyPart::Unopened { .. } => Err(StoreError::Io(std::io::Error::other(
                "the partial file was not created",
            ))),
        }
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
        let file = LazyPart::Unopened { store, id };
        Sink {
            pipe: Pipe::new(file, Hashes::new(algos), None, buffer),
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
        self.pipe
            .finish_with(|drained| {
                Ok(Finished {
                    stored: drained.file.commit()?,
                    size: drained.size,
                    digests: drained.hashes.finish(),
                })
            })
            .await
    }
}
