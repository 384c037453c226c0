//! tus 1.0.0 (https://tus.io/protocols/resumable-upload) on the resumable engine, with
//! the extensions creation, creation-with-upload, creation-defer-length, expiration,
//! checksum, checksum-trailer, termination and concatenation (docs/guides/resumable-clients.md).
//!
//! `POST path` creates, `path/<id>` takes HEAD / PATCH / DELETE, `OPTIONS path`
//! describes the server. Every response but OPTIONS carries `Tus-Resumable`.

use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::ingest::resumable::{
    ALLOW_HEADERS, Context, Creation, append, begin, cors, cors_allowed, hand_over, hv, load,
    location, locked, parse_u64, relay, renotify, status, target, text,
};
use crate::protocol::tus::headers::{parse_metadata, upload_metadata};
use crate::resumable::state::{Completion, Concat, Protocol, Upload};
use crate::resumable::{UploadProgress, not_found};
use crate::route::canonical_encode;
use crate::sink::hashes::Hashes;
use crate::store::resumable::Capabilities;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::{Duration, UNIX_EPOCH};

pub const VERSION: &str = "1.0.0";
/// The extensions every store allows.
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,checksum-trailer,termination";
/// The extensions a store that can read partial data back (`ReadBack`) adds.
const READ_BACK_EXTENSIONS: &str = ",concatenation,concatenation-unfinished";

/// `Tus-Extension`, derived from what the store can do.
fn extensions(caps: Capabilities) -> HeaderValue {
    let mut list = EXTENSIONS.to_string();
    if caps.read_back {
        list.push_str(READ_BACK_EXTENSIONS);
    }
    hv(&list)
}
const CHECKSUMS: &str = "md5,sha1,sha256";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Serves a tus 1.0 request (a request on a tus route without
/// `Upload-Draft-Interop-Version`; `dispatch` sends those to `draft`).
pub async fn handle(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    let route = ctx.route;
    let origin = text(req.headers(), "origin").map(str::to_string);
    let is_options = req.method() == Method::OPTIONS;
    let mut resp = match dispatch(&ctx, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(route = %route.path, error = %e, "tus request refused");
            render_error(e)
        }
    };
    if !is_options {
        resp.headers_mut()
            .insert("tus-resumable", HeaderValue::from_static(VERSION));
    }
    cors(route, origin, resp.headers_mut());
    resp
}

/// porter's errors as tus 1.0 answers them: the one error table's status and JSON
/// body, with `Tus-Resumable`.
pub fn render_error(e: Error) -> Response<Body> {
    let mut r = e.into_response();
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    r
}

async fn dispatch(ctx: &Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let (method, rest) = target(ctx, &req)?;
    if method == Method::OPTIONS {
        return Ok(options(ctx, req.headers()));
    }
    if text(req.headers(), "tus-resumable") != Some(VERSION) {
        let mut r = Error::new(
            ErrorKind::PreconditionFailed,
            "Tus-Resumable 1.0.0 is required",
        )
        .into_response();
        r.headers_mut()
            .insert("tus-version", HeaderValue::from_static(VERSION));
        return Ok(r);
    }
    match (method, rest.as_str()) {
        (Method::POST, "") => create(ctx, req).await,
        (_, "") => Ok(not_allowed("POST, OPTIONS")),
        (_, id) if id.contains('/') || !crate::store::resumable::valid_id(id) => Err(not_found()),
        (Method::HEAD, id) => head(ctx, id, req).await,
        (Method::PATCH, id) => patch(ctx, id, req).await,
        (Method::DELETE, id) => delete(ctx, id).await,
        _ => Ok(not_allowed("HEAD, PATCH, DELETE, OPTIONS")),
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn options(ctx: &Context<'_>, h: &HeaderMap) -> Response<Body> {
    let preflight = h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut r = status(if preflight {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    });
    let out = r.headers_mut();
    out.insert("tus-version", HeaderValue::from_static(VERSION));
    out.insert("tus-extension", extensions(ctx.engine().capabilities()));
    out.insert("tus-max-size", HeaderValue::from(ctx.route.max_file_size));
    out.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUMS),
    );
    if preflight && text(h, "origin").is_some_and(|o| cors_allowed(ctx.route, o)) {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, HEAD, PATCH, DELETE, OPTIONS"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    r
}

fn expires_header(up: &Upload) -> HeaderValue {
    hv(&httpdate::fmt_http_date(
        UNIX_EPOCH + Duration::from_secs(up.expires),
    ))
}

fn part_id(ctx: &Context<'_>, url: &str) -> Option<String> {
    let path = url
        .split("://")
        .nth(1)
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or(url);
    let base = ctx.route.path.trim_end_matches('/');
    let id = path.strip_prefix(base)?.trim_start_matches('/');
    crate::store::resumable::valid_id(id).then(|| id.to_string())
}

async fn create(ctx: &Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let h = req.headers();
    let route = ctx.route;
    let concat = match text(h, "upload-concat") {
        None => None,
        Some(_) if !ctx.engine().capabilities().read_back => {
            return Err(Error::bad_request(
                "concatenation is not available with this storage (it cannot read partial uploads back)",
            ));
        }
        Some("partial") => Some(Concat::Partial),
        Some(v) if v.starts_with("final;") => {
            let parts = v["final;".len()..]
                .split(' ')
                .filter(|p| !p.is_empty())
                .map(|u| {
                    part_id(ctx, u)
                        .ok_or_else(|| Error::bad_request(format!("{u} is not an upload here")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if parts.is_empty() {
                return Err(Error::bad_request("Upload-Concat final names no uploads"));
            }
            // One partial listed a thousand times would write it a thousand times.
            if (1..parts.len()).any(|i| parts[..i].contains(&parts[i])) {
                return Err(Error::bad_request(
                    "Upload-Concat final names an upload twice",
                ));
            }
            Some(Concat::Final { parts })
        }
        Some(_) => return Err(Error::bad_request("bad Upload-Concat")),
    };
    let length = parse_u64(h, "upload-length")?;
    let defer = text(h, "upload-defer-length") == Some("1");
    let is_final = matches!(concat, Some(Concat::Final { .. }));
    if is_final && (length.is_some() || defer) {
        return Err(Error::bad_request(
            "a final upload takes its length from its partials: no Upload-Length",
        ));
    }
    if !is_final && length.is_some() == defer {
        return Err(Error::bad_request(
            "send Upload-Length or Upload-Defer-Length: 1",
        ));
    }
    if length.is_some_and(|l| l > route.max_file_size) {
        return Err(Error::too_large(format!(
            "the upload is larger than {} bytes",
            route.max_file_size
        )));
    }
    let with_body = text(h, "content-type").is_some_and(|ct| ct.starts_with(OFFSET_STREAM));
    if !with_body && !http_body::Body::is_end_stream(req.body()) {
        return Err(unsupported_media_type(
            "a creation with upload needs Content-Type: application/offset+octet-stream",
        ));
    }
    let raw_metadata = upload_metadata(h)?.map(str::to_string);
    let metadata = parse_metadata(raw_metadata.as_deref().unwrap_or(""))?;
    let created = begin(ctx, &req, Protocol::Tus, length, metadata, raw_metadata).await?;
    let (_permit, mut up) = match created {
        Creation::Refused(refusal) => return Ok(refusal),
        Creation::Go(permit, up) => (permit, up),
    };
    up.tus.concat = concat;
    let id = up.id.clone();
    // Locked before it exists, so nothing (not even the collector) sees it half made.
    let lock = ctx.engine().try_lock(&id).await?.ok_or_else(locked)?;
    if let Some(Concat::Final { parts }) = up.tus.concat.clone() {
        concatenate(ctx, &mut up, &parts).await?;
    } else {
        ctx.engine().create(&up).await?;
    }
    let loc = location(ctx, h, &id);
    let (parts, body) = req.into_parts();
    let tracking = UploadProgress::start(&ctx.app.progress, &up);
    if with_body && let Err(e) = append(ctx, &mut up, &lock, body, &parts.headers, &tracking).await
    {
        // The client never learnt the Location: nothing may stay behind.
        let _ = ctx.engine().remove(&up).await;
        return Err(e);
    }
    let mut resp = status(StatusCode::CREATED);
    if up.is_complete() && up.tus.concat != Some(Concat::Partial) {
        let answer = hand_over(ctx, &mut up, &parts).await?;
        tracking.end(&up);
        if !answer.status.is_success() {
            return Ok(relay(answer));
        }
    }
    let out = resp.headers_mut();
    out.insert(header::LOCATION, hv(&loc));
    out.insert("upload-expires", expires_header(&up));
    if with_body {
        out.insert("upload-offset", HeaderValue::from(up.offset));
    }
    Ok(resp)
}

/// Builds a final upload from complete partial ones.
async fn concatenate(ctx: &Context<'_>, up: &mut Upload, parts: &[String]) -> Result<(), Error> {
    let engine = ctx.engine();
    let mut unfinished = Vec::new();
    for id in parts {
        let p = engine.load(id).await?.ok_or_else(not_found)?;
        if p.tus.concat != Some(Concat::Partial) || p.route != ctx.route.path {
            return Err(Error::bad_request(format!(
                "{id} is not a partial upload here"
            )));
        }
        if !p.is_complete() {
            unfinished.push(p.id);
        }
    }
    engine.create(up).await?;
    if unfinished.is_empty() {
        return assemble(ctx, up).await;
    }
    // concatenation-unfinished: each unfinished partial remembers this final, and the
    // last one to complete assembles it.
    for id in unfinished {
        let _lock = engine.try_lock_wait(&id).await?.ok_or_else(locked)?;
        let mut p = engine.load(&id).await?.ok_or_else(not_found)?;
        p.tus.waiting.push(up.id.clone());
        engine.save(&p).await?;
    }
    // A partial may have completed while this final was being registered.
    assemble(ctx, up).await
}

/// Copies the (complete) partial uploads into a final one; `Ok(false)` while some
/// partial is still unfinished.
async fn assemble(ctx: &Context<'_>, up: &mut Upload) -> Result<(), Error> {
    let engine = ctx.engine();
    let Some(Concat::Final { parts }) = up.tus.concat.clone() else {
        return Ok(());
    };
    let mut uploads = Vec::new();
    for id in &parts {
        let p = engine.load(id).await?.ok_or_else(not_found)?;
        if !p.is_complete() {
            return Ok(());
        }
        uploads.push(p);
    }
    let total: u64 = uploads.iter().map(|p| p.offset).sum();
    if total > ctx.route.max_file_size {
        return Err(Error::too_large(format!(
            "the upload is larger than {} bytes",
            ctx.route.max_file_size
        )));
    }
    let hashes = Hashes::new(&ctx.route.hashes);
    let block = ctx.app.config.limits.buffer.max(64 << 10);
    let (offset, hashes) = engine.concatenate(up, &uploads, hashes, block).await?;
    up.length = Some(total);
    up.offset = offset;
    up.hashes = hashes.save();
    engine.save(up).await
}

/// A partial upload just completed: assemble the finals that waited for it.
async fn release_finals(ctx: &Context<'_>, partial: &Upload, parts: &http::request::Parts) {
    for id in &partial.tus.waiting {
        let Ok(Some(_lock)) = ctx.engine().try_lock_wait(id).await else {
            continue;
        };
        let Ok(Some(mut fin)) = ctx.engine().load(id).await else {
            continue;
        };
        if fin.is_complete() {
            continue;
        }
        if let Err(e) = assemble(ctx, &mut fin).await {
            tracing::warn!(id = %fin.id, error = %e, "cannot assemble a final upload");
            continue;
        }
        if fin.is_complete()
            && let Err(e) = hand_over(ctx, &mut fin, parts).await
        {
            tracing::warn!(id = %fin.id, error = %e, "a final upload's notify failed; its HEAD retries");
        }
    }
}

async fn head(
    ctx: &Context<'_>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let _lock = ctx.engine().try_lock(id).await?.ok_or_else(locked)?;
    let mut up = load(ctx, id).await?;
    let (parts, _) = req.into_parts();
    renotify(ctx, &mut up, &parts).await?;
    let mut r = status(StatusCode::OK);
    let out = r.headers_mut();
    // A final upload still waiting for unfinished partials has no offset yet.
    let waiting_final = matches!(up.tus.concat, Some(Concat::Final { .. })) && up.length.is_none();
    if !waiting_final {
        out.insert("upload-offset", HeaderValue::from(up.offset));
    }
    match up.length {
        Some(l) => {
            out.insert("upload-length", HeaderValue::from(l));
        }
        None if !waiting_final => {
            out.insert("upload-defer-length", HeaderValue::from_static("1"));
        }
        None => {}
    }
    if let Some(m) = &up.raw_metadata {
        out.insert("upload-metadata", hv(m));
    }
    match &up.tus.concat {
        Some(Concat::Partial) => {
            out.insert("upload-concat", HeaderValue::from_static("partial"));
        }
        Some(Concat::Final { parts }) => {
            let base = canonical_encode(ctx.route.path.trim_end_matches('/').as_bytes());
            let urls: Vec<String> = parts.iter().map(|p| format!("{base}/{p}")).collect();
            out.insert("upload-concat", hv(&format!("final;{}", urls.join(" "))));
        }
        None => {}
    }
    out.insert("upload-expires", expires_header(&up));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn patch(
    ctx: &Context<'_>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let h = req.headers();
    if !text(h, "content-type").is_some_and(|ct| ct.starts_with(OFFSET_STREAM)) {
        return Err(unsupported_media_type(&format!(
            "PATCH needs Content-Type: {OFFSET_STREAM}"
        )));
    }
    let _permit = ctx.admit(h, u64::MAX)?;
    let lock = ctx.engine().try_lock(id).await?.ok_or_else(locked)?;
    let mut up = load(ctx, id).await?;
    if matches!(up.tus.concat, Some(Concat::Final { .. })) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "a final concatenation cannot be patched",
        ));
    }
    let offset = parse_u64(h, "upload-offset")?
        .ok_or_else(|| Error::bad_request("Upload-Offset is required"))?;
    if offset != up.offset {
        // The client learns where to resume without another HEAD.
        let mut r = Error::new(
            ErrorKind::Conflict,
            format!("Upload-Offset is {offset}, the upload is at {}", up.offset),
        )
        .into_response();
        r.headers_mut()
            .insert("upload-offset", HeaderValue::from(up.offset));
        return Ok(r);
    }
    if let Some(l) = parse_u64(h, "upload-length")? {
        match up.length {
            Some(have) if have != l => {
                return Err(Error::bad_request("Upload-Length cannot change"));
            }
            Some(_) => {}
            None if l < up.offset => {
                return Err(Error::bad_request("Upload-Length is below the offset"));
            }
            None if l > ctx.route.max_file_size => {
                return Err(Error::too_large(format!(
                    "the upload is larger than {} bytes",
                    ctx.route.max_file_size
                )));
            }
            None => {
                up.length = Some(l);
                ctx.engine().save(&up).await?;
            }
        }
    }
    let (parts, body) = req.into_parts();
    let tracking = UploadProgress::start(&ctx.app.progress, &up);
    if !up.is_complete() {
        append(ctx, &mut up, &lock, body, &parts.headers, &tracking).await?;
        if up.is_complete() && !up.tus.waiting.is_empty() {
            release_finals(ctx, &up, &parts).await;
        }
    }
    if up.is_complete() && up.tus.concat != Some(Concat::Partial) {
        let answer = match &up.completion {
            None | Some(Completion::Pending { .. }) => Some(hand_over(ctx, &mut up, &parts).await?),
            _ => None,
        };
        tracking.end(&up);
        if let Some(a) = answer.filter(|a| !a.status.is_success()) {
            return Ok(relay(a));
        }
    } else {
        drop(tracking);
    }
    let mut r = status(StatusCode::NO_CONTENT);
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(up.offset));
    r.headers_mut()
        .insert("upload-expires", expires_header(&up));
    Ok(r)
}

/// 415, for a body that is not `application/offset+octet-stream`.
fn unsupported_media_type(why: &str) -> Error {
    Error::new(ErrorKind::UnsupportedType, why)
}

async fn delete(ctx: &Context<'_>, id: &str) -> Result<Response<Body>, Error> {
    let _lock = ctx.engine().try_lock(id).await?.ok_or_else(locked)?;
    crate::ingest::resumable::remove(ctx, id).await?;
    Ok(status(StatusCode::NO_CONTENT))
}
