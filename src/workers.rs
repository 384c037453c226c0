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
//! descriptor), so the kernel hands each new connection to whichever worker asks first,
//! and a busy worker asks less often. Blocking work (files, hashing) still goes to each
//! runtime's blocking pool; the control plane (reload, admin, collector, S3 driving)
//! stays on the main runtime.

use std::cell::Cell;
use std::future::Future;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

thread_local! {
    /// 1 + this thread's worker number; 0 on any thread that is not a worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
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

/// The running workers. Dropping this tells each to stop; tasks still running on a
/// worker are dropped with its runtime. [`Workers::join`] waits for that.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The most blocking-pool threads all workers' runtimes may start together (tokio's
/// default for one runtime), shared out among them.
const BLOCKING_THREADS: usize = 512;

impl Workers {
    /// Starts `n` workers, each a single-threaded runtime on its own named thread.
    /// Each runtime is built on its thread and dropped there, never in async code.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (stop, stopped) = oneshot::channel::<()>();
            let (ready, handle) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("porter-w{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .thread_name(format!("porter-b{i}"))
                        .max_blocking_threads((BLOCKING_THREADS / n).max(8))
                        .build();
                    let runtime = match runtime {
                        Ok(r) => r,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let _ = ready.send(Ok(runtime.handle().clone()));
                    INDEX.with(|c| c.set(i + 1));
                    let _ = runtime.block_on(stopped);
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread died at start"))??;
            workers.handles.push(handle);
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
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

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Spawns `make(i)` on every worker `i`.
    pub fn spawn_each<F, Fut>(&self, mut make: F) -> Vec<JoinHandle<()>>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handles
            .iter()
            .enumerate()
            .map(|(i, h)| h.spawn(make(i)))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
