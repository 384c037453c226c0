//! Shared state in Redis (docs/guides/scaling-out.md `[state]`): resumable uploads' state, per-upload
//! locks held by lease, and the "stop, I take this upload over" signal between
//! instances.
//!
//! Why leases: an instance that dies (kill -9, a lost machine) cannot release its
//! locks. A lock is a key set with `NX PX lease` holding a random token; its holder
//! renews it every lease/3 and deletes it only if the token is still its own, so a
//! lock whose holder died is free again after one lease, and a holder that lost its
//! lease (paused too long) learns it and stops writing.
//!
//! Keys: `porter:up:<id>` (an upload's state, JSON), `porter:data:<id>` (a hash: the
//! data store's own bookkeeping), `porter:lock:<id>` (the lease), channel
//! `porter:stop` (ids to take over).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

const STOP_CHANNEL: &str = "porter:stop";
/// The longest any one Redis command may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis error, as text (the callers map it to their own error kinds).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(String);

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, RedisError>;

/// One Redis server, reached through a connection that reconnects by itself.
pub struct Redis {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    lease: Duration,
    /// This process, in the stop messages it sends (it ignores its own).
    instance: String,
    /// The leases this process holds, by name: their token, and until when they are
    /// surely still ours (the last renewal sent + the lease). Writes under a lease
    /// check it (`holds`), and state writes are fenced by the token (`set_fenced`).
    held: std::sync::Mutex<std::collections::HashMap<String, Held>>,
}

#[derive(Clone)]
struct Held {
    token: String,
    until: tokio::time::Instant,
}

impl Redis {
    /// Does not connect yet: porter starts (and answers `/readyz` with 503) while
    /// Redis is down.
    pub fn new(url: &str, lease: Duration) -> Result<Arc<Redis>> {
        Ok(Arc::new(Redis {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            lease,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            held: std::sync::Mutex::default(),
        }))
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(3)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(conn.clone())
    }

    /// Runs one command, bounded by `TIMEOUT` however the connection behaves (a
    /// reconnecting connection may otherwise wait on a dead server).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let run = async {
            let mut c = self.conn().await?;
            Ok(cmd.query_async(&mut c).await?)
        };
        tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| RedisError("no answer in time".into()))?
    }

    /// Runs a Lua script, bounded as `query` is.
    async fn script<T: redis::FromRedisValue>(
        &self,
        code: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T> {
        let script = redis::Script::new(code);
        let run = async {
            let mut c = self.conn().await?;
            let mut call = script.prepare_invoke();
            for k in keys {
                call.key(*k);
            }
            for a in args {
                call.arg(*a);
            }
            Ok(call.invoke_async(&mut c).await?)
        };
        tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| RedisError("no answer in time".into()))?
    }

    /// `PING`, for `/readyz` and `porter check --online`.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    /// Sets `key`, expiring after `ms` milliseconds.
    pub async fn set_px(&self, key: &str, value: &[u8], ms: u64) -> Result<()> {
        self.query(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ms))
            .await
    }

    /// Sets `key` only if it does not exist; returns whether it did.
    pub async fn set_new(&self, key: &str, value: &[u8]) -> Result<bool> {
        let r: Option<String> = self
            .query(redis::cmd("SET").arg(key).arg(value).arg("NX"))
            .await?;
        Ok(r.is_some())
    }

    pub async fn del(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 = self.query(redis::cmd("DEL").arg(keys)).await?;
        Ok(())
    }

    pub async fn hset(&self, key: &str, field: &str, value: &str) -> Result<()> {
        let _: i64 = self
            .query(redis::cmd("HSET").arg(key).arg(field).arg(value))
            .await?;
        Ok(())
    }

    pub async fn hgetall(&self, key: &str) -> Result<Vec<(String, String)>> {
        self.query(redis::cmd("HGETALL").arg(key)).await
    }

    /// Every key matching `pattern` (SCAN, so a large keyspace does not block Redis).
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(batch);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Takes the lease on `name`, or `None` if another holder has it. The lease is
    /// renewed in the background until the returned value is dropped; `lost` fires if
    /// a renewal finds the lease gone (its holder must stop writing).
    pub async fn lease(
        self: &Arc<Self>,
        name: &str,
        lost: impl FnOnce() + Send + 'static,
    ) -> Result<Option<Lease>> {
        let key = lock_key(name);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let started = tokio::time::Instant::now();
        let got: Result<Option<String>> = self
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                // The SET may have landed with its answer lost: undo it, or the upload
                // stays locked by no one for a whole lease.
                tokio::spawn(release(self.clone(), name.to_string(), token));
                return Err(e);
            }
        };
        if got.is_none() {
            return Ok(None);
        }
        self.set_held(name, &token, started + self.lease);
        let renew = tokio::spawn(renew(self.clone(), name.to_string(), token.clone(), lost));
        Ok(Some(Lease {
            redis: self.clone(),
            name: name.to_string(),
            token,
            renew,
        }))
    }

    fn set_held(&self, name: &str, token: &str, until: tokio::time::Instant) {
        if let Ok(mut h) = self.held.lock() {
            h.insert(
                name.to_string(),
                Held {
                    token: token.to_string(),
                    until,
                },
            );
        }
    }

    fn forget(&self, name: &str, token: &str) {
        if let Ok(mut h) = self.held.lock()
            && h.get(name).is_some_and(|held| held.token == token)
        {
            h.remove(name);
        }
    }

    fn held(&self, name: &str) -> Option<Held> {
        self.held.lock().ok()?.get(name).cloned()
    }

    /// Whether this process may still write under lease `name`: true while the lease is
    /// surely ours, and when this process holds none (no lock is in play).
    pub fn holds(&self, name: &str) -> bool {
        self.held(name)
            .is_none_or(|h| h.until > tokio::time::Instant::now())
    }

    /// Sets `key` if this process's lease `name` is still the lock in Redis (a holder
    /// that lost it, paused past its lease, cannot overwrite its successor's writes).
    pub async fn set_fenced(&self, name: &str, key: &str, value: &[u8]) -> Result<()> {
        let Some(held) = self.held(name) else {
            return self.set(key, value).await;
        };
        let lock = lock_key(name);
        let done: i64 = self
            .script(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 redis.call('SET', KEYS[2], ARGV[2]) return 1 else return 0 end",
                &[&lock, key],
                &[held.token.as_bytes(), value],
            )
            .await?;
        fenced(done)
    }

    /// `HSET key field value`, fenced as `set_fenced` is.
    pub async fn hset_fenced(&self, name: &str, key: &str, field: &str, value: &str) -> Result<()> {
        let Some(held) = self.held(name) else {
            return self.hset(key, field, value).await;
        };
        let lock = lock_key(name);
        let done: i64 = self
            .script(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1 else return 0 end",
                &[&lock, key],
                &[held.token.as_bytes(), field.as_bytes(), value.as_bytes()],
            )
            .await?;
        fenced(done)
    }

    /// Asks whichever instance holds upload `id` to stop (docs/guides/scaling-out.md, IETF draft takeover).
    pub async fn publish_stop(&self, id: &str) -> Result<()> {
        let _: i64 = self
            .query(
                redis::cmd("PUBLISH")
                    .arg(STOP_CHANNEL)
                    .arg(format!("{id} {}", self.instance)),
            )
            .await?;
        Ok(())
    }

    /// Calls `f` with every id another instance asks to stop, for as long as the
    /// returned task runs (it resubscribes after Redis comes back).
    pub fn on_stop(
        self: &Arc<Self>,
        f: impl Fn(&str) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let redis = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            loop {
                let started = tokio::time::Instant::now();
                if let Err(e) = redis.listen_stops(&f).await {
                    // Once per outage, not once per retry.
                    if pause == Duration::from_secs(1) {
                        tracing::warn!(error = %e, "the takeover subscription to Redis broke; retrying");
                    }
                }
                pause = if started.elapsed() > Duration::from_secs(60) {
                    Duration::from_secs(1)
                } else {
                    (pause * 2).min(Duration::from_secs(30))
                };
                tokio::time::sleep(pause).await;
            }
        })
    }

    async fn listen_stops(&self, f: &(impl Fn(&str) + Send + Sync)) -> Result<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(STOP_CHANNEL).await?;
        let mut stream = pubsub.on_message();
        loop {
            let next = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
            })
            .await;
            let Some(msg) = next else {
                return Err(RedisError("the subscription ended".into()));
            };
            // "<id> <instance>": a stop this process sent is not for it (the request
            // that sent it would stop itself once it holds the upload).
            if let Ok(text) = msg.get_payload::<String>()
                && let Some((id, from)) = text.split_once(' ')
                && from != self.instance
            {
                f(id);
            }
        }
    }
}

/// Renews a lease every third of its length. The lease is surely ours until the last
/// renewal *sent* plus the lease; each attempt is bounded by what is left of that, and
/// when nothing is left the holder is told (`lost`) before a successor can have it.
async fn renew(redis: Arc<Redis>, name: String, token: String, lost: impl FnOnce()) {
    let key = lock_key(&name);
    let ms = u64::try_from(redis.lease.as_millis())
        .unwrap_or(u64::MAX)
        .to_string();
    let mut until = tokio::time::Instant::now() + redis.lease;
    loop {
        tokio::time::sleep(redis.lease / 3).await;
        let sent = tokio::time::Instant::now();
        let left = until.saturating_duration_since(sent);
        let keys = [key.as_str()];
        let args = [token.as_bytes(), ms.as_bytes()];
        match tokio::time::timeout(left, redis.script::<i64>(RENEW, &keys, &args)).await {
            Ok(Ok(1)) => {
                until = sent + redis.lease;
                redis.set_held(&name, &token, until);
            }
            // Redis unreachable: try again while the lease surely lasts.
            Ok(Err(e)) if tokio::time::Instant::now() + redis.lease / 3 < until => {
                tracing::warn!(%key, error = %e, "could not renew a lock lease");
            }
            _ => {
                tracing::warn!(%key, "lost a lock lease: stopping the request that held it");
                // Kept, expired: writes under it now fail rather than go unfenced.
                redis.set_held(&name, &token, sent);
                lost();
                return;
            }
        }
    }
}

fn lock_key(name: &str) -> String {
    format!("porter:lock:{name}")
}

fn fenced(done: i64) -> Result<()> {
    if done == 1 {
        Ok(())
    } else {
        Err(RedisError(
            "this instance lost the upload's lock (its lease ran out): not written".into(),
        ))
    }
}

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

/// A held lease; released (if still ours) when dropped.
pub struct Lease {
    redis: Arc<Redis>,
    name: String,
    token: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Releases the lease now (and waits for Redis to confirm): for a process about to
    /// exit, where the release `Drop` starts in the background would never run.
    pub async fn release(mut self) {
        self.renew.abort();
        let (name, token) = (
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
        );
        release(self.redis.clone(), name, token).await;
    }
}

async fn release(redis: Arc<Redis>, name: String, token: String) {
    redis.forget(&name, &token);
    let key = lock_key(&name);
    let r: Result<i64> = redis.script(RELEASE, &[&key], &[token.as_bytes()]).await;
    if let Err(e) = r {
        tracing::warn!(%key, error = %e, "could not release a lock (it expires by lease)");
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        if self.name.is_empty() {
            return;
        }
        let release = release(self.redis.clone(), self.name.clone(), self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release);
        }
    }
}
