//! # porter
//!
//! An upload-offloading reverse proxy. porter sits in front of a web app, streams
//! upload bytes to disk (hashing as they pass), and sends the app a small, signed
//! metadata request instead of the body. Everything else passes through, buffered so
//! slow clients never hold an app worker.
//!
//! ## Layout
//!
//! The modules follow the data flow of a request:
//!
//! * `listen`: accept loop, `max_connections`, graceful drain; `listen::conn` serves
//!   one connection with hyper and owns the idle / keep-alive watchdog.
//! * `service`: one request: strip client `X-Porter-*`, route, dispatch, then the one
//!   response path (strips `X-Accel-*`, writes the access log).
//! * `route`: path normalisation, canonical encoding, route choice (SPEC §3).
//! * `upload`: intercepted uploads: admit → protocol front-end (`form` for multipart,
//!   on the sans-I/O `multipart` parser) → `FileReceiver` → deliver the metadata.
//! * `proxy`: passthrough with request and response buffering, and WebSocket tunnels.
//! * `sink`: hashes and writes a file's bytes off the async workers, with backpressure.
//! * `store`: where bytes live (`Store` trait; `LocalStore` for files on disk).
//! * `backend`: the one client for the app: pooled, signed generated requests.
//! * `config`: the TOML file, parsed and validated once into typed structs.
//! * `error`: the one error kind enum and its mapping to HTTP.
//! * `http`: body types and header hygiene shared by all of the above.
//!
//! `run` takes already-bound listeners, so tests bind `127.0.0.1:0` and hand them in.

pub mod app;
pub mod backend;
pub mod config;
pub mod download;
pub mod error;
pub mod http;
pub mod listen;
pub mod progress;
pub mod proxy;
pub mod resumable;
pub mod route;
pub mod service;
pub mod sink;
pub mod store;
pub mod upload;

pub use app::{App, StartError};
pub use config::Config;

use std::future::Future;
use std::sync::Arc;

/// Runs porter on `listeners` until `shutdown` resolves, then drains gracefully.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let app = Arc::new(App::new(Arc::new(config))?);
    match app.store.sweep() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed partial files left by an earlier run"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep storage.temp"),
    }
    let mut bound = Vec::new();
    for l in listeners {
        l.set_nonblocking(true)
            .map_err(|e| StartError::Other(format!("listener: {e}")))?;
        bound.push(
            tokio::net::TcpListener::from_std(l)
                .map_err(|e| StartError::Other(format!("listener: {e}")))?,
        );
    }
    let collector = tokio::spawn(collect_periodically(app.clone()));
    listen::serve(bound, app, shutdown).await;
    collector.abort();
    Ok(())
}

/// How often a running server collects expired resumable uploads.
const GC_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn collect_periodically(app: Arc<App>) {
    let mut tick = tokio::time::interval(GC_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match app.resumable.collect().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected expired resumable uploads"),
            Err(e) => tracing::warn!(error = %e, "resumable garbage collection failed"),
        }
    }
}

/// One pass of `porter gc`: partial files no live upload holds, and expired resumable
/// uploads no request is using (in this process or another). Returns both counts.
pub async fn collect_garbage(config: &Config) -> Result<(usize, usize), StartError> {
    let store = store::LocalStore::open(&config.storage).map_err(StartError::Storage)?;
    let partials = store::Store::sweep(&store).map_err(StartError::Storage)?;
    let local = resumable::store::LocalResumable::open(store).map_err(StartError::Storage)?;
    let engine = resumable::Engine::new(Arc::new(local));
    let uploads = engine
        .collect()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    Ok((partials, uploads))
}
