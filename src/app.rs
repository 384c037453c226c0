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
use crate::resumable::{Engine, Spools};
use crate::store::local::LocalResumable;
use crate::store::locker::{Local, Locker, RedisLocker};
use crate::store::redis::Redis;
use crate::store::resumable::ResumableStore;
use crate::store::s3::{S3Resumable, S3Store, Settings as S3Settings};
use crate::store::{LocalStore, Objects, Store};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct App {
    /// The config this app was built from; requests read it through here.
    pub config: Arc<Config>,
    pub backend: Backend,
    /// Where multipart and raw uploads' files go.
    pub store: Arc<dyn Store>,
    /// Finished files read back by key (`[[internal]] store = "s3"` downloads): the
    /// `[storage.s3]` bucket, when configured.
    pub objects: Option<Arc<dyn Objects>>,
    /// `[state]`'s Redis, when configured: where progress is mirrored for other
    /// instances.
    pub redis: Option<Arc<Redis>>,
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
        let storage = storage(&config)?;
        App::with_storage(config, storage)
    }

    /// Builds the app over stores opened elsewhere (tests: `Storage::in_memory`).
    pub fn with_storage(config: Arc<Config>, storage: Storage) -> Result<App, StartError> {
        let Storage {
            store,
            resumable,
            objects,
            redis,
        } = storage;
        let metrics = Arc::new(Metrics::new());
        let progress: Arc<Registry> = Arc::default();
        progress.share(shared_progress(&config, &redis));
        Ok(App {
            backend: backend(&config, metrics.clone())?,
            store,
            objects,
            redis,
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
        let Storage {
            store,
            resumable,
            objects,
            redis,
        } = if config.storage == self.config.storage {
            Storage {
                store: self.store.clone(),
                resumable: self.resumable.clone(),
                objects: self.objects.clone(),
                redis: self.redis.clone(),
            }
        } else {
            storage(&config)?
        };
        self.progress.share(shared_progress(&config, &redis));
        let uploads =
            if config.limits.max_concurrent_uploads == self.config.limits.max_concurrent_uploads {
                self.uploads.clone()
            } else {
                Arc::new(Semaphore::new(config.limits.max_concurrent_uploads))
            };
        Ok(App {
            backend: backend(&config, self.metrics.clone())?,
            store,
            objects,
            redis,
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
fn shared_progress(config: &Config, redis: &Option<Arc<Redis>>) -> Option<Arc<Redis>> {
    config.progress.as_ref()?;
    redis.clone()
}

/// What `[storage]` opens.
pub struct Storage {
    pub store: Arc<dyn Store>,
    pub resumable: Arc<Engine>,
    pub objects: Option<Arc<dyn Objects>>,
    pub redis: Option<Arc<Redis>>,
}

impl Storage {
    /// Everything in one memory store, on one instance; its spools go to `spools`.
    /// Must be called on the runtime.
    pub fn in_memory(store: &crate::store::memory::MemoryStore, spools: Spools) -> Storage {
        let engine = Engine::new(Arc::new(store.clone()), Arc::new(Local), spools);
        Storage {
            store: Arc::new(store.clone()),
            resumable: Arc::new(engine),
            objects: Some(Arc::new(store.clone())),
            redis: None,
        }
    }
}

/// Opens `[storage]` (creating its directories): finished files, resumable uploads and
/// the S3 bucket if there is one. Each store is picked here, and only here.
pub(crate) fn storage(config: &Config) -> Result<Storage, StartError> {
    let cfg = &config.storage;
    let local = LocalStore::open(cfg).map_err(StartError::Storage)?;
    let s3 = match &cfg.s3 {
        Some(s3) => Some(
            S3Store::open(cfg, &s3_settings(s3)?, config.limits.buffer)
                .map_err(StartError::Storage)?,
        ),
        None => None,
    };
    let redis = match &cfg.state {
        Some(state) => Some(
            Redis::new(&state.url, state.lock_lease)
                .map_err(|e| StartError::Other(format!("state.url: {e}")))?,
        ),
        None => None,
    };
    let (resumable, locker): (Arc<dyn ResumableStore>, Arc<dyn Locker>) = match (&redis, &s3) {
        (Some(redis), Some(s3)) => (
            Arc::new(S3Resumable::new(s3.clone(), redis.clone())),
            Arc::new(RedisLocker(redis.clone())),
        ),
        _ => (
            Arc::new(LocalResumable::open(local.clone()).map_err(StartError::Storage)?),
            Arc::new(Local),
        ),
    };
    let spools = cfg.temp.join("resumable");
    crate::store::local::ensure_dir(&spools, cfg.dir_mode).map_err(StartError::Storage)?;
    let engine = Engine::new(resumable, locker, Spools::new(spools, cfg.file_mode));
    let store: Arc<dyn Store> = match &s3 {
        Some(s3) if cfg.uploads_to_s3 => Arc::new(s3.clone()),
        _ => Arc::new(local),
    };
    Ok(Storage {
        store,
        resumable: Arc::new(engine),
        objects: s3.map(|s3| Arc::new(s3) as Arc<dyn Objects>),
        redis,
    })
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
    let workers = crate::workers::count(config.server.workers);
    Ok(Backend::new(&config.backend, workers, secret, metrics))
}
