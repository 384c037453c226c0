//! One client connection: hyper serves it, and a watchdog closes it when it idles.
//!
//! hyper 1.x has no keep-alive idle timeout and no timeout for a stalled response write,
//! so the socket is wrapped in `TrackedIo`, which records when bytes last moved and
//! since when a write has been blocked; the watchdog compares that with the config.
//! A stalled request *body* is caught where it is read (`GuardedBody`), so the handler
//! can answer 408 and clean up.

use super::{Generation, Live};
use crate::http::headers::Peer;
use crate::http::informational::{Informational, Shared};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

/// What the watchdog knows about a connection.
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` when bytes last moved.
    last: AtomicU64,
    /// Requests whose response has not finished: the keep-alive clock runs only at zero.
    in_flight: AtomicUsize,
    /// Milliseconds since `start` (plus one) when a write started to block; 0: not blocked.
    write_blocked_since: AtomicU64,
    /// Milliseconds since `start` (plus one) when the current request head began (the
    /// connection opened, or the first byte after a finished request); 0: no head
    /// pending. hyper's own header timeout would also run while a keep-alive
    /// connection idles, cutting `keepalive_timeout` short, so porter keeps this clock.
    head_since: AtomicU64,
    /// HTTP/2 response bodies in progress, for the stall check (`Watched`).
    streams: std::sync::Mutex<Vec<std::sync::Weak<StreamSlot>>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            streams: std::sync::Mutex::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
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
    fn reap_stalled(&self, idle: Duration) {
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
    fn read_some(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let since = self.now_ms() + 1;
            let _ =
                self.head_since
                    .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn expired(&self, t: &Timeouts) -> bool {
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

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
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

/// A socket that reports its activity, and writes the informational heads that
/// requests queue (`crate::http::informational`, which explains why that is safe).
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    interim: Arc<Shared>,
    /// hyper has written since it last flushed: it may still hold bytes of a response,
    /// and a queued 1xx head may not go out before them.
    dirty: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.interim.register(cx.waker());
        if !self.dirty {
            // An error here shows again on hyper's next write; a full socket wakes us.
            let _ = self.poll_interim(cx);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> TrackedIo<T> {
    /// Writes a queued informational head, if any.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.interim.pending() {
            return Poll::Ready(Ok(()));
        }
        let TrackedIo { inner, interim, .. } = self;
        let written = interim.write_with(|b| match Pin::new(&mut *inner).poll_write(cx, b) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        });
        written.map_or(Poll::Pending, Poll::Ready)
    }

    /// Before hyper writes: a queued head goes first, or is dropped if hyper may still
    /// hold bytes of an earlier response.
    fn poll_before_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.interim.pending() && self.dirty && self.interim.discard() {
            tracing::debug!("dropped an informational response: an earlier one is unsent");
        }
        self.poll_interim(cx)
    }

    fn wrote(&mut self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.dirty = true;
        }
        self.note(r);
    }

    fn note<R>(&self, r: &Poll<R>) {
        let a = &self.activity;
        match r {
            Poll::Ready(_) => {
                a.write_blocked_since.store(0, Ordering::Relaxed);
                a.touch();
            }
            Poll::Pending => {
                let since = a.now_ms() + 1;
                let _ = a.write_blocked_since.compare_exchange(
                    0,
                    since,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_before_write(cx))?;
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_before_write(cx))?;
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the socket only once it has written everything it buffered.
        self.dirty = false;
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The clocks the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub keepalive: Duration,
}

/// Serves one connection until it ends, idles out, or drains after shutdown.
/// hyper's settings and the clocks come from `generation` (the config current when
/// the connection was accepted); each request takes the app current when it starts.
/// `_permit` is a `max_connections` slot, released when this returns.
pub async fn serve<I>(
    stream: I,
    peer: Peer,
    live: Arc<Live>,
    generation: Arc<Generation>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = generation.timeouts;
    let activity = Arc::new(Activity::new());
    let svc_activity = activity.clone();
    let informational = Informational::new();
    let interim = informational.shared();
    let budget = crate::http::body::ConnBudget::new(generation.connection_buffer);
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let slot = live.requests.clone().try_acquire_owned().ok();
        let in_flight = svc_activity.begin(slot);
        // Only an HTTP/1.1 connection can take a head written beneath hyper.
        if req.version() == hyper::Version::HTTP_11 {
            req.extensions_mut().insert(informational.clone());
        }
        req.extensions_mut().insert(budget.clone());
        let app = live.app();
        async move { Ok::<_, Infallible>(crate::service::handle(app, peer, req, in_flight).await) }
    });
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: activity.clone(),
        interim,
        dirty: false,
    });
    let conn = generation.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let shortest = timeouts.idle.min(timeouts.keepalive).min(timeouts.header);
    let tick = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = ticker.tick() => {
                activity.reap_stalled(timeouts.idle);
                if activity.expired(&timeouts) {
                    tracing::debug!(peer = %peer.addr, "closing an idle connection");
                    return;
                }
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
