//! How many pipes are streaming in this process, and what that leaves each of them.
//!
//! A pipe holds about two batches (one filling, one being written), so memory grows
//! with batch size × uploads. One upload wants big batches: fewer hand-offs to the
//! blocking pool, and several algorithms fanned out onto the cores. Sixty-four uploads
//! at once already keep every core busy with one task each, and big batches only add
//! memory (and fanned-out tasks only add threads). So the pipes share a pool of
//! `SHARED_BATCHES` × `limits.buffer`: up to that many uploads each batch at
//! `limits.buffer`, beyond it each batch shrinks to its share, never below
//! `MIN_BATCH` (below it the hand-offs cost more than the memory saved); and an upload
//! fans out only while there are fewer uploads than cores.
//!
//! Hashing is the one part of a batch that keeps a core busy. Sixty-four uploads
//! hashing at once on two cores would be sixty-four blocking threads fighting for
//! them, and the blocking pool, which starts a thread whenever none is idle at the
//! moment of a hand-off, grows to hundreds (measured: 296 threads, 37 MiB). So a batch
//! hashes only with one of `2 × cores` permits, taken before its hand-off and given
//! back before its write (a write may wait on the disk or on an S3 part going out).
//!
//! The counts are process-wide on purpose: memory and cores are.

use super::fanout::MIN_BATCH;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many full-size batches the pipes share before they shrink.
pub const SHARED_BATCHES: usize = 16;

static STREAMING: AtomicUsize = AtomicUsize::new(0);

/// One streaming pipe, counted while it lives.
pub struct Share(());

impl Share {
    pub fn join() -> Share {
        STREAMING.fetch_add(1, Ordering::Relaxed);
        Share(())
    }

    /// The batch size for a pipe configured with `buffer` right now.
    pub fn batch(&self, buffer: usize) -> usize {
        batch_for(buffer, STREAMING.load(Ordering::Relaxed))
    }

    /// Whether an upload may take one task per algorithm: only while the uploads alone
    /// would leave cores idle.
    pub fn may_fan_out(&self) -> bool {
        STREAMING.load(Ordering::Relaxed) < cores()
    }
}

/// A turn at hashing on a core; `None` if the runtime's permits are gone (never: the
/// semaphore is never closed), which then hashes without one.
pub async fn hashing_turn() -> Option<OwnedSemaphorePermit> {
    static TURNS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let turns = TURNS.get_or_init(|| Arc::new(Semaphore::new(2 * cores())));
    turns.clone().acquire_owned().await.ok()
}

impl Drop for Share {
    fn drop(&mut self) {
        STREAMING.fetch_sub(1, Ordering::Relaxed);
    }
}

fn batch_for(buffer: usize, streaming: usize) -> usize {
    let share = buffer.saturating_mul(SHARED_BATCHES) / streaming.max(1);
    share.clamp(MIN_BATCH.min(buffer), buffer)
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_to_their_share_within_bounds() {
        let k = 1024;
        // Few uploads: the configured size.
        assert_eq!(batch_for(256 * k, 1), 256 * k);
        assert_eq!(batch_for(256 * k, SHARED_BATCHES), 256 * k);
        // Many: their share of the pool.
        assert_eq!(batch_for(256 * k, 2 * SHARED_BATCHES), 128 * k);
        assert_eq!(batch_for(256 * k, 4 * SHARED_BATCHES), 64 * k);
        // Never below the floor, nor above the configured size.
        assert_eq!(batch_for(256 * k, 1000), MIN_BATCH);
        assert_eq!(batch_for(8 * k, 1000), 8 * k);
        assert_eq!(batch_for(8 * k, 0), 8 * k);
    }
}
