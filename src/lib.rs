//! # porter
//!
//! An upload-offloading reverse proxy. porter sits in front of a web app, streams
//! upload bytes to disk (hashing as they pass), and sends the app a small, signed
//! metadata request instead of the body. Everything else passes through, buffered so
//! slow clients never hold an app worker.
//!
//! ## Layout
//!
//! The modules sit in layers, and a module names only modules of its own layer or
//! below (`docs/architecture.md`; `scripts/layers` checks it), from the process down:
//!
//! * `server`, `preflight` (the checks that touch the world), `main`;
//! * `listen`: accept loops, TLS, `max_connections`, PROXY protocol, systemd;
//!   `listen::conn` serves one connection with hyper and owns the idle watchdog;
//!   `listen::admin` is the metrics listener;
//! * `service`: one request: hygiene, `Host`, routing (`route`), the one response path
//!   and the access log; `dispatch`: the one `match` on an upload route's kind;
//! * `protocol`: how clients upload: `upload` (multipart, raw), `tus` (tus 1.0 and the
//!   IETF draft), `chunked` (django-chunked-upload), `nginx` (nginx-upload-module's
//!   resumable segments); `proxy` (passthrough) and `download` (X-Accel-Redirect,
//!   X-Sendfile, static) are the other destinations of a request;
//! * `ingest`: what the protocols share: admission, `authorize`, the guarded body, the
//!   generated request; `ingest::resumable` (the steps every resumable protocol takes)
//!   and `ingest::complete` (the one completion path); `app`: one generation's parts;
//! * `resumable`: the protocol-neutral engine (state, locks, spools) over `store`:
//!   finished files, resumable state and data, lockers, one folder per store (`local`,
//!   `s3`, `memory`); `backend`: the one client for the app (signing, the metadata
//!   body); `sink`: hashing writes off the async workers; `progress`, `clients`,
//!   `metrics`;
//! * plumbing: `http` (bodies, headers, 1xx heads, the multipart parser, names),
//!   `route`, `config` (pure validation), `error` (the one kind table), `namespace`,
//!   `filesystem` (local or remote, by statfs magic).
//!
//! `run` takes already-bound listeners, so tests bind `127.0.0.1:0` and hand them in.

pub mod access_log;
pub mod app;
pub mod backend;
pub mod clients;
pub mod config;
pub mod dispatch;
pub mod download;
pub mod error;
pub mod filesystem;
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
pub mod workers;

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
