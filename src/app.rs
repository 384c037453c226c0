//! The per-request view of the server: config snapshot, backend client, store, and the
//! process-wide upload slots.
//!
//! An `App` is built from one config. A reload builds a new one for new requests while
//! requests in flight keep the `Arc<App>` they started with; what must outlive a
//! reload (counters, progress of uploads in flight, resumable locks) is carried over.

use crate::backend::Backend;
use crate::backend::sign::Secret;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::progress::Registry;
use crate::resumable::Engine;
use crate::store::{LocalStore, Store};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct App {
    /// The config this app was built from; requests read it through here.
    pub config: Arc<Config>,
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    /// One permit per upload in progress: `max_concurrent_uploads`.
    pub uploads: Arc<Semaphore>,
    /// Uploads that carry an `X-Progress-ID`.
    pub progress: Arc<Registry>,
    /// Resumable uploads (tus and friends).
    pub resumable: Arc<Engine>,
    pub metrics: Arc<Metrics>,
}

/// Why the server could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("secret: {0}")]
    Secret(String),
    #[error("storage: {0}")]
    Storage(std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl App {
    /// Builds the app: loads (or creates) the secret and creates the storage directories.
    pub fn new(config: Arc<Config>) -> Result<App, StartError> {
        let store = LocalStore::open(&config.storage).map_err(StartError::Storage)?;
        let resumable = crate::resumable::store::LocalResumable::open(store.clone())
            .map_err(StartError::Storage)?;
        let metrics = Arc::new(Metrics::new());
        Ok(App {
            backend: backend(&config, metrics.clone())?,
            store: Arc::new(store),
            uploads: Arc::new(Semaphore::new(config.limits.max_concurrent_uploads)),
            progress: Arc::default(),
            resumable: Arc::new(Engine::new(Arc::new(resumable))),
            metrics,
            config,
        })
    }

    /// The app for a reloaded config. Counters and progress carry over; so do the
    /// store and the resumable engine (whose in-process locks must stay shared) when
    /// `[storage]` is unchanged, and the upload slots when their number is.
    pub fn reload(&self, config: Arc<Config>) -> Result<App, StartError> {
        let (store, resumable) = if config.storage == self.config.storage {
            (self.store.clone(), self.resumable.clone())
        } else {
            storage(&config)?
        };
        let uploads =
            if config.limits.max_concurrent_uploads == self.config.limits.max_concurrent_uploads {
                self.uploads.clone()
            } else {
                Arc::new(Semaphore::new(config.limits.max_concurrent_uploads))
            };
        Ok(App {
            backend: backend(&config, self.metrics.clone())?,
            store,
            uploads,
            progress: self.progress.clone(),
            resumable,
            metrics: self.metrics.clone(),
            config,
        })
    }

    /// Uploads holding a slot now.
    pub fn uploads_in_flight(&self) -> usize {
        self.config
            .limits
            .max_concurrent_uploads
            .saturating_sub(self.uploads.available_permits())
    }
}

/// Opens `[storage]` (creating its directories): finished files and resumable uploads.
fn storage(config: &Config) -> Result<(Arc<dyn Store>, Arc<Engine>), StartError> {
    let store = LocalStore::open(&config.storage).map_err(StartError::Storage)?;
    let resumable = crate::resumable::store::LocalResumable::open(store.clone())
        .map_err(StartError::Storage)?;
    Ok((Arc::new(store), Arc::new(Engine::new(Arc::new(resumable)))))
}

/// The backend client, with the signing secret loaded (or created) when uploads need it.
fn backend(config: &Config, metrics: Arc<Metrics>) -> Result<Backend, StartError> {
    let secret = if config.uploads.is_empty() && std::env::var_os("PORTER_SECRET").is_none() {
        None
    } else {
        let (secret, created) =
            Secret::load(&config.backend.secret_file, true).map_err(StartError::Secret)?;
        if created {
            tracing::info!(path = %config.backend.secret_file.display(), "created a new signing secret");
        }
        Some(secret)
    };
    Ok(Backend::new(&config.backend, secret, metrics))
}
