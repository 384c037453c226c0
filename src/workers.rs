//! One event loop per core, the way nginx runs one worker process per core.
//!
//! Why not tokio's work-stealing runtime for connections: a proxied request wakes
//! three tasks (the client connection, the app connection, the response body), and on
//! a work-stealing runtime those wake-ups cross threads, each costing a futex and a
//! context switch. Measured on 2 cores, a small passthrough GET cost 40 µs of CPU on two
//! worker threads against 31 µs on one. Here each worker is a single-threaded runtime
//! on its own thread: a connection, the tasks it spawns and (through [`index`]) its own
//! pool of app connections all stay on the thread that accepted it.
//!
//! The workers accept from the same listening sockets (each holds a duplicate of the
//! descriptor), so the kernel hands each new connection to whichever worker asks
//! first. That alone can be lopsided: a burst of 64 connections was seen split 3 to 1,
//! leaving one core to carry three quarters of the traffic. So a worker that accepts
//! a connection while another has fewer open hands it over ([`Placement`]): one
//! hand-off per connection, none per request, and none while the load is even.
//! Blocking work (files, hashing) goes to one blocking pool for the process
//! ([`spawn_blocking`]); the control plane (reload, admin, collector, S3 driving)
//! stays on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

thread_local! {
    /// 1 + this thread's worker number; 0 on any thread that is not a worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
    /// On a worker: the runtime that started the workers, whose blocking pool they share.
    static BLOCKING: std::cell::RefCell<Option<Handle>> = const { std::cell::RefCell::new(None) };
}

/// `tokio::task::spawn_blocking`, on one pool for the whole process: the pool of the
/// runtime that started the workers. A pool per worker would keep idle threads (each
/// with its stack and malloc arena) in every one of them; one pool reuses them.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match BLOCKING.with(|b| b.borrow().clone()) {
        Some(h) => h.spawn_blocking(f),
        None => tokio::task::spawn_blocking(f),
    }
}

/// Which worker runs the calling thread: `1..=count`, or 0 elsewhere (the main
/// runtime, blocking threads). Lets per-worker state be picked without a lock.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers to start: `server.workers`, or one per core when it is 0.
pub fn count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where connections go: each worker's handle and how many connections it runs.
pub struct Placement {
    handles: Vec<Handle>,
    open: Vec<AtomicUsize>,
}

/// One connection counted on its worker while it lives.
pub struct Seat {
    placement: Arc<Placement>,
    worker: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(n) = self.placement.open.get(self.worker) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Placement {
    /// The worker a new connection accepted by the calling worker should run on: the
    /// caller itself unless another has fewer connections open.
    pub fn choose(&self) -> usize {
        let here = index().saturating_sub(1);
        let count = |i: usize| {
            self.open
                .get(i)
                .map_or(usize::MAX, |n| n.load(Ordering::Relaxed))
        };
        let least = (0..self.open.len())
            .min_by_key(|&i| count(i))
            .unwrap_or(here);
        // Two or more fewer: a difference of one is the even split moving.
        if count(least).saturating_add(1) < count(here) {
            least
        } else {
            here
        }
    }

    /// Counts a connection on `worker` until the seat is dropped.
    pub fn seat(self: &Arc<Self>, worker: usize) -> Seat {
        if let Some(n) = self.open.get(worker) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Seat {
            placement: self.clone(),
            worker,
        }
    }

    /// Runs `task` on `worker`; `None` when there is no such worker.
    pub fn spawn_on<F>(&self, worker: usize, task: F) -> Option<JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles.get(worker).map(|h| h.spawn(task))
    }
}

/// The running workers. Dropping this tells each to stop; tasks still running on a
/// worker are dropped with its runtime. [`Workers::join`] waits for that.
pub struct Workers {
    placement: Arc<Placement>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Blocking-pool threads of a worker's own runtime: little uses it (blocking work goes
/// to the shared pool, `spawn_blocking`), only what tokio itself hands there.
const BLOCKING_THREADS_EACH: usize = 8;

impl Workers {
    /// Starts `n` workers, each a single-threaded runtime on its own named thread.
    /// Each runtime is built on its thread and dropped there, never in async code.
    /// Call it within a runtime: its blocking pool becomes the workers' too.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let pool = Handle::try_current().ok();
        let (mut handles, mut stops, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            // Kept as each starts: if a later one fails, the dropped senders end these.
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            let (handle, thread) = start_one(i, pool.clone(), stopped)?;
            handles.push(handle);
            threads.push(thread);
        }
        let open = (0..n).map(|_| AtomicUsize::new(0)).collect();
        Ok(Workers {
            placement: Arc::new(Placement { handles, open }),
            stops,
            threads,
        })
    }

    /// Stops every worker and waits (on the calling thread: call it off the async
    /// workers) for each to drop its tasks and its runtime.
    pub fn join(mut self) {
        self.stop();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }

    fn stop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }

    /// Where new connections go.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.clone()
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.placement.handles.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.placement.handles.is_empty()
    }

    /// Spawns `make(i)` on every worker `i`.
    pub fn spawn_each<F, Fut>(&self, mut make: F) -> Vec<JoinHandle<()>>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.placement
            .handles
            .iter()
            .enumerate()
            .map(|(i, h)| h.spawn(make(i)))
            .collect()
    }
}

/// Starts worker `i`: its thread, and on it its runtime, which runs until `stopped`.
fn start_one(
    i: usize,
    pool: Option<Handle>,
    stopped: oneshot::Receiver<()>,
) -> std::io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (ready, handle) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("porter-w{i}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("porter-b{i}"))
                .max_blocking_threads(BLOCKING_THREADS_EACH)
                .build();
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => return drop(ready.send(Err(e))),
            };
            let _ = ready.send(Ok(runtime.handle().clone()));
            INDEX.with(|c| c.set(i + 1));
            BLOCKING.with(|b| *b.borrow_mut() = pool);
            let _ = runtime.block_on(stopped);
        })?;
    let handle = handle
        .recv()
        .map_err(|_| std::io::Error::other("a worker thread died at start"))??;
    Ok((handle, thread))
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new connection goes where fewest are open, unless the difference is one.
    #[test]
    fn connections_go_to_the_least_loaded_worker() {
        let workers = Workers::start(3).unwrap();
        let p = workers.placement();
        // From a thread that is not a worker, "here" is worker 0.
        assert_eq!(p.choose(), 0);
        let a = p.seat(0);
        assert_eq!(p.choose(), 0, "one more is still even");
        let b = p.seat(0);
        assert_eq!(p.choose(), 1, "two more: another worker");
        let c = p.seat(1);
        let d = p.seat(2);
        let e = p.seat(2);
        let f = p.seat(2);
        assert_eq!(p.choose(), 0, "2 here, 1 and 3 elsewhere: within one");
        let g = p.seat(0);
        assert_eq!(p.choose(), 1, "3 here, 1 on worker 1");
        drop((a, b, g));
        assert_eq!(p.choose(), 0);
        drop((c, d, e, f));
        workers.join();
    }
}
