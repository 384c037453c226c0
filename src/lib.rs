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
//! * `server`: the running process: listeners, SIGHUP reloads (config swapped
//!   atomically, in-flight requests keep theirs), graceful drain, periodic GC.
//! * `listen`: accept loops, TLS (`listen::tls`), `max_connections`; `listen::conn`
//!   serves one connection with hyper and owns the idle / keep-alive watchdog;
//!   `listen::activity` is what its watchdog knows (requests in flight, stalled HTTP/2
//!   streams); `listen::admin` is the metrics listener; `listen::systemd` speaks
//!   sd_notify and takes socket-activated listeners.
//! * `service`: one request: strip what clients may not send, check `Host`, route,
//!   dispatch, then the one response path (strips `X-Accel-*`, watches HTTP/2 streams,
//!   writes the access log).
//! * `dispatch`: the one `match` on an upload route's kind, with its progress tracking.
//! * `route`: path normalisation, canonical encoding, route choice (SPEC §3).
//! * `upload`: the multipart and raw front-ends (`form`, on the sans-I/O `multipart`
//!   parser) → `FileReceiver` → deliver the metadata.
//! * `ingest`: what every upload protocol shares: admission, `authorize`, the guarded
//!   body, the generated request's target, headers and encoding.
//! * `resumable`: resumable uploads on one engine (tusd's shape: front-ends per
//!   protocol over `Engine`, a store, per-upload locks): tus and the IETF draft on a
//!   `tus` route, django-chunked-upload, nginx-upload-module's resumable protocol.
//! * `proxy`: passthrough with request and response buffering, and WebSocket tunnels.
//! * `sink`: hashes and writes a file's bytes off the async workers, with backpressure.
//! * `clients`: unfinished resumable uploads per client, for
//!   `max_incomplete_per_client`.
//! * `store`: where bytes live (`Store` trait; `LocalStore` for files on disk).
//! * `backend`: the one client for the app: pooled, signed generated requests.
//! * `config`: the TOML file, parsed and validated once into typed structs (pure);
//!   `preflight` is what touches the world: directories, key files, certificates.
//! * `error`: the one error kind enum and its mapping to HTTP.
//! * `namespace`: which client field names could pass for porter's metadata under some
//!   framework's reading of them (dropped or refused wherever fields come in).
//! * `metrics`: Prometheus counters that survive reloads.
//! * `http`: body types, header hygiene and 1xx informational heads (which hyper's
//!   server cannot send) shared by all of the above.
//!
//! `run` takes already-bound listeners, so tests bind `127.0.0.1:0` and hand them in.

pub mod app;
pub mod backend;
pub mod clients;
pub mod config;
pub mod dispatch;
pub mod download;
pub mod error;
pub mod http;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod namespace;
pub mod preflight;
pub mod progress;
pub mod protocol;
pub mod proxy;
pub mod resumable;
pub mod route;
pub mod server;
pub mod service;
pub mod sink;
pub mod store;

#[cfg(test)]
mod tests;

pub use app::{App, StartError};
pub use config::Config;

use std::future::Future;

/// Runs porter on `listeners` until `shutdown` resolves, then drains gracefully.
///
/// Listeners are matched to `server.listen` entries by position when their numbers
/// agree (as `porter serve` binds them); otherwise each is known by its own address.
/// For reloads, drive [`server::run`] with a [`server::Control`] channel instead.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let entries = config.server.listen.clone();
    let by_position = entries.len() == listeners.len();
    let mut bound = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let entry = if by_position {
            entries[i].clone()
        } else {
            let addr = listener
                .local_addr()
                .map_err(|e| StartError::Other(format!("listener: {e}")))?;
            config::Listen::Addr(addr)
        };
        bound.push(server::Bound { entry, listener });
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let stop = async move {
        shutdown.await;
        let _ = tx.send(server::Control::Shutdown).await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = server::run(bound, config, rx) => r,
        () = stop => Ok(()),
    }
}

/// `porter check --online`: whether `[storage.s3]`'s bucket answers (with its keys).
pub async fn reach_bucket(s3: &config::S3Storage) -> Result<(), String> {
    let settings = app::s3_settings(s3).map_err(|e| e.to_string())?;
    let client = store::s3::client::S3::new(&settings.s3)?;
    match tokio::time::timeout(std::time::Duration::from_secs(10), client.probe()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// `porter check --online`: whether `[state]`'s Redis answers.
pub async fn reach_redis(state: &config::SharedState) -> Result<(), String> {
    let redis =
        store::redis::Redis::new(&state.url, state.lock_lease).map_err(|e| e.to_string())?;
    match tokio::time::timeout(std::time::Duration::from_secs(10), redis.ping()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// One pass of `porter gc`: partial files no live upload holds, and expired resumable
/// uploads no request is using (in this process or another). Returns both counts.
pub async fn collect_garbage(config: &Config) -> Result<(usize, usize), StartError> {
    let app::Storage {
        store,
        resumable: engine,
        ..
    } = app::storage(config)?;
    let partials = tokio::task::spawn_blocking(move || store.sweep())
        .await
        .map_err(|e| StartError::Other(e.to_string()))?
        .map_err(StartError::Storage)?;
    let uploads = engine
        .collect()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    Ok((partials, uploads))
}
