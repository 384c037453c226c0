//! The one client for the app: a keep-alive pool over TCP or a Unix socket. Every
//! request porter sends goes through here: passthrough requests as they came, and the
//! requests porter generates (metadata, later notify/complete/authorize), signed.

mod connector;
mod ended;
pub mod metadata;
pub mod sign;

use crate::config;
use crate::http::body::relay_body;
use crate::http::headers::strip_hop_by_hop;
use crate::http::{Body, full};
use bytes::Bytes;
use connector::Connector;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sign::{Secret, Signed};
use std::time::Duration;

/// Why the app gave no answer: 502 or 504 to the client.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the backend is unavailable: {0}")]
    Unavailable(String),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<BackendError> for crate::error::Error {
    fn from(e: BackendError) -> Self {
        use crate::error::{Error, ErrorKind};
        let kind = match e {
            BackendError::Unavailable(_) => ErrorKind::BackendUnavailable,
            BackendError::Timeout(_) => ErrorKind::BackendTimeout,
        };
        Error::new(kind, e.to_string())
    }
}

pub struct Backend {
    /// One pool per worker, and one (first) for every other thread: a request takes
    /// the pool of the worker it runs on, so its app connection is driven there too
    /// and no wake-up crosses threads (`listen::workers`).
    clients: Vec<Client<Connector, Body>>,
    /// What goes in the request URI's authority (the connector ignores it for Unix sockets).
    authority: String,
    /// `authority`, parsed once for every request's URI.
    uri_authority: http::uri::Authority,
    response_timeout: Duration,
    /// Signs generated requests; `None` when no upload route needs it.
    secret: Option<Secret>,
    /// Kept to probe reachability for `/readyz` without touching the pool.
    connector: Connector,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// A request porter generates for the app.
pub struct Generated {
    pub method: Method,
    /// Path and query in the canonical form of docs/reference/routing.md.
    pub target: String,
    /// The client's headers, already cleaned for the backend (`Host` included).
    pub headers: HeaderMap,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Backend {
    pub fn new(
        cfg: &config::Backend,
        workers: usize,
        secret: Option<Secret>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Backend {
        let authority = match &cfg.addr {
            config::BackendAddr::Tcp { authority } => authority.clone(),
            config::BackendAddr::Unix(_) => "localhost".to_string(),
        };
        let connector = Connector::new(cfg.addr.clone(), cfg.connect_timeout);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(60))
            // The largest piece of an app's response read at once: a response read
            // ahead for a client holds at most this beyond its budget (`read_ahead`).
            .http1_max_buf_size(crate::http::body::MAX_FRAME);
        let clients = (0..=workers)
            .map(|_| builder.build(connector.clone()))
            .collect();
        let uri_authority = authority
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
        Backend {
            clients,
            authority,
            uri_authority,
            response_timeout: cfg.response_timeout,
            secret,
            connector,
            metrics,
        }
    }

    /// The calling worker's pool.
    fn client(&self) -> &Client<Connector, Body> {
        let i = crate::workers::index();
        self.clients.get(i).unwrap_or(&self.clients[0])
    }

    /// Whether a new connection to the app can be opened within `connect_timeout`.
    pub async fn reachable(&self) -> Result<(), String> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        connector
            .call(Uri::from_static("http://localhost/"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Sends a request whose URI holds the target (path and query) to use.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, BackendError> {
        self.send_noting(req, None).await
    }

    /// [`send`](Self::send), telling `sent` once the whole request body has been
    /// handed to the connection (not when the request was merely started).
    async fn send_noting(
        &self,
        mut req: Request<Body>,
        sent: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Response<Incoming>, BackendError> {
        // Built from parts, no text: the target was parsed once already.
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(self.uri_authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&self.authority)
        {
            req.headers_mut().insert(header::HOST, v);
        }
        // `response_timeout` counts from the end of the request body: a slow upload
        // through passthrough is the client's pace, not the app's.
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let req = req.map(|b| ended::Ended::wrap(b, sent_tx));
        let timer = async {
            let whole = sent_rx.await.is_ok();
            if let Some(tx) = sent.filter(|_| whole) {
                let _ = tx.send(());
            }
            tokio::time::sleep(self.response_timeout).await;
        };
        let result = tokio::select! {
            r = self.client().request(req) => r.map_err(|e| BackendError::Unavailable(error_chain(&e))),
            _ = timer => Err(BackendError::Timeout(self.response_timeout)),
        };
        self.metrics
            .backend(result.as_ref().ok().map(|r| r.status().as_u16()));
        result
    }

    /// The id of the key generated requests are signed with, if any.
    pub fn key_id(&self) -> Option<String> {
        self.secret.as_ref().map(Secret::key_id)
    }

    /// Sends a generated request, signed (docs/reference/signature.md) when a secret is configured.
    pub async fn send_generated(&self, g: Generated) -> Result<Response<Incoming>, BackendError> {
        self.send_generated_noting(g, None).await
    }

    /// [`send_generated`](Self::send_generated), telling `sent` once the whole
    /// request has gone to the app: from then on the app may act on it.
    pub async fn send_generated_noting(
        &self,
        g: Generated,
        sent: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Response<Incoming>, BackendError> {
        let mut headers = g.headers;
        // The client's body headers describe a body the app never sees.
        let body_headers: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("content-"))
            .cloned()
            .collect();
        for h in body_headers
            .into_iter()
            .chain([header::TRANSFER_ENCODING, header::EXPECT])
        {
            headers.remove(h);
        }
        if let Some(ct) = &g.content_type
            && let Ok(v) = HeaderValue::from_str(ct)
        {
            headers.insert(header::CONTENT_TYPE, v);
        }
        if !headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&self.authority)
        {
            headers.insert(header::HOST, v);
        }
        if let Some(secret) = &self.secret {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let sig = sign::sign(
                secret,
                &Signed {
                    method: g.method.as_str(),
                    host,
                    target: &g.target,
                    content_type: g.content_type.as_deref().unwrap_or(""),
                    body: &g.body,
                },
            );
            for (name, value) in [
                ("x-porter-key-id", sig.key_id),
                ("x-porter-timestamp", sig.timestamp),
                ("x-porter-nonce", sig.nonce),
                ("x-porter-signature", sig.signature),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::HeaderName::from_static(name), v);
                }
            }
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(g.body.len()));
        let mut req = Request::new(full(g.body));
        *req.method_mut() = g.method;
        *req.uri_mut() = g
            .target
            .parse()
            .map_err(|_| BackendError::Unavailable("bad target".into()))?;
        *req.headers_mut() = headers;
        self.send_noting(req, sent).await
    }
}

/// Turns the app's response into the client's: hop-by-hop headers go, and the body is
/// read ahead up to `budget` bytes so the app's worker is freed early.
pub fn relay(resp: Response<Incoming>, budget: usize, idle: Duration) -> Response<Body> {
    relay_within(resp, budget, idle, None)
}

/// [`relay`], with the bytes read ahead also counted against the client connection's
/// budget (passthrough, where one HTTP/2 connection may carry many such responses).
pub fn relay_within(
    resp: Response<Incoming>,
    budget: usize,
    idle: Duration,
    conn: Option<crate::http::body::ConnBudget>,
) -> Response<Body> {
    use http_body::Body as _;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // An empty answer (X-Accel-Redirect, 204, 304) needs no read-ahead at all.
    let body = if body.is_end_stream() {
        crate::http::empty()
    } else {
        relay_body(body, budget, idle, conn)
    };
    Response::from_parts(parts, body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
