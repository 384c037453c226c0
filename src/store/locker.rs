//! Per-upload locks across processes (tusd's locker): the engine keeps its own
//! in-process lock per upload, and asks a `Locker` for the lease that keeps other
//! instances off the upload while it holds it.
//!
//! * `Local`: one instance; the in-process lock is the whole lock. (A `porter gc` in
//!   another process is kept off by the local store's own file locks.)
//! * `RedisLocker`: many instances over `[state]`: the lease is a Redis key that its
//!   holder renews, and a takeover ("stop, I take this upload over") travels over a
//!   Redis channel.

use crate::error::{Error, ErrorKind};
use crate::store::redis::{Redis, RedisError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs when a lease is lost (its holder must stop writing).
pub type OnLost = Box<dyn FnOnce() + Send + 'static>;

/// What runs when another process asks this one to stop an upload.
pub type OnStop = Box<dyn Fn(&str) + Send + Sync + 'static>;

pub trait Locker: Send + Sync + 'static {
    /// Takes upload `id`'s lease, or `None` while another process holds it. `lost`
    /// runs if the lease is lost later.
    fn lease<'a>(
        &'a self,
        id: &'a str,
        lost: OnLost,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease>>, Error>>;
    /// Asks the process holding upload `id` to stop.
    fn ask_stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// Calls `stop` with every id another process asks this one to stop, for as long
    /// as the returned task runs; `None` where there is no other process.
    fn on_stop(&self, stop: OnStop) -> Option<tokio::task::JoinHandle<()>>;
    /// Whether the locks can be taken now (`/readyz`).
    fn probe(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A held lease, released when dropped.
pub trait Lease: Send + Sync {
    /// Releases it now, waiting until other processes can see it free.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// One instance: every lease is granted at once.
pub struct Local;

struct LocalLease;

impl Lease for LocalLease {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Locker for Local {
    fn lease<'a>(
        &'a self,
        _id: &'a str,
        _lost: OnLost,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease>>, Error>> {
        Box::pin(async { Ok(Some(Box::new(LocalLease) as Box<dyn Lease>)) })
    }

    fn ask_stop<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn on_stop(&self, _stop: OnStop) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Leases in Redis (`[state]`).
pub struct RedisLocker(pub Arc<Redis>);

fn unavailable(e: RedisError) -> Error {
    Error::new(ErrorKind::Busy, e.to_string())
}

impl Lease for crate::store::redis::Lease {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin((*self).release())
    }
}

impl Locker for RedisLocker {
    fn lease<'a>(
        &'a self,
        id: &'a str,
        lost: OnLost,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease>>, Error>> {
        Box::pin(async move {
            let lease = self.0.lease(id, lost).await.map_err(unavailable)?;
            Ok(lease.map(|l| Box::new(l) as Box<dyn Lease>))
        })
    }

    fn ask_stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.0.publish_stop(id).await.map_err(unavailable) })
    }

    fn on_stop(&self, stop: OnStop) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.0.on_stop(stop))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(5), self.0.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("the shared state: {e}")),
                Err(_) => Err("the shared state (Redis) does not answer".into()),
            }
        })
    }
}
