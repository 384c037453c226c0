//! One batch taken in by every algorithm at once: each algorithm on a blocking task of its
//! own, and the write on another, all reading the same reference-counted buffers.
//!
//! A digest is sequential, so one algorithm can never use more than one core; but the
//! algorithms of a file are independent of each other and of the write. Run one after
//! the other, md5 + sha256 go at the speed of their sum; fanned out, at the speed of
//! the slowest. The pipe still waits for every task before it hands out the next batch,
//! so memory and backpressure are as with a single task.

use super::hashes::{Hashes, Lane};
use super::{State, Writer, join_error};
use crate::store::StoreError;
use bytes::Bytes;
use std::sync::Arc;
use tokio::task::{JoinHandle, spawn_blocking};

/// The smallest batch worth fanning out. Each extra task is a hand-off to the blocking
/// pool and a wake-up of one of its threads, some microseconds apiece; md5 takes about
/// 110 µs over 64 KiB, so below that the hand-offs eat most of what the overlap saves,
/// and a small upload (one batch of a few KiB) would pay them for nothing.
pub const MIN_BATCH: usize = 64 * 1024;

/// A batch being taken in by several tasks.
pub struct Fanned<W> {
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
    /// The batch's length, which every lane hashes.
    len: u64,
}

impl<W: Writer> Fanned<W> {
    /// Starts the write and one task per algorithm over `batch` (`len` bytes).
    pub fn spawn(state: State<W>, batch: Vec<Bytes>, len: usize) -> Fanned<W> {
        let State {
            mut file,
            mut hashes,
            mut check,
        } = state;
        let batch = Arc::new(batch);
        let mut lanes = hashes.split();
        let own = lanes.len();
        lanes.extend(check.as_mut().map(Hashes::split).unwrap_or_default());
        let lanes = lanes.into_iter().map(|l| hash(l, batch.clone())).collect();
        let file = spawn_blocking(move || {
            batch.iter().try_for_each(|b| file.write_all(b))?;
            Ok(file)
        });
        let len = len as u64;
        Fanned {
            file,
            lanes,
            shells: Shells {
                hashes,
                check,
                own,
                len,
            },
        }
    }

    /// Waits for every task, even after one failed, so that none outlives the pipe's
    /// account of memory; the lanes first, since the slowest is among them and the pipe
    /// is then woken about once.
    pub async fn join(self) -> Result<Box<State<W>>, StoreError> {
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

/// One algorithm over the whole batch, on a blocking task.
fn hash(mut lane: Lane, batch: Arc<Vec<Bytes>>) -> JoinHandle<Lane> {
    spawn_blocking(move || {
        for b in batch.iter() {
            lane.update(b);
        }
        lane
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::hashes::Algorithm::{self, *};

    /// Whatever the pipe decides, a fanned batch ends exactly where one task would.
    #[tokio::test]
    async fn a_fanned_batch_equals_one_pass() {
        let data: Vec<u8> = (0..3 * MIN_BATCH + 17)
            .map(|i| (i * 7 + i / 253) as u8)
            .collect();
        let batch: Vec<Bytes> = data.chunks(10_000).map(Bytes::copy_from_slice).collect();
        let state = State {
            file: Vec::new(),
            hashes: Hashes::new(&Algorithm::ALL),
            check: Some(Hashes::new(&[Md5, Sha256])),
        };
        let got = Fanned::spawn(state, batch, data.len())
            .join()
            .await
            .unwrap();
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
