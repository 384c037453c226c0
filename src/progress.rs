//! Upload progress (docs/guides/authorize-and-progress.md), as nginx-upload-progress reports it: uploads carrying an
//! `X-Progress-ID` are tracked, and `GET <progress.path>?X-Progress-ID=<id>` answers with
//! their state, once as JSON or as a `text/event-stream` of changes.
//!
//! Each entry is a `watch` channel: the upload updates it per received chunk without a
//! lock, and probes read or subscribe. Finished entries are kept for `KEEP`.
//!
//! With `[state]` (docs/guides/scaling-out.md), every entry is mirrored to Redis (`porter:progress:<id>`,
//! a few writes a second at most, expiring after `KEEP`), and a probe for an id this
//! instance does not track reads it there: the probe may reach any instance.

use crate::error::{Error, ErrorKind};
use crate::http::{Body, BoxError, full};
use crate::store::redis::Redis;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a finished upload's state stays visible.
pub const KEEP: Duration = Duration::from_secs(60);

/// Most entries tracked at once; beyond it, new uploads are not tracked.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Uploading { received: u64, size: u64 },
    Done,
    Error { status: u16 },
}

impl State {
    pub fn json(&self) -> serde_json::Value {
        match self {
            State::Starting => serde_json::json!({"state": "starting"}),
            State::Uploading { received, size } => {
                serde_json::json!({"state": "uploading", "received": received, "size": size})
            }
            State::Done => serde_json::json!({"state": "done"}),
            State::Error { status } => serde_json::json!({"state": "error", "status": status}),
        }
    }

    fn is_final(&self) -> bool {
        matches!(self, State::Done | State::Error { .. })
    }

    /// The inverse of `json`, for states mirrored by another instance.
    fn from_json(v: &serde_json::Value) -> Option<State> {
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(match v.get("state")?.as_str()? {
            "starting" => State::Starting,
            "uploading" => State::Uploading {
                received: n("received")?,
                size: n("size")?,
            },
            "done" => State::Done,
            "error" => State::Error {
                status: u16::try_from(n("status")?).ok()?,
            },
            _ => return None,
        })
    }
}

/// Redis key of a mirrored entry.
fn mirror_key(id: &str) -> String {
    format!("porter:progress:{id}")
}

/// Copies an entry's changes to Redis until it reaches a final state or is dropped.
async fn mirror(redis: Arc<Redis>, id: String, mut rx: watch::Receiver<State>) {
    let key = mirror_key(&id);
    let ttl = KEEP.as_millis() as u64;
    loop {
        let s = *rx.borrow_and_update();
        if let Err(e) = redis
            .set_px(&key, s.json().to_string().as_bytes(), ttl)
            .await
        {
            tracing::debug!(%id, error = %e, "could not mirror progress to Redis");
        }
        if s.is_final() || rx.changed().await.is_err() {
            return;
        }
        // A few writes a second, however fast the chunks come.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Entry {
    state: watch::Sender<State>,
    finished: Mutex<Option<Instant>>,
    /// Shown to probes: set when the upload's first byte arrives (an upload refused
    /// before that, by a limit or `authorize`, never takes a place in the registry).
    listed: std::sync::atomic::AtomicBool,
    id: String,
    registry: std::sync::Weak<Registry>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.finished.lock().is_ok_and(|f| f.is_none())
    }
}

/// All tracked uploads: a map looked up in O(1), swept of entries finished more than
/// `KEEP` ago at most once a second (and when full), never on every request.
pub struct Registry {
    entries: Mutex<Entries>,
    /// `[state]`'s Redis, once `share` was called.
    shared: Mutex<Option<Arc<Redis>>>,
    /// Most entries held at once; beyond, new uploads are not tracked.
    capacity: usize,
}

struct Entries {
    map: HashMap<String, Arc<Entry>>,
    swept: Instant,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::with_capacity(MAX_ENTRIES)
    }
}

/// An upload's handle on its entry.
#[derive(Clone)]
pub struct Tracker(Arc<Entry>);

impl Tracker {
    pub fn add(&self, n: usize) {
        self.list();
        self.0.state.send_modify(|s| {
            if let State::Uploading { received, .. } = s {
                *received += n as u64;
            }
        });
    }

    /// Puts the entry where probes see it (once), unless another live upload holds
    /// the id by now or the registry is full.
    fn list(&self) {
        use std::sync::atomic::Ordering;
        if self.0.listed.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(registry) = self.0.registry.upgrade() {
            registry.insert(&self.0, false);
        }
    }

    /// The request ended but the upload goes on (resumable): the entry stays
    /// `uploading` and is forgotten after `KEEP` unless another request resumes it.
    pub fn pause(&self) {
        if let Ok(mut f) = self.0.finished.lock() {
            *f = Some(Instant::now());
        }
    }

    /// Records the final status of the upload's response.
    pub fn finish(&self, status: u16) {
        let state = if status < 400 {
            State::Done
        } else {
            State::Error { status }
        };
        self.0.state.send_replace(state);
        if let Ok(mut f) = self.0.finished.lock() {
            *f = Some(Instant::now());
        }
    }
}

impl crate::http::body::Observer for Tracker {
    fn add(&self, n: usize) {
        Tracker::add(self, n);
    }
}

/// An `X-Progress-ID` that a live upload already reports under: the newcomer is
/// refused, so nobody can take over another client's progress.
#[derive(Debug)]
pub struct InUse;

/// Whether `id` is a valid progress id: 8–128 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (8..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `X-Progress-ID` of a request: query parameter first, then header.
pub fn id_of(uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
    let from_query = uri.query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.eq_ignore_ascii_case("X-Progress-ID")
                .then(|| v.to_string())
        })
    });
    from_query.or_else(|| {
        headers
            .get("x-progress-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

impl Registry {
    /// Mirrors entries to `redis` from now on, and reads other instances' there.
    pub fn share(&self, redis: Option<Arc<Redis>>) {
        if let Ok(mut s) = self.shared.lock() {
            *s = redis;
        }
    }

    fn redis(&self) -> Option<Arc<Redis>> {
        self.shared.lock().ok().and_then(|s| s.clone())
    }

    /// The state here, else as another instance mirrored it.
    async fn state_anywhere(&self, id: &str) -> Option<State> {
        if let Some(e) = self.entry(id) {
            return Some(*e.state.borrow());
        }
        let bytes = self.redis()?.get(&mirror_key(id)).await.ok()??;
        State::from_json(&serde_json::from_slice(&bytes).ok()?)
    }

    pub fn with_capacity(capacity: usize) -> Registry {
        Registry {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
            shared: Mutex::default(),
            capacity,
        }
    }

    /// Drops entries finished more than `KEEP` ago: at most once a second, or now
    /// when the registry is full.
    fn sweep(entries: &mut Entries, full: bool) {
        if !full && entries.swept.elapsed() < Duration::from_secs(1) {
            return;
        }
        entries.swept = Instant::now();
        entries.map.retain(|_, e| {
            e.finished
                .lock()
                .ok()
                .and_then(|f| *f)
                .is_none_or(|t| t.elapsed() < KEEP)
        });
    }

    /// Lists `entry` under its id. A live entry of another upload keeps the id unless
    /// `replace` (a resumable upload's own id: whoever holds it owns the upload).
    fn insert(self: &Arc<Self>, entry: &Arc<Entry>, replace: bool) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        Self::sweep(&mut entries, false);
        if !replace
            && let Some(other) = entries.map.get(&entry.id)
            && !Arc::ptr_eq(other, entry)
            && other.is_live()
        {
            return false;
        }
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&entry.id) {
            Self::sweep(&mut entries, true);
            if entries.map.len() >= self.capacity {
                return false;
            }
        }
        entries.map.insert(entry.id.clone(), entry.clone());
        drop(entries);
        if let Some(redis) = self.redis() {
            tokio::spawn(mirror(redis, entry.id.clone(), entry.state.subscribe()));
        }
        true
    }

    fn entry_for(self: &Arc<Self>, id: &str, received: u64, size: u64) -> Arc<Entry> {
        Arc::new(Entry {
            state: watch::Sender::new(State::Uploading { received, size }),
            finished: Mutex::new(None),
            listed: std::sync::atomic::AtomicBool::new(false),
            id: id.to_string(),
            registry: Arc::downgrade(self),
        })
    }

    /// Tracks a client's upload under its `X-Progress-ID`, of `size` bytes (0 when
    /// unknown). The entry is listed when the first byte arrives; an id a live upload
    /// already uses is refused.
    pub fn start(self: &Arc<Self>, id: &str, size: u64) -> Result<Tracker, InUse> {
        if self.entry(id).is_some_and(|e| e.is_live()) {
            return Err(InUse);
        }
        Ok(Tracker(self.entry_for(id, 0, size)))
    }

    /// Tracks (or goes on tracking) a resumable upload under its own id, which already
    /// has `received` bytes: listed at once.
    pub fn start_at(self: &Arc<Self>, id: &str, received: u64, size: u64) -> Option<Tracker> {
        let entry = self.entry_for(id, received, size);
        entry
            .listed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.insert(&entry, true).then(|| Tracker(entry))
    }

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        let mut entries = self.entries.lock().ok()?;
        Self::sweep(&mut entries, false);
        entries.map.get(id).cloned()
    }

    pub fn state(&self, id: &str) -> State {
        self.entry(id)
            .map_or(State::Starting, |e| *e.state.borrow())
    }

    /// Answers a progress probe.
    pub async fn respond(
        self: &Arc<Self>,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = Error::new(
                ErrorKind::MethodNotAllowed,
                "progress probes are GET or HEAD",
            )
            .into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Some(id) = id_of(uri, headers).filter(|id| valid_id(id)) else {
            return Error::bad_request("X-Progress-ID must be 8 to 128 of A-Z a-z 0-9 _ -")
                .into_response();
        };
        let wants_stream = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        let (ct, body) = if wants_stream {
            ("text/event-stream", self.stream(&id))
        } else {
            let state = self.state_anywhere(&id).await.unwrap_or(State::Starting);
            ("application/json", full(state.json().to_string()))
        };
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }

    /// Server-sent events: the state now and at every change, until a final state.
    fn stream(self: &Arc<Self>, id: &str) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let event = |s: &State| Ok(Frame::data(Bytes::from(format!("data: {}\n\n", s.json()))));
            // An unknown id is `starting` until its upload begins (here, or on
            // another instance, whose mirror is followed once a second): poll for it.
            let entry = loop {
                if let Some(e) = me.entry(&id) {
                    break e;
                }
                let s = me.state_anywhere(&id).await.unwrap_or(State::Starting);
                if tx.send(event(&s)).await.is_err() || s.is_final() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            let mut rx = entry.state.subscribe();
            loop {
                let s = *rx.borrow_and_update();
                if tx.send(event(&s)).await.is_err() || s.is_final() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
                // Coalesce bursts of chunk updates into a few events a second.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        StreamBody::new(crate::http::receiver::ReceiverStream(rx)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("abcd1234"));
        assert!(valid_id(&"a".repeat(128)));
        assert!(!valid_id("short"));
        assert!(!valid_id(&"a".repeat(129)));
        assert!(!valid_id("abcd1234/.."));
        let uri: http::Uri = "/progress?a=1&X-Progress-ID=abcdefgh".parse().unwrap();
        assert_eq!(id_of(&uri, &HeaderMap::new()).as_deref(), Some("abcdefgh"));
    }

    #[test]
    fn lifecycle() {
        let r = Arc::new(Registry::default());
        assert_eq!(r.state("unknownid"), State::Starting);
        let t = r.start("upload01", 100).unwrap();
        assert_eq!(
            r.state("upload01"),
            State::Starting,
            "listed at the first byte"
        );
        t.add(40);
        assert_eq!(
            r.state("upload01"),
            State::Uploading {
                received: 40,
                size: 100
            }
        );
        assert_eq!(
            r.state("upload01").json(),
            serde_json::json!({"state":"uploading","received":40,"size":100})
        );
        t.finish(413);
        assert_eq!(
            r.state("upload01").json(),
            serde_json::json!({"state":"error","status":413})
        );
        t.finish(200);
        assert_eq!(r.state("upload01"), State::Done);
    }

    /// A live upload keeps its id; a finished one's id may be used again; a full
    /// registry tracks nothing more but keeps what it has.
    #[test]
    fn owners_and_bounds() {
        let r = Arc::new(Registry::with_capacity(2));
        let a = r.start("owner-one", 10).unwrap();
        a.add(1);
        assert!(r.start("owner-one", 10).is_err(), "taken while live");
        let b = r.start("owner-two", 10).unwrap();
        b.add(2);
        let c = r.start("owner-three", 10).unwrap();
        c.add(3);
        assert_eq!(r.state("owner-three"), State::Starting, "full: not listed");
        assert_eq!(
            r.state("owner-one"),
            State::Uploading {
                received: 1,
                size: 10
            }
        );
        a.finish(200);
        let again = r.start("owner-one", 5).unwrap();
        again.add(5);
        assert_eq!(
            r.state("owner-one"),
            State::Uploading {
                received: 5,
                size: 5
            }
        );
        // A resumable upload's own id replaces whatever was there.
        let t = r.start_at("owner-two", 7, 10).unwrap();
        t.add(1);
        assert_eq!(
            r.state("owner-two"),
            State::Uploading {
                received: 8,
                size: 10
            }
        );
    }
}
