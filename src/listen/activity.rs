//! What a connection's watchdog knows: when bytes last moved, whether a write is
//! blocked, when a request head began, which requests are in flight, and which HTTP/2
//! response bodies wait on their client. `conn` updates it as bytes move; a request's
//! [`InFlight`] guard and the [`Watcher`] of its response reach it from `service`
//! without `service` and `conn` importing each other.

use crate::http::Frames;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The clocks the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub keepalive: Duration,
}

/// What the watchdog knows about a connection.
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` when bytes last moved.
    last: AtomicU64,
    /// Requests whose response has not finished: the keep-alive clock runs only at zero.
    in_flight: AtomicUsize,
    /// Milliseconds since `start` (plus one) when a write started to block; 0: not blocked.
    pub(super) write_blocked_since: AtomicU64,
    /// Milliseconds since `start` (plus one) when the current request head began (the
    /// connection opened, or the first byte after a finished request); 0: no head
    /// pending. hyper's own header timeout would also run while a keep-alive
    /// connection idles, cutting `keepalive_timeout` short, so porter keeps this clock.
    head_since: AtomicU64,
    /// HTTP/2 response bodies in progress, for the stall check (`Watched`).
    streams: std::sync::Mutex<Vec<std::sync::Weak<StreamSlot>>>,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            streams: std::sync::Mutex::default(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks a request as started; the returned guard ends it. `slot` is its
    /// `max_requests` permit, if one was free.
    pub fn begin(self: &Arc<Self>, slot: Option<OwnedSemaphorePermit>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        InFlight(self.clone(), slot)
    }

    /// Ends the HTTP/2 streams whose client has not taken a frame for `idle`: their
    /// body (and with it the backend request, the file, the request's slot) is
    /// dropped now, and the stream is reset when hyper next polls it.
    pub(super) fn reap_stalled(&self, idle: Duration) {
        let now = self.now_ms();
        let idle = idle.as_millis() as u64;
        let stalled: Vec<Arc<StreamSlot>> = match self.streams.lock() {
            Ok(mut list) => {
                list.retain(|w| w.strong_count() > 0);
                list.iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .filter(|s| {
                        let handed = s.handed.load(Ordering::Relaxed);
                        handed != 0 && now.saturating_sub(handed - 1) > idle
                    })
                    .collect()
            }
            Err(_) => return,
        };
        for slot in stalled {
            let body = slot.body.lock().ok().and_then(|mut b| b.take());
            if body.is_some() {
                tracing::info!("reset an HTTP/2 stream whose client stopped reading");
            }
            drop(body);
        }
    }

    /// A byte arrived: if no request is in progress, a new head has begun.
    pub(super) fn read_some(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let since = self.now_ms() + 1;
            let _ =
                self.head_since
                    .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub(super) fn expired(&self, t: &Timeouts) -> bool {
        let now = self.now_ms();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let head = self.head_since.load(Ordering::Relaxed);
            if head != 0 {
                return now.saturating_sub(head - 1) > t.header.as_millis() as u64;
            }
            return now.saturating_sub(self.last.load(Ordering::Relaxed))
                > t.keepalive.as_millis() as u64;
        }
        let idle = t.idle;
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        blocked != 0 && now.saturating_sub(blocked - 1) > idle.as_millis() as u64
    }
}

/// A request in progress on a connection; dropped when its response is done. It holds
/// the request's `max_requests` slot, if it got one.
pub struct InFlight(Arc<Activity>, Option<OwnedSemaphorePermit>);

impl InFlight {
    /// Whether the request got a `max_requests` slot (else it is answered 503).
    pub fn admitted(&self) -> bool {
        self.1.is_some()
    }

    /// Puts an HTTP/2 response body under the connection's stall check.
    pub fn watcher(&self) -> Watcher {
        Watcher(self.0.clone())
    }
}

/// Registers response bodies with their connection's stall check.
pub struct Watcher(Arc<Activity>);

impl Watcher {
    /// An HTTP/2 stream whose window the client keeps shut never blocks the socket, so
    /// no connection clock sees it; this body is ended by the watchdog once the client
    /// has not taken a frame for `idle_timeout`.
    pub fn watch(self, body: crate::http::Body) -> crate::http::Body {
        use http_body_util::BodyExt;
        let slot = Arc::new(StreamSlot {
            body: std::sync::Mutex::new(Some(body)),
            handed: AtomicU64::new(0),
        });
        if let Ok(mut list) = self.0.streams.lock() {
            list.push(Arc::downgrade(&slot));
        }
        Watched {
            slot,
            activity: self.0,
            reset: false,
        }
        .boxed()
    }
}

/// A response body the watchdog can end.
struct StreamSlot {
    body: std::sync::Mutex<Option<crate::http::Body>>,
    /// Milliseconds since the connection's start (plus one) when a frame was handed to
    /// hyper and not asked for again since; 0 while porter is the one waiting.
    handed: AtomicU64,
}

struct Watched {
    slot: Arc<StreamSlot>,
    activity: Arc<Activity>,
    /// The stall error was given (once; then the body ends).
    reset: bool,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames<Self::Error> {
        self.slot.handed.store(0, Ordering::Relaxed);
        let polled = match self.slot.body.lock() {
            Ok(mut b) => b.as_mut().map(|body| Pin::new(body).poll_frame(cx)),
            Err(_) => None,
        };
        match polled {
            Some(r) => {
                if matches!(r, Poll::Ready(Some(Ok(_)))) {
                    let at = self.activity.now_ms() + 1;
                    self.slot.handed.store(at, Ordering::Relaxed);
                }
                r
            }
            None if !self.reset => {
                self.reset = true;
                Poll::Ready(Some(Err("the client stopped reading this stream".into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot
            .body
            .lock()
            .map_or(true, |b| b.as_ref().is_some_and(|b| b.is_end_stream()))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.slot
            .body
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|b| b.size_hint()))
            .unwrap_or_default()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}
