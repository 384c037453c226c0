//! The sink: hashes and writes one file's bytes, off the async workers, with bounded
//! memory and backpressure.
//!
//! Bytes are batched up to `limits.buffer`, then one blocking task hashes and writes the
//! batch while the connection receives the next one. The next batch waits for the
//! previous write to finish, so memory stays within about two buffers per upload and a
//! slow disk slows the socket (backpressure). Only tasks with work occupy the blocking
//! pool, so a thousand idle uploads cost no threads.

pub mod hashes;

use crate::store::{Location, PartFile, Store, StoreError};
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
    /// `None` while a batch is being written (the state travels with the task).
    state: Option<Box<State>>,
    pending: Option<Pending>,
    batch: Vec<Bytes>,
    batch_len: usize,
    buffer: usize,
    size: u64,
}

/// A file fully written, hashed and moved to its final place.
#[derive(Debug, Clone)]
pub struct Finished {
    pub location: Location,
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
        let file = tokio::task::spawn_blocking(move || store.create(id))
            .await
            .map_err(join_error)??;
        Ok(Sink {
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
        tokio::task::spawn_blocking(move || {
            let State { file, hashes } = *state;
            let location = file.commit()?;
            Ok(Finished {
                location,
                size,
                digests: hashes.finish(),
            })
        })
        .await
        .map_err(join_error)?
    }
}
