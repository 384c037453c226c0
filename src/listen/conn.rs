//! One client connection: hyper serves it, and a watchdog closes it when it idles.
//!
//! hyper 1.x has no keep-alive idle timeout and no timeout for a stalled response write,
//! so the socket is wrapped in `TrackedIo`, which records when bytes last moved and
//! since when a write has been blocked; the watchdog compares that with the config.
//! A stalled request *body* is caught where it is read (`GuardedBody`), so the handler
//! can answer 408 and clean up.

use super::activity::Activity;
pub use super::activity::{InFlight, Timeouts};
use super::{Generation, Live};
use crate::http::headers::Peer;
use crate::http::informational::{Informational, Shared};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, watch};

/// A socket that reports its activity, and writes the informational heads that
/// requests queue (`crate::http::informational`, which explains why that is safe).
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    interim: Arc<Shared>,
    /// hyper has written since it last flushed: it may still hold bytes of a response,
    /// and a queued 1xx head may not go out before them.
    dirty: bool,
    /// Set once the connection's write side is shut: what the client still sends.
    linger: Option<Linger>,
    /// Close without lingering: the connection carries a tunnel (its bytes are the
    /// tunnel's, not a refused body), or porter is draining (an idle client that never
    /// closes must not hold the shutdown).
    plain_close: Arc<AtomicBool>,
}

/// How long a closing connection reads and discards what the client still sends, in
/// all and between two reads: nginx's `lingering_time` and `lingering_timeout`.
const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_GAP: Duration = Duration::from_secs(5);

/// A lingering close. An answer given before the request body was read (a 413, a
/// refusal) ends the connection while the client is still sending; closing a socket
/// with unread bytes makes the kernel send a reset, and a reset can destroy the
/// answer in the client's buffers before it reads it. So the close sends FIN first,
/// then discards what arrives until the client closes too, or the clock runs out.
struct Linger {
    until: tokio::time::Instant,
    gap: Pin<Box<tokio::time::Sleep>>,
}

impl Linger {
    fn new() -> Linger {
        let now = tokio::time::Instant::now();
        Linger {
            until: now + LINGER_TIME,
            gap: Box::pin(tokio::time::sleep_until(now + LINGER_GAP)),
        }
    }

    /// More bytes came: the next may take another gap, within the whole time.
    fn read_some(&mut self) {
        let next = tokio::time::Instant::now() + LINGER_GAP;
        self.gap.as_mut().reset(next.min(self.until));
    }
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

impl<T: AsyncRead + AsyncWrite + Unpin> TrackedIo<T> {
    /// Reads and drops the client's bytes until it closes, errs or times out.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 8192];
        loop {
            let Some(linger) = self.linger.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            // Draining began meanwhile: stop, so the shutdown is not held.
            if self.plain_close.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            if linger.gap.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            // tokio's cooperative budget bounds this loop within one poll.
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => linger.read_some(),
                Poll::Ready(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
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
        if self.linger.is_none() {
            std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            if self.plain_close.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            self.linger = Some(Linger::new());
        }
        self.poll_linger(cx)
    }
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
    let plain_close = Arc::new(AtomicBool::new(false));
    let tunnel = plain_close.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if req.headers().contains_key(hyper::header::UPGRADE) {
            tunnel.store(true, Ordering::Relaxed);
        }
        let slot = live.requests.clone().try_acquire_owned().ok();
        let in_flight = svc_activity.begin(slot);
        // Only an HTTP/1.1 connection can take a head written beneath hyper.
        if req.version() == hyper::Version::HTTP_11 {
            req.extensions_mut().insert(informational.clone());
        }
        req.extensions_mut().insert(budget.clone());
        let app = live.app();
        // Boxed: hyper keeps the future in place, and moving kilobytes of state
        // machine per request costs more than one allocation.
        Box::pin(async move {
            Ok::<_, Infallible>(crate::service::handle(app, peer, req, in_flight).await)
        })
    });
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: activity.clone(),
        interim,
        dirty: false,
        linger: None,
        plain_close: plain_close.clone(),
    });
    let conn = generation.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let shortest = timeouts.idle.min(timeouts.keepalive).min(timeouts.header);
    let tick = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    let mut draining = *shutdown.borrow();
    if draining {
        plain_close.store(true, Ordering::Relaxed);
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
                plain_close.store(true, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
