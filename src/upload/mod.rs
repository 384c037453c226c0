//! Intercepted uploads. Every kind has the same shape:
//!
//! 1. **admit**: limits that need no body byte (Content-Length, `min_free`,
//!    `max_concurrent_uploads`) — nothing is read before they pass, so a client's
//!    `Expect: 100-continue` is answered with the final status instead;
//! 2. **receive**: a protocol front-end (`form` for multipart) streams each file
//!    through a `FileReceiver` → sink (hashes + writer) → store;
//! 3. **deliver**: the metadata request goes to the app, signed, and the files are
//!    kept or deleted by its answer (SPEC §4.3).

pub mod accept;
mod file;
mod form;
pub mod metadata;
pub mod multipart;
pub mod names;

use crate::app::App;
use crate::backend::{Generated, relay};
use crate::config::{Kind, UploadRoute};
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::body::GuardedBody;
use crate::http::headers::{Peer, for_backend};
use crate::progress::{self, Tracker};
use crate::route::{NormalPath, canonical_encode, canonical_query};
use file::StoredFile;
use form::Received;
use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use metadata::Item;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// How long a refused upload's remaining body is read and discarded, so the client
/// gets to read the error instead of a connection reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(10);

/// Multipart framing allowance per part when judging Content-Length up front.
const PART_OVERHEAD: u64 = 16 * 1024;

pub async fn handle(
    app: Arc<App>,
    route: &UploadRoute,
    peer: Peer,
    path: &NormalPath,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut progress = ProgressGuard(None);
    let result = async {
        progress.0 = track(&app, &req)?;
        let tracker = progress.0.clone();
        match route.kind {
            Kind::Multipart => multipart(app, route, peer, path, req, tracker).await,
            Kind::Raw => raw(app, route, peer, path, req, tracker).await,
            Kind::Tus => {
                Ok(crate::resumable::tus::handle(app, route, peer, path, req, tracker).await)
            }
            Kind::Chunked => {
                Ok(crate::resumable::chunked::chunk(app, route, peer, req, tracker).await)
            }
            Kind::NginxResumable => {
                Ok(crate::resumable::nginx::handle(app, route, peer, path, req, tracker).await)
            }
        }
    }
    .await;
    let resp = result.unwrap_or_else(|e| {
        tracing::info!(route = %route.path, error = %e, "upload refused");
        refusal(route.kind, e)
    });
    progress.finish(resp.status().as_u16());
    resp
}

/// An error raised before a protocol front-end ran, in that protocol's shape.
fn refusal(kind: Kind, e: Error) -> Response<Body> {
    match kind {
        Kind::Chunked => {
            crate::http::json_response(e.kind.status(), &serde_json::json!({ "detail": e.message }))
        }
        Kind::Tus => {
            let mut r = e.into_response();
            r.headers_mut()
                .insert("tus-resumable", http::HeaderValue::from_static("1.0.0"));
            r
        }
        _ => e.into_response(),
    }
}

/// Starts progress tracking when the request carries an `X-Progress-ID`: the entry is
/// listed once the first body byte arrives, that is, once the upload was admitted.
fn track(app: &App, req: &Request<Incoming>) -> Result<Option<Tracker>, Error> {
    let Some(id) = progress::id_of(req.uri(), req.headers()) else {
        return Ok(None);
    };
    if !progress::valid_id(&id) {
        return Err(Error::bad_request(
            "X-Progress-ID must be 8 to 128 of A-Z a-z 0-9 _ -",
        ));
    }
    let size = content_length(req.headers())?.unwrap_or(0);
    app.progress.start(&id, size).map(Some).map_err(|_| {
        Error::new(
            ErrorKind::Conflict,
            "this X-Progress-ID belongs to an upload in progress",
        )
    })
}

/// Finishes a progress entry exactly once: with the response status, or as a client
/// abort (499, nginx's "client closed request") if the request is dropped.
struct ProgressGuard(Option<Tracker>);

impl ProgressGuard {
    fn finish(&mut self, status: u16) {
        if let Some(t) = self.0.take() {
            t.finish(status);
        }
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.finish(499);
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

async fn multipart(
    app: Arc<App>,
    route: &UploadRoute,
    peer: Peer,
    path: &NormalPath,
    req: Request<Incoming>,
    progress: Option<Tracker>,
) -> Result<Response<Body>, Error> {
    let boundary = boundary(req.headers())?;
    let limits = &app.config.limits;
    let cap = route
        .max_files
        .saturating_mul(route.max_file_size)
        .saturating_add(limits.max_fields_bytes)
        .saturating_add(limits.max_parts.saturating_mul(PART_OVERHEAD));
    let _permit = admit(&app, req.headers(), cap)?;
    if let Authorized::Refused(refusal) = authorize(&app, route, &req, peer).await? {
        return Ok(refusal);
    }
    let (parts, body) = req.into_parts();
    let target = target(path, &parts.uri);
    let headers = backend_headers(&app, &parts, peer);
    let mut body = guarded(&app, body, cap, progress);
    let received = match form::receive(&app, route, &mut body, &boundary).await {
        Ok(r) => r,
        Err(e) => {
            linger(body);
            return Err(e);
        }
    };
    Ok(settle(app, route, parts.method, target, headers, received).await)
}

/// A `raw` upload: the body is the file (SPEC §4.5).
async fn raw(
    app: Arc<App>,
    route: &UploadRoute,
    peer: Peer,
    path: &NormalPath,
    req: Request<Incoming>,
    progress: Option<Tracker>,
) -> Result<Response<Body>, Error> {
    let _permit = admit(&app, req.headers(), route.max_file_size)?;
    if let Authorized::Refused(refusal) = authorize(&app, route, &req, peer).await? {
        return Ok(refusal);
    }
    let (parts, body) = req.into_parts();
    let filename = raw_file_name(&parts.headers, path);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let target = target(path, &parts.uri);
    let headers = backend_headers(&app, &parts, peer);
    let mut body = guarded(&app, body, route.max_file_size, progress);
    let received = async {
        let mut rx =
            file::FileReceiver::start(&app, route, &route.field, &filename, content_type).await?;
        while let Some(data) = body.next_data().await? {
            rx.push(data).await?;
        }
        rx.finish().await
    }
    .await;
    match received {
        Ok(stored) => {
            let received = vec![Received::File(Box::new(stored))];
            Ok(settle(app.clone(), route, parts.method, target, headers, received).await)
        }
        Err(e) => {
            linger(body);
            Err(e)
        }
    }
}

/// The file name of a raw upload: `Content-Disposition`'s filename, else `X-File-Name`,
/// else the last path segment.
fn raw_file_name(headers: &HeaderMap, path: &NormalPath) -> String {
    let from_disposition = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::disposition_filename);
    let from_header = || {
        headers.get("x-file-name").map(|v| {
            String::from_utf8_lossy(&crate::route::percent_decode(v.as_bytes())).into_owned()
        })
    };
    let from_path = || {
        let p = path.display();
        p.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    from_disposition
        .or_else(from_header)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(from_path)
}

/// Turns the received parts into the metadata request and settles the files by the answer.
async fn settle(
    app: Arc<App>,
    route: &UploadRoute,
    method: http::Method,
    target: String,
    headers: HeaderMap,
    received: Vec<Received>,
) -> Response<Body> {
    let mut files = Vec::new();
    let mut items = Vec::new();
    for r in received {
        match r {
            Received::Field { name, value } => items.push(Item::Field { name, value }),
            Received::File(f) => {
                items.push(Item::File(f.meta.clone()));
                files.push(*f);
            }
        }
    }
    let (content_type, body) = metadata::encode(&route_encoding(&app, route), &items);
    let generated = Generated {
        method,
        target,
        headers,
        content_type: Some(content_type),
        body,
    };
    deliver(app, route.clone(), generated, files).await
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

fn boundary(headers: &HeaderMap) -> Result<String, Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (ty, params) = multipart::parse_params(ct);
    if ty != "multipart/form-data" {
        return Err(Error::bad_request("expected a multipart/form-data body"));
    }
    // Two boundaries would let two parsers (porter's, the app's) read two different
    // forms from one body: refuse rather than pick one.
    let mut found = params.into_iter().filter(|(k, _)| k == "boundary");
    match (found.next(), found.next()) {
        (Some((_, b)), None) if (1..=70).contains(&b.len()) => Ok(b),
        (Some(_), Some(_)) => Err(Error::bad_request(
            "the multipart body names two boundaries",
        )),
        _ => Err(Error::bad_request(
            "the multipart body has no valid boundary",
        )),
    }
}

/// The request target for the app: §3's canonical path plus the client's query, both
/// in the canonical form verifiers rebuild (`route::canonical_query`). An empty query
/// is left out, as WSGI servers and Django do when they rebuild it.
pub(crate) fn target(path: &NormalPath, uri: &http::Uri) -> String {
    match uri.query().filter(|q| !q.is_empty()) {
        Some(q) => format!("{}?{}", path.canonical(), canonical_query(q)),
        None => path.canonical(),
    }
}

/// What `authorize` answered (SPEC §4.6).
pub enum Authorized<R> {
    /// Go on; `client` is who the app says the client is (`X-Porter-Client-Id`).
    Go { client: Option<String> },
    /// The app said no: its answer goes to the client as is.
    Refused(R),
}

/// Asks the app whether this upload may proceed (SPEC §4.6), before any body byte is
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

/// Sends the metadata and settles the files by the answer (SPEC §4.3). Runs as its own
/// task: once the metadata request is sent, a client that goes away cancels nothing.
async fn deliver(
    app: Arc<App>,
    route: UploadRoute,
    req: Generated,
    files: Vec<StoredFile>,
) -> Response<Body> {
    let stats = crate::http::stats::RequestStats::current();
    let task = tokio::spawn(async move {
        let mut files = files;
        // The files become the app's once the whole request has gone to it: a crash
        // before that leaves their unsent markers, and the sweep deletes them.
        let (sent_tx, mut sent_rx) = tokio::sync::oneshot::channel();
        let send = app.backend.send_generated_noting(req, Some(sent_tx));
        tokio::pin!(send);
        let mut told = false;
        let answer = loop {
            tokio::select! {
                answer = &mut send => break answer,
                sent = &mut sent_rx, if !told => {
                    told = true;
                    if sent.is_ok() {
                        files.iter_mut().for_each(StoredFile::told);
                    }
                }
            }
        };
        if answer.is_ok() {
            files.iter_mut().for_each(StoredFile::told);
        }
        match answer {
            Ok(resp) => {
                if let Some(s) = stats {
                    s.set_delivered();
                }
                let status = resp.status().as_u16();
                if route.cleans_up_on(status) {
                    tracing::info!(
                        status,
                        files = files.len(),
                        "backend refused the upload; files deleted"
                    );
                } else {
                    files.iter_mut().for_each(StoredFile::keep);
                }
                drop(files);
                let limits = &app.config.limits;
                Ok(relay(
                    resp,
                    limits.response_buffer,
                    app.config.server.idle_timeout,
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata request failed; files deleted");
                Err(Error::from(e))
            }
        }
    });
    match task.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => e.into_response(),
        Err(e) => Error::internal(format!("delivery failed: {e}")).into_response(),
    }
}

/// Reads and discards the rest of a refused body for a while, in the background.
fn linger(mut body: GuardedBody<Incoming>) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(Some(_)) = body.next_data().await {}
        })
        .await;
    });
}
