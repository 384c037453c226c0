//! The running server: its listeners, the current generation, reloads, and the drain
//! at shutdown (docs/reference/cli.md).
//!
//! A reload is all-or-nothing: the new config's app, certificates and any new listener
//! addresses are all prepared first; only when everything succeeded is the generation
//! swapped and are listeners that left the config closed. Requests in flight keep the
//! app they started with, so they finish under the old config.

use crate::app::{App, StartError};
use crate::config::{Config, Listen};
use crate::listen::{self, Generation, Live, Shared, systemd};
use crate::workers::{self, Workers};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

/// What a running server can be told.
pub enum Control {
    /// Switch to this config (or, on `Err`, log why the new one was refused).
    Reload(Result<Box<Config>, String>),
    /// Stop accepting, finish in-flight requests within `shutdown_grace`, return.
    Shutdown,
}

/// A listener bound for a config entry.
pub struct Bound {
    pub entry: Listen,
    pub listener: std::net::TcpListener,
}

/// The accept loops of one listener (one per worker) and the switch that stops them.
struct Acceptor {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Acceptor {
    /// One duplicate of `listener` per worker (made before anything is switched, so a
    /// reload that cannot make them changes nothing).
    fn copies(
        listener: std::net::TcpListener,
        workers: &Workers,
    ) -> Result<Vec<std::net::TcpListener>, String> {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listener: {e}"))?;
        (0..workers.len())
            .map(|_| listener.try_clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("listener: {e}"))
    }

    /// Every worker accepts through its own duplicate of the socket (`copies`).
    fn spawn(copies: Vec<std::net::TcpListener>, shared: &Shared, workers: &Workers) -> Acceptor {
        let (stop, rx) = watch::channel(false);
        let mut copies = copies.into_iter();
        let tasks = workers.spawn_each(|_| {
            let (copy, shared, rx) = (copies.next(), shared.clone(), rx.clone());
            async move {
                // Registered with the worker's own reactor, so it must happen there.
                match copy.map(TcpListener::from_std) {
                    Some(Ok(l)) => listen::accept_loop(l, shared, rx).await,
                    Some(Err(e)) => tracing::error!(error = %e, "worker cannot accept"),
                    None => {}
                }
            }
        });
        Acceptor { stop, tasks }
    }

    fn spawn_admin(listener: TcpListener, live: Arc<Live>) -> Acceptor {
        let (stop, rx) = watch::channel(false);
        Acceptor {
            tasks: vec![tokio::spawn(listen::admin::serve(listener, live, rx))],
            stop,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Server {
    shared: Shared,
    /// Where connections run; dropped (stopped) last, after the drain.
    workers: Workers,
    drain: watch::Sender<bool>,
    max_connections: usize,
    listeners: Vec<(Listen, Acceptor)>,
    admin: Option<(SocketAddr, Acceptor)>,
}

/// Runs porter until it is told to shut down, then drains.
pub async fn run(
    bound: Vec<Bound>,
    config: Config,
    control: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    // The one rustls provider, before anything could pick another.
    crate::listen::tls::provider();
    serve(bound, App::new(Arc::new(config))?, control).await
}

/// Runs `app` on `bound` until told to shut down (see `run`).
pub async fn serve(
    bound: Vec<Bound>,
    app: App,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    crate::listen::tls::provider();
    let app = Arc::new(app);
    let sweeper = app.clone();
    let swept = tokio::task::spawn_blocking(move || {
        let a = sweeper.store.sweep()?;
        let b = sweeper.resumable.sweep().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(a + b)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match swept {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed partial files left by an earlier run"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep storage.temp"),
    }
    let generation = Generation::new(app).map_err(|p| StartError::Other(problems(&p)))?;
    let mut server = Server::start(bound, generation).await?;
    let collector = tokio::spawn(collect_periodically(server.shared.live.clone()));
    let watchdog = systemd::watchdog_interval().map(|every| tokio::spawn(systemd::watchdog(every)));
    systemd::ready();
    while let Some(c) = control.recv().await {
        match c {
            Control::Reload(config) => {
                systemd::reloading();
                match config {
                    Ok(config) => match server.reload(*config).await {
                        Ok(()) => tracing::info!("config reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "reload refused; the old config stays")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "reload refused; the old config stays"),
                }
                systemd::ready();
            }
            Control::Shutdown => break,
        }
    }
    systemd::stopping();
    collector.abort();
    server.drain().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    Ok(())
}

fn problems(p: &[crate::config::Problem]) -> String {
    p.iter()
        .map(|p| format!("{}: {}", p.key, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

fn tokio_listener(l: std::net::TcpListener) -> Result<TcpListener, String> {
    l.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(l))
        .map_err(|e| format!("listener: {e}"))
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if let Ok(local) = l.local_addr() {
        tracing::info!(%local, "listening");
    }
    Ok(l)
}

impl Server {
    async fn start(bound: Vec<Bound>, generation: Generation) -> Result<Server, StartError> {
        let cfg = generation.app.config.clone();
        let max_connections = cfg.server.max_connections;
        let (drain, drain_rx) = watch::channel(false);
        let workers = Workers::start(workers::count(cfg.server.workers))
            .map_err(|e| StartError::Other(format!("cannot start workers: {e}")))?;
        let shared = Shared {
            live: Arc::new(Live::new(generation)),
            slots: Arc::new(Semaphore::new(max_connections)),
            drain: drain_rx,
            placement: workers.placement(),
        };
        let mut listeners = Vec::new();
        for b in bound {
            let copies = Acceptor::copies(b.listener, &workers).map_err(StartError::Other)?;
            listeners.push((b.entry, Acceptor::spawn(copies, &shared, &workers)));
        }
        let admin = match cfg.metrics {
            Some(addr) => {
                let l = bind(addr).and_then(tokio_listener);
                let l = l.map_err(StartError::Other)?;
                Some((addr, Acceptor::spawn_admin(l, shared.live.clone())))
            }
            None => None,
        };
        Ok(Server {
            shared,
            workers,
            drain,
            max_connections,
            listeners,
            admin,
        })
    }

    async fn reload(&mut self, config: Config) -> Result<(), String> {
        let old = self.shared.live.get();
        if config.server.max_connections != self.max_connections {
            tracing::warn!("server.max_connections changes take effect at the next restart");
        }
        if workers::count(config.server.workers) != self.workers.len() {
            tracing::warn!("server.workers changes take effect at the next restart");
        }
        let app = old
            .app
            .reload(Arc::new(config))
            .map_err(|e| e.to_string())?;
        let cfg = app.config.clone();
        let generation = Generation::new(Arc::new(app)).map_err(|p| problems(&p))?;
        // Bind what is new before changing anything, so a failure leaves all as it was.
        let mut added = Vec::new();
        for entry in &cfg.server.listen {
            if self.listeners.iter().any(|(e, _)| e == entry) {
                continue;
            }
            match entry {
                Listen::Addr(addr) => {
                    let copies = Acceptor::copies(bind(*addr)?, &self.workers)?;
                    added.push((entry.clone(), copies));
                }
                Listen::Systemd => {
                    return Err(
                        "\"systemd\" can only be added to server.listen by a restart".into(),
                    );
                }
            }
        }
        let admin = match (cfg.metrics, &self.admin) {
            (Some(addr), Some((old, _))) if addr == *old => None,
            (Some(addr), _) => Some(Some((addr, bind(addr).and_then(tokio_listener)?))),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        };
        self.shared.live.set(generation);
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|(e, _)| cfg.server.listen.contains(e));
        self.listeners = keep;
        for (entry, acceptor) in gone {
            tracing::info!(?entry, "no longer listening");
            acceptor.stop().await;
        }
        for (entry, copies) in added {
            let acceptor = Acceptor::spawn(copies, &self.shared, &self.workers);
            self.listeners.push((entry, acceptor));
        }
        if let Some(admin) = admin {
            if let Some((_, old)) = self.admin.take() {
                old.stop().await;
            }
            self.admin =
                admin.map(|(addr, l)| (addr, Acceptor::spawn_admin(l, self.shared.live.clone())));
        }
        Ok(())
    }

    /// docs/reference/cli.md: stop accepting, let connections finish for up to `shutdown_grace`.
    async fn drain(self) {
        let grace = self.shared.live.get().app.config.server.shutdown_grace;
        tracing::info!("shutting down: no new connections, draining for up to {grace:?}");
        for (_, a) in self.listeners {
            a.stop().await;
        }
        let _ = self.drain.send(true);
        let all = self.max_connections as u32;
        let drained = tokio::time::timeout(grace, self.shared.slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!("shutdown grace ran out with connections still open");
        }
        if let Some((_, a)) = self.admin {
            a.stop().await;
        }
        // What is left on the workers (connections past the grace) is dropped there,
        // and their blocking work finishes, before the process goes on to exit.
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    }
}

/// How often a running server collects expired resumable uploads.
const GC_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn collect_periodically(live: Arc<Live>) {
    let mut tick = tokio::time::interval(GC_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match live.app().resumable.collect().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected expired resumable uploads"),
            Err(e) => tracing::warn!(error = %e, "resumable garbage collection failed"),
        }
    }
}
