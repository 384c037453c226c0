//! Body wrappers: a guarded client body (idle timeout + size cap, failing exactly once),
//! a read-ahead body that frees the backend early, and a body that carries a guard.

use super::{Body, BoxError, Frames};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

/// Something told of every body byte that arrives (the progress endpoint's trackers):
/// a trait here, so the body does not depend on what watches it.
pub trait Observer: Send + Sync {
    fn add(&self, n: usize);
}

/// The bytes one connection's streams may hold in request and response buffers
/// together (`limits.connection_buffer`), in a request's extensions. HTTP/2 carries many
/// streams on one connection: a per-stream bound alone would let one connection hold
/// streams × buffer. A stream that finds the budget spent waits for it.
#[derive(Clone)]
pub struct ConnBudget(pub Arc<Semaphore>);

impl ConnBudget {
    pub fn new(bytes: usize) -> ConnBudget {
        ConnBudget(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }
}

/// Why reading a client body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body bytes for {0:?}")]
    Idle(Duration),
    #[error("the body arrives slower than {0} bytes a second")]
    TooSlow(u64),
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the client connection failed: {0}")]
    Client(BoxError),
}

impl From<BodyError> for crate::error::Error {
    fn from(e: BodyError) -> Self {
        use crate::error::{Error, ErrorKind};
        match e {
            BodyError::Idle(_) | BodyError::TooSlow(_) => {
                Error::new(ErrorKind::Timeout, e.to_string())
            }
            BodyError::TooLarge(_) => Error::too_large(e.to_string()),
            BodyError::Client(_) => Error::bad_request(e.to_string()),
        }
    }
}

/// A client request body that fails if no bytes arrive for `idle`, once more than
/// `limit` bytes have arrived, or when it falls below a minimum rate (`with_min_rate`).
/// An optional `prefix` (bytes already read) comes first.
///
/// The rate is kept as credit, in the manner of Apache's `mod_reqtimeout` `MinRate`:
/// the body starts with `grace` of it, earns `n / rate` seconds per `n` bytes (never
/// more than `idle` in hand), and spends it only while porter waits on the client, so
/// a slow disk or S3 holding back porter's own reads costs the client nothing. A body
/// trickled a byte at a time runs out after the grace and is cut (408), instead of
/// holding an upload slot for `idle` per byte.
pub struct GuardedBody<B> {
    prefix: Option<Bytes>,
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    /// When the last bytes arrived (or the body started): the idle clock.
    last: Instant,
    /// Bytes per second the body must keep up; 0: no minimum.
    min_rate: u64,
    /// Time the client may still spend without sending (the rate's credit).
    credit: Duration,
    /// Since when porter has been waiting on the client, if it is.
    waiting: Option<Instant>,
    limit: u64,
    seen: u64,
    failed: bool,
    /// Count received bytes for the progress endpoint (a request's `X-Progress-ID`,
    /// and a resumable upload's own id).
    progress: Vec<Box<dyn Observer>>,
    /// Why the body failed, for whoever handed it on (a passthrough request body is
    /// read by hyper's client, which reports only "body error").
    failure: Arc<std::sync::OnceLock<crate::error::Error>>,
    trailers: Option<http::HeaderMap>,
    /// The request this body belongs to, for its access-log byte count.
    stats: Option<Arc<super::stats::RequestStats>>,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, idle: Duration, limit: u64) -> Self {
        GuardedBody {
            prefix: None,
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            last: Instant::now(),
            min_rate: 0,
            credit: idle,
            waiting: None,
            limit,
            seen: 0,
            failed: false,
            progress: Vec::new(),
            failure: Arc::default(),
            trailers: None,
            stats: super::stats::RequestStats::current(),
        }
    }

    /// Requires `rate` bytes per second on average once `grace` has been spent waiting
    /// (see the type's doc); 0 turns it off.
    pub fn with_min_rate(mut self, rate: u64, grace: Duration) -> Self {
        self.min_rate = rate;
        if rate > 0 {
            self.credit = grace.min(self.idle);
        }
        self
    }

    /// Where the reason for a failure is recorded.
    pub fn failure(&self) -> Arc<std::sync::OnceLock<crate::error::Error>> {
        self.failure.clone()
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        let err = match &e {
            BodyError::Idle(d) => crate::error::Error::new(
                crate::error::ErrorKind::Timeout,
                format!("no body bytes for {d:?}"),
            ),
            BodyError::TooSlow(r) => crate::error::Error::new(
                crate::error::ErrorKind::Timeout,
                format!("the body arrives slower than {r} bytes a second"),
            ),
            BodyError::TooLarge(n) => {
                crate::error::Error::too_large(format!("the body is larger than {n} bytes"))
            }
            BodyError::Client(c) => {
                crate::error::Error::bad_request(format!("the client connection failed: {c}"))
            }
        };
        let _ = self.failure.set(err);
        Poll::Ready(Some(Err(e)))
    }

    /// Reports every received byte to `tracker`.
    pub fn with_progress<O: Observer + 'static>(mut self, tracker: Option<O>) -> Self {
        self.progress
            .extend(tracker.map(|t| Box::new(t) as Box<dyn Observer>));
        self
    }

    /// Puts bytes already taken from the body back in front of it.
    pub fn with_prefix(mut self, prefix: Bytes) -> Self {
        self.seen += prefix.len() as u64;
        self.prefix = Some(prefix).filter(|p| !p.is_empty());
        self
    }

    /// Bytes seen so far (prefix included).
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

impl<B> GuardedBody<B> {
    /// `n` bytes arrived: the idle clock restarts, the wait is paid from the credit
    /// and the bytes earn more.
    fn arrived(&mut self, n: usize) {
        let now = Instant::now();
        self.last = now;
        if let Some(since) = self.waiting.take() {
            self.credit = self.credit.saturating_sub(now - since);
        }
        if self.min_rate > 0 {
            let earned = Duration::from_secs_f64(n as f64 / self.min_rate as f64);
            self.credit = (self.credit + earned).min(self.idle);
        }
    }

    /// When the wait that just began must end, and whether by the rate (else idle).
    fn deadline(&mut self) -> (Instant, bool) {
        let since = *self.waiting.get_or_insert_with(Instant::now);
        let idle = self.last + self.idle;
        if self.min_rate > 0 && since + self.credit < idle {
            (since + self.credit, true)
        } else {
            (idle, false)
        }
    }
}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames<BodyError> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    for t in &this.progress {
                        t.add(d.len());
                    }
                    if let Some(s) = &this.stats {
                        s.add_received(d.len() as u64);
                    }
                    if this.seen > this.limit {
                        let limit = this.limit;
                        return this.fail(BodyError::TooLarge(limit));
                    }
                }
                let n = frame.data_ref().map_or(0, Bytes::len);
                this.arrived(n);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Client(e.into())),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (deadline, slow) = this.deadline();
                // The timer is moved only earlier, and when it fires before the deadline
                // it is set again then. Every move re-registers it, and tokio wakes its
                // own event loop for that (an eventfd write, and an extra turn of the
                // loop: tokio#5207); moving it later on each frame cost that per frame.
                if this.sleep.deadline() > deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                while this.sleep.deadline() < deadline {
                    ready!(this.sleep.as_mut().poll(cx));
                    this.sleep.as_mut().reset(deadline);
                }
                ready!(this.sleep.as_mut().poll(cx));
                if slow {
                    let rate = this.min_rate;
                    this.fail(BodyError::TooSlow(rate))
                } else {
                    let idle = this.idle;
                    this.fail(BodyError::Idle(idle))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = SizeHint::new();
        if let Some(u) = inner.upper() {
            hint.set_upper(u + extra);
        }
        hint.set_lower(inner.lower() + extra);
        hint
    }
}

impl<B> GuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The next chunk of data, skipping trailers; `None` at the end.
    pub async fn next_data(&mut self) -> Result<Option<Bytes>, BodyError> {
        while let Some(frame) = self.frame().await {
            match frame?.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        self.trailers = Some(t);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Trailers that came after the body, if any (tus checksum trailers).
    pub fn trailers(&self) -> Option<&http::HeaderMap> {
        self.trailers.as_ref()
    }
}

/// A frame read ahead, with the bytes it holds of the stream's and the connection's
/// budgets (given back when the client takes it).
type Item = (Result<Frame<Bytes>, BoxError>, usize, usize);

/// The most an app's response frame holds (the backend client reads no more at once),
/// and so the room `read_ahead` takes from a connection's budget before each read.
pub const MAX_FRAME: usize = 128 << 10;

/// Relays an app's response body: [`read_ahead`], except that a body which has already
/// arrived whole in one frame (most small answers with a `Content-Length`: hyper's
/// client reads head and body together) is handed over as it is, with no task, no
/// channel and no cross-thread wake-up, and hyper writes the head and the body to the
/// client in one system call.
///
/// One frame at most is taken here, and only if it is ready *now* (polled with a
/// no-op waker: waiting would hold back the head of a streamed answer), and only with
/// its room on the connection taken first, exactly as the read-ahead task takes it. A
/// frame taken from a body that is not whole goes to the task with that room, first.
pub fn relay_body<B>(mut body: B, budget: usize, idle: Duration, conn: Option<ConnBudget>) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let room = match &conn {
        None => None,
        Some(c) => match c.0.clone().try_acquire_many_owned(MAX_FRAME as u32) {
            Ok(p) => Some(p),
            Err(_) => return read_ahead(body, budget, idle, conn),
        },
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let frame = match Pin::new(&mut body).poll_frame(&mut cx) {
        // The room goes back as it is dropped.
        Poll::Pending => return read_ahead(body, budget, idle, conn),
        Poll::Ready(None) => return super::empty(),
        Poll::Ready(Some(f)) => f.map_err(Into::into),
    };
    match frame {
        Ok(f) if f.is_data() && body.is_end_stream() => {
            let data = f.into_data().unwrap_or_default();
            match room {
                Some(mut held) => {
                    let keep = data.len().min(MAX_FRAME);
                    drop(held.split(MAX_FRAME - keep));
                    with_guard(super::full(data), held)
                }
                None => super::full(data),
            }
        }
        frame => read_ahead_after(Some((frame, room)), body, budget, idle, conn),
    }
}

/// A frame already read, with the room on the connection it was read under.
type Taken = (Result<Frame<Bytes>, BoxError>, Option<OwnedSemaphorePermit>);

/// Reads `body` ahead into memory, up to `budget` bytes beyond what the client has
/// taken, so a slow client never holds the backend (docs/reference/routing.md's response buffering).
/// With `conn`, the bytes held also count against the client connection's budget. A
/// gap of more than `idle` between backend frames ends the body with an error.
pub fn read_ahead<B>(body: B, budget: usize, idle: Duration, conn: Option<ConnBudget>) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    read_ahead_after(None, body, budget, idle, conn)
}

/// [`read_ahead`], passing on `first` before anything read from `body`.
fn read_ahead_after<B>(
    first: Option<Taken>,
    body: B,
    budget: usize,
    idle: Duration,
    conn: Option<ConnBudget>,
) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let permits = Arc::new(Semaphore::new(budget));
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let pump_permits = permits.clone();
    let conn = conn.map(|c| c.0);
    let pump_conn = conn.clone();
    tokio::spawn(async move {
        let mut body = body;
        let mut first = first;
        loop {
            let (frame, room) = match first.take() {
                Some(taken) => taken,
                None => {
                    // Room first: a frame read is a frame held, so a pump whose client
                    // stopped reading holds nothing beyond the connection's budget.
                    let room = match &pump_conn {
                        Some(c) => {
                            let got = tokio::select! {
                                p = c.clone().acquire_many_owned(MAX_FRAME as u32) => p.ok(),
                                () = tx.closed() => None,
                            };
                            let Some(p) = got else { return };
                            Some(p)
                        }
                        None => None,
                    };
                    let frame = match tokio::time::timeout(idle, body.frame()).await {
                        Ok(Some(Ok(f))) => Ok(f),
                        Ok(Some(Err(e))) => Err(e.into()),
                        Ok(None) => return,
                        Err(_) => Err(BoxError::from(format!("backend body idle for {idle:?}"))),
                    };
                    (frame, room)
                }
            };
            let failed = frame.is_err();
            let len = frame
                .as_ref()
                .ok()
                .and_then(|f| f.data_ref())
                .map_or(0, Bytes::len);
            let n = len.min(budget);
            let Ok(p) = pump_permits.acquire_many(n as u32).await else {
                return;
            };
            p.forget();
            // Keep what the frame takes of the room (given back as the client takes
            // it); the rest goes back now.
            let kept = match room {
                Some(mut held) => {
                    let keep = len.min(MAX_FRAME);
                    drop(held.split(MAX_FRAME - keep));
                    held.forget();
                    keep
                }
                None => 0,
            };
            if tx.send((frame, n, kept)).is_err() {
                // Never taken: the connection gets its bytes back.
                if let Some(c) = &pump_conn {
                    c.add_permits(kept);
                }
                return;
            }
            if failed {
                return;
            }
        }
    });
    ReadAhead { rx, permits, conn }.boxed()
}

struct ReadAhead {
    rx: mpsc::UnboundedReceiver<Item>,
    permits: Arc<Semaphore>,
    /// The client connection's budget, which the pump draws on as well.
    conn: Option<Arc<Semaphore>>,
}

impl Drop for ReadAhead {
    /// The client is gone: wake the pump so it stops reading from the app, and give
    /// the connection back what the queued frames held.
    fn drop(&mut self) {
        self.permits.close();
        if let Some(c) = &self.conn {
            self.rx.close();
            let mut queued = 0;
            while let Ok((_, _, kept)) = self.rx.try_recv() {
                queued += kept;
            }
            c.add_permits(queued);
        }
    }
}

impl HttpBody for ReadAhead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames {
        match ready!(self.rx.poll_recv(cx)) {
            Some((frame, n, kept)) => {
                self.permits.add_permits(n);
                if let Some(c) = &self.conn {
                    c.add_permits(kept);
                }
                Poll::Ready(Some(frame))
            }
            None => Poll::Ready(None),
        }
    }
}

/// A body that keeps `guard` alive until the body is finished or dropped, e.g. to write
/// the access-log line and release a connection's in-flight count at the true end.
pub struct WithGuard<G> {
    body: Body,
    _guard: G,
}

pub fn with_guard<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    WithGuard {
        body,
        _guard: guard,
    }
    .boxed()
}

impl<G: Unpin> HttpBody for WithGuard<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// A body fed by the test: frames arrive when sent, the end when the sender drops.
    struct Fed(mpsc::UnboundedReceiver<Bytes>);
    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames<std::io::Error> {
            self.0.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
        }
    }

    async fn collected(body: Body) -> Bytes {
        body.collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_whole_answer_is_relayed_as_it_is_and_holds_its_room() {
        let conn = ConnBudget::new(MAX_FRAME);
        let body = relay_body(
            Full::new(Bytes::from_static(b"hello")),
            1 << 20,
            Duration::from_secs(5),
            Some(conn.clone()),
        );
        // A read-ahead body cannot know its length; the whole one does.
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(conn.0.available_permits(), MAX_FRAME - 5);
        assert_eq!(collected(body).await, "hello");
        assert_eq!(conn.0.available_permits(), MAX_FRAME);
    }

    #[tokio::test]
    async fn a_frame_taken_early_comes_first_then_the_rest() {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Bytes::from_static(b"ab")).expect("send");
        tx.send(Bytes::from_static(b"cd")).expect("send");
        let body = relay_body(Fed(rx), 1 << 20, Duration::from_secs(5), None);
        assert_eq!(body.size_hint().exact(), None, "not whole: streamed");
        tx.send(Bytes::from_static(b"ef")).expect("send");
        drop(tx);
        assert_eq!(collected(body).await, "abcdef");
    }

    #[tokio::test]
    async fn without_room_on_the_connection_a_whole_answer_waits_for_it() {
        let conn = ConnBudget::new(MAX_FRAME);
        let others = conn
            .0
            .clone()
            .acquire_many_owned(MAX_FRAME as u32 - 3)
            .await;
        let body = relay_body(
            Full::new(Bytes::from_static(b"hello")),
            1 << 20,
            Duration::from_secs(5),
            Some(conn.clone()),
        );
        assert_eq!(
            body.size_hint().exact(),
            None,
            "went to the read-ahead task"
        );
        drop(others);
        assert_eq!(collected(body).await, "hello");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(conn.0.available_permits(), MAX_FRAME);
    }

    #[tokio::test]
    async fn guarded_limit_fails_once() {
        let body = Full::new(Bytes::from_static(b"0123456789"));
        let mut g = GuardedBody::new(body, Duration::from_secs(5), 4)
            .with_prefix(Bytes::from_static(b"ab"));
        assert_eq!(g.next_data().await.unwrap().unwrap(), "ab");
        assert!(matches!(g.next_data().await, Err(BodyError::TooLarge(4))));
        assert!(g.next_data().await.unwrap().is_none());
    }

    /// A body that never yields: a client that stopped sending.
    struct Stalled;
    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Frames<std::io::Error> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_idle_times_out() {
        let mut g = GuardedBody::new(Stalled, Duration::from_secs(3), 100);
        assert!(matches!(g.next_data().await, Err(BodyError::Idle(_))));
    }

    /// A body trickled a byte at a time: cut once the grace is spent.
    struct Trickle(tokio::time::Interval);
    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames<std::io::Error> {
            ready!(self.0.poll_tick(cx));
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_runs_out_of_credit() {
        let every = tokio::time::interval(Duration::from_secs(2));
        let start = Instant::now();
        let mut g = GuardedBody::new(Trickle(every), Duration::from_secs(60), u64::MAX)
            .with_min_rate(240, Duration::from_secs(5));
        let mut got = 0;
        let err = loop {
            match g.next_data().await {
                Ok(Some(d)) => got += d.len(),
                Ok(None) => panic!("the trickle never ends"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, BodyError::TooSlow(240)), "{err}");
        assert!(got <= 4, "{got} bytes");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Without a minimum the same trickle goes on (until idle, which it never hits).
        let every = tokio::time::interval(Duration::from_secs(2));
        let mut g = GuardedBody::new(Trickle(every), Duration::from_secs(60), 20);
        let mut n = 0;
        while let Ok(Some(d)) = g.next_data().await {
            n += d.len();
        }
        assert_eq!(n, 20);
    }

    /// The idle clock restarts with every arrival, though the timer is moved only
    /// when it fires: bytes every 8 s never hit a 10 s idle limit, and the silence
    /// after the last of them is cut 10 s after it, not at a deadline left from before.
    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_arrival() {
        let every = tokio::time::interval(Duration::from_secs(8));
        let body = Trickle(every);
        let start = Instant::now();
        let mut g = GuardedBody::new(body, Duration::from_secs(10), u64::MAX);
        for _ in 0..4 {
            assert_eq!(g.next_data().await.unwrap().unwrap().len(), 1);
        }
        assert_eq!(start.elapsed(), Duration::from_secs(24));
        // Now silence: a stalled body in place of the trickle.
        let mut g = GuardedBody::new(Stalled, Duration::from_secs(10), u64::MAX);
        g.arrived(1);
        tokio::time::sleep(Duration::from_secs(7)).await;
        g.arrived(1);
        let quiet = Instant::now();
        assert!(matches!(g.next_data().await, Err(BodyError::Idle(_))));
        assert_eq!(quiet.elapsed(), Duration::from_secs(10));
    }

    /// A fast body earns credit for a pause, up to `idle`.
    #[tokio::test(start_paused = true)]
    async fn a_burst_earns_a_pause() {
        let mut g = GuardedBody::new(
            Burst(Some(vec![0u8; 240 * 30])),
            Duration::from_secs(60),
            u64::MAX,
        )
        .with_min_rate(240, Duration::from_secs(5));
        assert_eq!(g.next_data().await.unwrap().unwrap().len(), 240 * 30);
        let start = Instant::now();
        assert!(matches!(g.next_data().await, Err(BodyError::TooSlow(_))));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(34) && waited <= Duration::from_secs(36),
            "{waited:?}"
        );
    }

    /// One burst of bytes, then silence.
    struct Burst(Option<Vec<u8>>);
    impl HttpBody for Burst {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Frames<std::io::Error> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(b))))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn read_ahead_passes_everything() {
        let data = Bytes::from(vec![7u8; 100_000]);
        let body = read_ahead(Full::new(data.clone()), 4096, Duration::from_secs(5), None);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got, data);
    }
}
