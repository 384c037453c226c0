//! The per-request view of the server: config snapshot, backend client, store, and the
//! process-wide upload slots.

use crate::backend::Backend;
use crate::backend::sign::Secret;
use crate::config::Config;
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
    pub progress: Arc<crate::progress::Registry>,
    /// Resumable uploads (tus and friends).
    pub resumable: crate::resumable::Engine,
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
        let store = LocalStore::open(&config.storage).map_err(StartError::Storage)?;
        let resumable = crate::resumable::store::LocalResumable::open(store.clone())
            .map_err(StartError::Storage)?;
        Ok(App {
            backend: Backend::new(&config.backend, secret),
            store: Arc::new(store),
            uploads: Arc::new(Semaphore::new(config.limits.max_concurrent_uploads)),
            progress: Arc::default(),
            resumable: crate::resumable::Engine::new(Arc::new(resumable)),
            config,
        })
    }
}
