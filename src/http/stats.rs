//! What one request moved, for its access-log line and the metrics.
//!
//! Request bodies are read in many places (upload front-ends, resumable kinds, the
//! proxy), always through `GuardedBody`, and the upload id is known deep inside the
//! protocol code. Rather than thread a counter through every signature, the service
//! runs each request inside a task-local scope holding its `RequestStats`, and those
//! places add to whatever scope they run in (nothing, outside a request).

use super::Frames;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Context;

tokio::task_local! {
    static CURRENT: Arc<RequestStats>;
}

#[derive(Debug, Default)]
pub struct RequestStats {
    received: AtomicU64,
    sent: AtomicU64,
    upload_id: OnceLock<String>,
    /// The app answered an upload's metadata request (its status is the app's).
    delivered: AtomicBool,
}

impl RequestStats {
    /// Runs `f` with `self` as the current request's stats.
    pub fn scope<F: Future>(self: Arc<Self>, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// The stats of the request this task is serving, if any.
    pub fn current() -> Option<Arc<RequestStats>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Records the upload this request belongs to (the first id set wins).
    pub fn note_upload_id(id: &str) {
        if let Some(s) = Self::current() {
            let _ = s.upload_id.set(id.to_string());
        }
    }

    /// Records that the app, not porter, chose this upload request's status.
    pub fn set_delivered(&self) {
        self.delivered.store(true, Ordering::Relaxed);
    }

    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.get().map(String::as_str)
    }

    pub fn delivered(&self) -> bool {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// A response body that counts the bytes it yields into `stats` (and keeps the inner
/// body's size hint, so `Content-Length` survives).
pub struct Counting {
    inner: super::Body,
    stats: Arc<RequestStats>,
}

impl Counting {
    pub fn wrap(inner: super::Body, stats: Arc<RequestStats>) -> super::Body {
        use http_body_util::BodyExt;
        Counting { inner, stats }.boxed()
    }
}

impl http_body::Body for Counting {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames<Self::Error> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(d) = frame.data_ref()
        {
            self.stats.add_sent(d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
