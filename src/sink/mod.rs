//! The sink: hashes and writes one file's bytes, off the async workers, with bounded
//! memory and backpressure.
//!
//! Bytes are batched up to `limits.buffer`, then one blocking task hashes and writes the
//! batch while the connection receives the next one. The next batch waits for the
//! previous write to finish, so memory stays within about two buffers per upload and a
//! slow disk slows the socket (backpressure). Only tasks with work occupy the blocking
//! pool, so a thousand idle uploads cost no threads.

pub mod hashes;

use crate::store::{PartFile, Store, StoreError, Stored};
use bytes::Bytes;
use hashes::{Algorithm, Digests, Hashes};
use std::sync::Arc;
use tokio::task::JoinHandle;
use uuid::Uuid;

struct State {
    file: Box<dyn PartFile>,
    hashes: Hashes,
}

type Pending = JoinHandle<Result<Box<State>, StoreError>>;

/// One file being received.
pub struct Sink {
    store: Arc<dyn Store>,
    /// `None` while a batch is being written (the state travels with the task).
    state: Option<Box<State>>,
    pending: Option<Pending>,
    batch: Vec<Bytes>,
    batch_len: usize,
    buffer: usize,
    size: u64,
}

/// A file fully written, hashed and moved to its final place.
pub struct Finished {
    /// Deletes the file if dropped before someone keeps it.
    pub stored: Stored,
    pub size: u64,
    pub digests: Digests,
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

impl Sink {
    pub async fn open(
        store: Arc<dyn Store>,
        id: Uuid,
        algos: &[Algorithm],
        buffer: usize,
    ) -> Result<Sink, StoreError> {
        let creator = store.clone();
        let file = tokio::task::spawn_blocking(move || creator.create(id))
            .await
            .map_err(join_error)??;
        Ok(Sink {
            store,
            state: Some(Box::new(State {
                file,
                hashes: Hashes::new(algos),
            })),
            pending: None,
            batch: Vec::new(),
            batch_len: 0,
            buffer,
            size: 0,
        })
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

    async fn settle(&mut self) -> Result<Box<State>, StoreError> {
        if let Some(p) = self.pending.take() {
            return p.await.map_err(join_error)?;
        }
        self.state
            .take()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("sink used after a failure")))
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut state = self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            for b in &batch {
                state.hashes.update(b);
                state.file.write_all(b)?;
            }
            Ok(state)
        }));
        Ok(())
    }

    /// Writes what is left, makes it durable and moves it into place.
    pub async fn finish(mut self) -> Result<Finished, StoreError> {
        if !self.batch.is_empty() {
            self.flush().await?;
        }
        let state = self.settle().await?;
        let size = self.size;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let State { file, hashes } = *state;
            let stored = Stored::new(file.commit()?, store);
            Ok(Finished {
                stored,
                size,
                digests: hashes.finish(),
            })
        })
        .await
        .map_err(join_error)?
    }
}
