//! The ingest pipeline every upload protocol shares: admission (limits that need no
//! body byte, free space, the per-client count), the `authorize` question, the guarded
//! request body, and the request porter generates for the app (its target, headers and
//! body encoding). Protocol front-ends (`upload` for multipart and raw, `resumable` for
//! the resumable ones) call down into it; it calls none of them.

pub mod complete;
pub mod resumable;

use crate::app::App;
use crate::backend::metadata;
use crate::backend::{Generated, relay};
use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::body::GuardedBody;
use crate::http::headers::{Peer, for_backend};
use crate::progress::Tracker;
use crate::route::{NormalPath, canonical_encode, canonical_query};
use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// One upload request as every protocol sees it: the app snapshot it started with, its
/// route, who sent it, its normalised path and its progress entry. Built once, by
/// `dispatch`, and handed down, so no function takes these one by one.
pub struct Context<'a> {
    pub app: Arc<App>,
    pub route: &'a UploadRoute,
    pub peer: Peer,
    pub path: &'a NormalPath,
    /// The request's `X-Progress-ID` entry, if it has one.
    pub progress: Option<Tracker>,
}

impl Context<'_> {
    /// The resumable engine (locks, state, data).
    pub fn engine(&self) -> &crate::resumable::Engine {
        &self.app.resumable
    }

    /// Limits checked before any body byte is read (see `admit`).
    pub fn admit(&self, headers: &HeaderMap, max_body: u64) -> Result<OwnedSemaphorePermit, Error> {
        admit(&self.app, headers, max_body)
    }

    /// Whether storage has room for `total` more bytes (see `room_for`).
    pub fn room_for(&self, total: u64) -> Result<(), Error> {
        room_for(&self.app, total)
    }

    /// Asks the app whether this upload may proceed (see `authorize`).
    pub async fn authorize(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Authorized<Response<Body>>, Error> {
        authorize(&self.app, self.route, req, self.peer).await
    }

    /// The body, guarded, reporting to this request's progress entry.
    pub fn guarded(&self, body: Incoming, limit: u64) -> GuardedBody<Incoming> {
        guarded(&self.app, body, limit, self.progress.clone())
    }

    /// The body, guarded, reporting to no progress entry.
    pub fn guarded_quietly(&self, body: Incoming, limit: u64) -> GuardedBody<Incoming> {
        guarded(&self.app, body, limit, None)
    }

    /// The app's request target for this request's path and `uri`'s query.
    pub fn target(&self, uri: &http::Uri) -> String {
        target(self.path, uri)
    }

    /// The client's headers as the app should see them on a generated request.
    pub fn backend_headers(&self, parts: &http::request::Parts) -> HeaderMap {
        backend_headers(&self.app, parts, self.peer)
    }

    /// Who is creating a resumable upload (see `client_of`).
    pub fn client_of(&self, headers: &HeaderMap, given: Option<&str>) -> String {
        client_of(&self.app, headers, self.peer, given)
    }

    /// How this route's metadata bodies are written.
    pub fn encoding(&self) -> metadata::Encoding<'_> {
        route_encoding(&self.app, self.route)
    }
}

/// The request body, guarded by `idle_timeout` and `min_body_rate`, reporting progress.
pub(crate) fn guarded(
    app: &App,
    body: Incoming,
    limit: u64,
    progress: Option<Tracker>,
) -> GuardedBody<Incoming> {
    let limits = &app.config.limits;
    GuardedBody::new(body, app.config.server.idle_timeout, limit)
        .with_min_rate(limits.min_body_rate, limits.min_body_rate_grace)
        .with_progress(progress)
}

/// How `route`'s metadata bodies are written.
pub(crate) fn route_encoding<'a>(app: &'a App, route: &'a UploadRoute) -> metadata::Encoding<'a> {
    metadata::Encoding {
        forward: route.forward,
        names: &route.field_names,
        namespace: &app.config.namespace,
    }
}

/// Limits checked before any body byte is read.
pub(crate) fn admit(
    app: &App,
    headers: &HeaderMap,
    max_body: u64,
) -> Result<OwnedSemaphorePermit, Error> {
    if let Some(len) = content_length(headers)?
        && len > max_body
    {
        return Err(Error::too_large(format!(
            "the body is larger than {max_body} bytes"
        )));
    }
    match app.store.free_bytes() {
        Ok(free) if free < app.config.storage.min_free => {
            tracing::warn!(
                free,
                min_free = app.config.storage.min_free,
                "storage below min_free"
            );
            return Err(Error::new(
                ErrorKind::InsufficientStorage,
                "not enough storage space",
            ));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read free storage space"),
        _ => {}
    }
    app.uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::new(ErrorKind::Busy, "too many uploads in progress; retry later"))
}

/// Whether storage has room for an upload of `total` bytes above `min_free` (a
/// resumable creation that names its length): 507 when it would cross it. Only where
/// whole files land on this machine; with S3 only a part is spooled here.
pub(crate) fn room_for(app: &App, total: u64) -> Result<(), Error> {
    if app.config.storage.uploads_to_s3 {
        return Ok(());
    }
    match app.store.free_bytes() {
        Ok(free) if free < app.config.storage.min_free.saturating_add(total) => Err(Error::new(
            ErrorKind::InsufficientStorage,
            format!("not enough storage space for {total} bytes"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Error::bad_request("bad Content-Length"))
        })
        .transpose()
}

/// The request target for the app: the canonical path (docs/reference/routing.md) plus the client's query, both
/// in the canonical form verifiers rebuild (`route::canonical_query`). An empty query
/// is left out, as WSGI servers and Django do when they rebuild it.
pub(crate) fn target(path: &NormalPath, uri: &http::Uri) -> String {
    match uri.query().filter(|q| !q.is_empty()) {
        Some(q) => format!("{}?{}", path.canonical(), canonical_query(q)),
        None => path.canonical(),
    }
}

/// What `authorize` answered (docs/guides/authorize-and-progress.md).
pub enum Authorized<R> {
    /// Go on; `client` is who the app says the client is (`X-Porter-Client-Id`).
    Go { client: Option<String> },
    /// The app said no: its answer goes to the client as is.
    Refused(R),
}

/// Asks the app whether this upload may proceed (docs/guides/authorize-and-progress.md), before any body byte is
/// read.
pub(crate) async fn authorize(
    app: &App,
    route: &UploadRoute,
    req: &Request<Incoming>,
    peer: Peer,
) -> Result<Authorized<Response<Body>>, Error> {
    let limits = &app.config.limits;
    Ok(
        match ask(app, route, req.method(), req.uri(), req.headers(), peer).await? {
            Authorized::Go { client } => Authorized::Go { client },
            Authorized::Refused(r) => Authorized::Refused(relay(
                r,
                limits.response_buffer,
                app.config.server.idle_timeout,
            )),
        },
    )
}

/// The `authorize` request itself.
pub async fn ask(
    app: &App,
    route: &UploadRoute,
    method: &http::Method,
    uri: &http::Uri,
    client: &HeaderMap,
    peer: Peer,
) -> Result<Authorized<Response<Incoming>>, Error> {
    let Some(path) = &route.authorize else {
        return Ok(Authorized::Go { client: None });
    };
    let mut headers = client.clone();
    for_backend(
        &mut headers,
        uri,
        &peer,
        &app.config.server.trusted_proxies,
        false,
    );
    let original = uri.path_and_query().map_or("/", |p| p.as_str());
    let extra = [
        ("x-original-uri", Some(original.to_string())),
        ("x-original-method", Some(method.to_string())),
        (
            "x-upload-length",
            content_length(client)?.map(|n| n.to_string()),
        ),
    ];
    for (name, value) in extra {
        if let Some(v) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
    let answer = app
        .backend
        .send_generated(Generated {
            method: http::Method::GET,
            target: canonical_encode(path.as_bytes()),
            headers,
            content_type: None,
            body: bytes::Bytes::new(),
        })
        .await?;
    if answer.status().is_success() {
        let client = answer
            .headers()
            .get(crate::clients::CLIENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Ok(Authorized::Go { client });
    }
    tracing::info!(status = answer.status().as_u16(), route = %route.path, "authorize refused the upload");
    Ok(Authorized::Refused(answer))
}

/// Who is creating a resumable upload, for the per-client count (`clients`).
pub(crate) fn client_of(app: &App, headers: &HeaderMap, peer: Peer, given: Option<&str>) -> String {
    let addr =
        crate::http::headers::client_addr(headers, &peer, &app.config.server.trusted_proxies);
    crate::clients::identity(given, addr)
}

/// The client's headers as the app should see them on a generated request.
pub(crate) fn backend_headers(app: &App, parts: &http::request::Parts, peer: Peer) -> HeaderMap {
    let mut headers = parts.headers.clone();
    for_backend(
        &mut headers,
        &parts.uri,
        &peer,
        &app.config.server.trusted_proxies,
        false,
    );
    headers
}
