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
use crate::resumable::store::{LocalResumable, SharedResumable};
use crate::store::redis::Redis;
use crate::store::s3::{S3Store, Settings as S3Settings};
use crate::store::{LocalStore, Store};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct App {
    /// The config this app was built from; requests read it through here.
    pub config: Arc<Config>,
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    /// The `[storage.s3]` bucket, when configured: the store of S3 uploads and the
    /// source of `[[internal]] store = "s3"` downloads.
    pub s3: Option<S3Store>,
    /// One permit per upload in progress: `max_concurrent_uploads`.
    pub uploads: Arc<Semaphore>,
    /// Uploads that carry an `X-Progress-ID`.
    pub progress: Arc<Registry>,
    /// Resumable uploads (tus and friends).
    pub resumable: Arc<Engine>,
    /// Unfinished resumable uploads per client; carried over reloads.
    pub clients: Arc<crate::clients::ClientUploads>,
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
        let (store, resumable, s3) = storage(&config)?;
        let metrics = Arc::new(Metrics::new());
        let progress: Arc<Registry> = Arc::default();
        progress.share(shared_progress(&config, &resumable));
        Ok(App {
            backend: backend(&config, metrics.clone())?,
            store,
            s3,
            uploads: Arc::new(Semaphore::new(config.limits.max_concurrent_uploads)),
            progress,
            resumable,
            clients: Arc::default(),
            metrics,
            config,
        })
    }

    /// The app for a reloaded config. Counters and progress carry over; so do the
    /// store and the resumable engine (whose in-process locks must stay shared) when
    /// `[storage]` is unchanged, and the upload slots when their number is.
    pub fn reload(&self, config: Arc<Config>) -> Result<App, StartError> {
        let (store, resumable, s3) = if config.storage == self.config.storage {
            (self.store.clone(), self.resumable.clone(), self.s3.clone())
        } else {
            storage(&config)?
        };
        self.progress.share(shared_progress(&config, &resumable));
        let uploads =
            if config.limits.max_concurrent_uploads == self.config.limits.max_concurrent_uploads {
                self.uploads.clone()
            } else {
                Arc::new(Semaphore::new(config.limits.max_concurrent_uploads))
            };
        Ok(App {
            backend: backend(&config, self.metrics.clone())?,
            store,
            s3,
            uploads,
            progress: self.progress.clone(),
            resumable,
            clients: self.clients.clone(),
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

/// Where progress is mirrored for other instances: `[state]`'s Redis, when there is
/// a `[progress]` endpoint to ask.
fn shared_progress(config: &Config, engine: &Engine) -> Option<Arc<crate::store::redis::Redis>> {
    config.progress.as_ref()?;
    engine.redis().cloned()
}

/// The stores `[storage]` opens.
pub(crate) type Stores = (Arc<dyn Store>, Arc<Engine>, Option<S3Store>);

/// Opens `[storage]` (creating its directories): finished files, resumable uploads and
/// the S3 bucket if there is one.
pub(crate) fn storage(config: &Config) -> Result<Stores, StartError> {
    let local = LocalStore::open(&config.storage).map_err(StartError::Storage)?;
    let s3 = match &config.storage.s3 {
        Some(s3) => Some(
            S3Store::open(&config.storage, &s3_settings(s3)?, config.limits.buffer)
                .map_err(StartError::Storage)?,
        ),
        None => None,
    };
    let engine = match (&config.storage.state, &s3) {
        (Some(state), Some(s3)) => {
            let redis = Redis::new(&state.url, state.lock_lease)
                .map_err(|e| StartError::Other(format!("state.url: {e}")))?;
            let resumable = SharedResumable::open(
                s3.clone(),
                redis.clone(),
                &config.storage.temp,
                config.storage.dir_mode,
            )
            .map_err(StartError::Storage)?;
            Engine::shared(Arc::new(resumable), redis)
        }
        _ => Engine::new(Arc::new(
            LocalResumable::open(local.clone()).map_err(StartError::Storage)?,
        )),
    };
    let store: Arc<dyn Store> = match &s3 {
        Some(s3) if config.storage.uploads_to_s3 => Arc::new(s3.clone()),
        _ => Arc::new(local),
    };
    Ok((store, Arc::new(engine), s3))
}

/// The bucket's settings, with its keys: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
/// when both are set, else the key files.
pub fn s3_settings(s3: &crate::config::S3Storage) -> Result<S3Settings, StartError> {
    let env = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (access_key, secret_key) = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(a), Some(s)) => (a, s),
        _ => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map(|k| k.trim().to_string())
                    .map_err(|e| StartError::Other(format!("{}: {e}", p.display())))
            };
            (read(&s3.access_key_file)?, read(&s3.secret_key_file)?)
        }
    };
    Ok(S3Settings {
        s3: crate::store::s3::client::Settings {
            endpoints: s3.endpoints.clone(),
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            access_key,
            secret_key,
        },
        prefix: s3.prefix.clone(),
        part_size: s3.part_size,
    })
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
        // The id apps see in X-Porter-Key-Id: logged so a rotation can be followed.
        tracing::info!(key_id = %secret.key_id(), "signing generated requests");
        Some(secret)
    };
    Ok(Backend::new(&config.backend, secret, metrics))
}
