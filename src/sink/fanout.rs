//! An upload's batches taken in by every algorithm at once: each algorithm on a blocking
//! task of its own, and the write on another, all reading the same reference-counted
//! buffers.
//!
//! A digest is sequential, so one algorithm can never use more than one core; but the
//! algorithms of a file are independent of each other and of the write. Run one after
//! the other, md5 + sha256 go at the speed of their sum; fanned out, at the speed of
//! the slowest. The tasks live as long as the upload and take batches from a queue of
//! one: the slowest algorithm goes from one batch straight to the next, where a task
//! per batch left it idle a quarter of the time (measured with perf: md5 busy 1.86 s
//! of a 2.48 s upload), waiting for the pipe to hear that every task was done and
//! hand out the next batch. Memory: the batch being filled, one queued, one being
//! taken in. Only uploads that start while cores are idle fan out (`share`), so the
//! threads they hold stay few.

use super::hashes::{Hashes, Lane};
use super::{State, Writer, join_error};
use crate::store::StoreError;
use crate::workers::spawn_blocking;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The smallest batch worth fanning out. Each extra task is a hand-off to the blocking
/// pool and a wake-up of one of its threads, some microseconds apiece; md5 takes about
/// 110 µs over 64 KiB, so below that the hand-offs eat most of what the overlap saves,
/// and a small upload (one batch of a few KiB) would pay them for nothing.
pub const MIN_BATCH: usize = 64 * 1024;

type Batch = Arc<Vec<Bytes>>;

/// An upload's batches being taken in by one task per algorithm and one for the write.
pub struct Fanned<W> {
    /// One queue per task: the lanes', then the file's.
    feeds: Vec<mpsc::Sender<Batch>>,
    file: JoinHandle<Result<W, StoreError>>,
    lanes: Vec<JoinHandle<Lane>>,
    shells: Shells,
}

/// The sets of digests while their lanes are out, and how to put them back.
struct Shells {
    hashes: Hashes,
    check: Option<Hashes>,
    /// How many of the lanes are `hashes`'s (the rest are `check`'s).
    own: usize,
    /// The bytes handed to the lanes, which every lane hashes.
    len: u64,
}

impl<W: Writer> Fanned<W> {
    /// Starts the write's task and one per algorithm, waiting for batches.
    pub fn start(state: State<W>) -> Fanned<W> {
        let State {
            mut file,
            mut hashes,
            mut check,
        } = state;
        let mut lanes = hashes.split();
        let own = lanes.len();
        lanes.extend(check.as_mut().map(Hashes::split).unwrap_or_default());
        let mut feeds = Vec::with_capacity(lanes.len() + 1);
        let lanes = lanes
            .into_iter()
            .map(|mut lane| {
                let (tx, mut rx) = mpsc::channel::<Batch>(1);
                feeds.push(tx);
                spawn_blocking(move || {
                    while let Some(batch) = rx.blocking_recv() {
                        batch.iter().for_each(|b| lane.update(b));
                    }
                    lane
                })
            })
            .collect();
        let (tx, mut rx) = mpsc::channel::<Batch>(1);
        feeds.push(tx);
        let file = spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                batch.iter().try_for_each(|b| file.write_all(b))?;
            }
            Ok(file)
        });
        Fanned {
            feeds,
            file,
            lanes,
            shells: Shells {
                hashes,
                check,
                own,
                len: 0,
            },
        }
    }

    /// Queues `batch` (`len` bytes) for every task; waits while a queue is full. A task
    /// that stopped (the write failed) ends the upload with its error.
    pub async fn feed(mut self, batch: Vec<Bytes>, len: usize) -> Result<Self, StoreError> {
        let batch = Arc::new(batch);
        self.shells.len += len as u64;
        for feed in &self.feeds {
            if feed.send(batch.clone()).await.is_err() {
                return Err(match self.join().await {
                    Err(e) => e,
                    Ok(_) => StoreError::Io(std::io::Error::other("a hashing task stopped")),
                });
            }
        }
        Ok(self)
    }

    /// Closes the queues and waits for every task, even after one failed, so that none
    /// outlives the pipe's account of memory; the lanes first, since the slowest is
    /// among them and the pipe is then woken about once.
    pub async fn join(self) -> Result<Box<State<W>>, StoreError> {
        drop(self.feeds);
        let mut lanes = Vec::with_capacity(self.lanes.len());
        for task in self.lanes {
            lanes.push(task.await);
        }
        let file = self.file.await.map_err(join_error)??;
        let lanes = lanes.into_iter().collect::<Result<_, _>>();
        Ok(Box::new(
            self.shells.refill(file, lanes.map_err(join_error)?),
        ))
    }
}

impl Shells {
    fn refill<W>(self, file: W, mut lanes: Vec<Lane>) -> State<W> {
        let Shells {
            mut hashes,
            mut check,
            own,
            len,
        } = self;
        let theirs = lanes.split_off(own);
        hashes.rejoin(lanes, len);
        if let Some(c) = &mut check {
            c.rejoin(theirs, len);
        }
        State {
            file,
            hashes,
            check,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::hashes::Algorithm::{self, *};

    /// Batches fed to the tasks in turn end exactly where one pass would.
    #[tokio::test]
    async fn fanned_batches_equal_one_pass() {
        let data: Vec<u8> = (0..3 * MIN_BATCH + 17)
            .map(|i| (i * 7 + i / 253) as u8)
            .collect();
        let batch: Vec<Bytes> = data.chunks(10_000).map(Bytes::copy_from_slice).collect();
        let state = State {
            file: Vec::new(),
            hashes: Hashes::new(&Algorithm::ALL),
            check: Some(Hashes::new(&[Md5, Sha256])),
        };
        let mut fanned = Fanned::start(state);
        let mut fed = 0u64;
        for part in batch.chunks(7) {
            let len: usize = part.iter().map(Bytes::len).sum();
            fanned = fanned.feed(part.to_vec(), len).await.unwrap();
            fed += len as u64;
            assert_eq!(fanned.shells.len, fed);
        }
        let got = fanned.join().await.unwrap();
        let one = |algos: &[Algorithm]| {
            let mut h = Hashes::new(algos);
            h.update(&data);
            h.save()
        };
        assert_eq!(got.file, data);
        assert_eq!(got.hashes.save(), one(&Algorithm::ALL));
        assert_eq!(got.check.map(|c| c.save()), Some(one(&[Md5, Sha256])));
    }
}
