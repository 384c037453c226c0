//! The steps every resumable protocol takes on the engine, written once: creating an
//! upload (admission, authorize, the per-client count), loading one under the expiry
//! and refusal rules, appending a body with the tus family's checksum and length
//! rules, settling a complete upload with the app (`complete`), CORS and `Location`.
//! Each protocol only parses and renders its own wire format.

use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::http::headers::is_trusted;
use crate::http::{Body, empty};
use crate::ingest::Authorized;
pub(crate) use crate::ingest::Context;
use crate::ingest::complete::{self, Answer};
use crate::resumable::state::{Completion, Concat, Protocol, Upload, now};
use crate::resumable::{Lock, not_found};
use crate::route::canonical_encode;
use crate::sink::hashes::Algorithm;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(crate) fn text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

pub(crate) fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r
}

/// Headers a browser client may read, for both protocols of a tus route.
const EXPOSE: &str = "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Defer-Length, Upload-Metadata, Upload-Concat, Upload-Expires, Upload-Checksum, Upload-Complete, Upload-Limit, Upload-Draft-Interop-Version";
/// Headers a browser client may send (answered to a CORS preflight).
pub(crate) const ALLOW_HEADERS: &str = "Authorization, Content-Type, Content-Disposition, Origin, X-Requested-With, X-Request-ID, X-HTTP-Method-Override, Tus-Resumable, Upload-Length, Upload-Offset, Upload-Defer-Length, Upload-Metadata, Upload-Concat, Upload-Checksum, Upload-Complete, Upload-Draft-Interop-Version";

/// CORS headers for an allowed `origin`.
pub(crate) fn cors(route: &UploadRoute, origin: Option<String>, h: &mut HeaderMap) {
    if let Some(o) = origin.filter(|o| cors_allowed(route, o)) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, hv(&o));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The method (honouring `X-HTTP-Method-Override`) and what follows the route's path:
/// `""` for the route itself, else an upload id.
pub(crate) fn target(
    ctx: &Context<'_>,
    req: &Request<Incoming>,
) -> Result<(Method, String), Error> {
    let method = match text(req.headers(), "x-http-method-override") {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::bad_request("bad X-HTTP-Method-Override"))?,
        None => req.method().clone(),
    };
    let base = ctx.route.path.trim_end_matches('/').len();
    let path = ctx.path.as_bytes();
    let rest = &path[base.min(path.len())..];
    let rest = String::from_utf8_lossy(rest).trim_matches('/').to_string();
    Ok((method, rest))
}

pub(crate) fn cors_allowed(route: &UploadRoute, origin: &str) -> bool {
    route
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

pub(crate) fn lookup<'a>(meta: &'a [(String, String)], keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| meta.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()))
}

pub(crate) fn parse_u64(h: &HeaderMap, name: &str) -> Result<Option<u64>, Error> {
    text(h, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Error::bad_request(format!("bad {name}")))
        })
        .transpose()
}

/// The URL of an upload, honouring `X-Forwarded-*` only from trusted proxies.
pub(crate) fn location(ctx: &Context<'_>, h: &HeaderMap, id: &str) -> String {
    let trusted = is_trusted(&ctx.app.config.server.trusted_proxies, &ctx.peer);
    let fwd = |name| {
        if trusted {
            text(h, name)
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        } else {
            None
        }
    };
    let scheme = fwd("x-forwarded-proto").unwrap_or(if ctx.peer.tls { "https" } else { "http" });
    let host = fwd("x-forwarded-host")
        .or_else(|| text(h, "host"))
        .unwrap_or("localhost");
    let base = ctx.route.path.trim_end_matches('/');
    format!(
        "{scheme}://{host}{}/{id}",
        canonical_encode(base.as_bytes())
    )
}

/// The hashes every upload computes: the route's, plus md5 for chunked completion.
pub(crate) fn locked() -> Error {
    Error::new(ErrorKind::Locked, "the upload is busy in another request")
}

/// Appends a PATCH (or creation) body, applying the checksum and length rules.
pub(crate) async fn append(
    ctx: &Context<'_>,
    up: &mut Upload,
    lock: &Lock,
    body: Incoming,
    h: &HeaderMap,
    tracking: &crate::resumable::UploadProgress,
) -> Result<(), Error> {
    let body = ctx.guarded(body, ctx.route.max_file_size);
    let body = &mut body.with_progress(tracking.tracker());
    let declared = match text(h, "upload-checksum") {
        Some(v) => Some(crate::protocol::tus::headers::parse_checksum(v)?),
        None => None,
    };
    let trailer =
        text(h, "trailer").is_some_and(|t| t.to_ascii_lowercase().contains("upload-checksum"));
    let check: Vec<Algorithm> = match (&declared, trailer) {
        (Some((a, _)), _) => vec![*a],
        (None, true) => vec![Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256],
        (None, false) => Vec::new(),
    };
    let limits = &ctx.app.config.limits;
    let got = ctx
        .engine()
        .append(
            up,
            lock,
            body,
            ctx.route.max_file_size,
            &check,
            limits.buffer,
        )
        .await?;
    if got.overflow {
        return Err(Error::too_large(
            "the body goes past Upload-Length; nothing of it was kept",
        ));
    }
    let expected = match declared {
        Some(d) => Some(d),
        None if got.broken.is_none() => body
            .trailers()
            .and_then(|t| t.get("upload-checksum"))
            .and_then(|v| v.to_str().ok())
            .map(crate::protocol::tus::headers::parse_checksum)
            .transpose()?,
        None => None,
    };
    if let (Some((algo, want)), Some(check)) = (expected, got.check) {
        if got.broken.is_some() {
            return Err(got
                .broken
                .unwrap_or_else(|| Error::bad_request("the body broke off")));
        }
        let digest = check.finish();
        let have = digest
            .get(algo)
            .and_then(crate::sink::hashes::unhex)
            .unwrap_or_default();
        if have != want {
            return Err(Error::new(
                ErrorKind::ChecksumMismatch,
                "the chunk's checksum does not match; it was discarded",
            ));
        }
    }
    up.offset += got.size;
    up.hashes = got.hashes.save();
    up.expires = now() + ctx.route.expire.as_secs();
    ctx.engine().save(up).await?;
    drop(got.hold);
    match got.broken {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Hands a complete upload to the app: its metadata to `notify`, then the answer decides (`complete`).
pub(crate) async fn hand_over(
    ctx: &Context<'_>,
    up: &mut Upload,
    parts: &http::request::Parts,
) -> Result<Answer, Error> {
    let notify = ctx.route.notify.as_ref().unwrap_or(&ctx.route.path);
    let mut req = complete::Request::of_client(ctx, parts, canonical_encode(notify.as_bytes()));
    req.fields = up.metadata.clone();
    complete::complete(&ctx.app, ctx.route, ctx.engine(), up, req).await
}

/// The app's answer, relayed to the client.
pub(crate) fn relay(a: Answer) -> Response<Body> {
    a.into_response()
}

/// Loads an upload for HEAD/PATCH, applying the expiry and refusal rules.
pub(crate) async fn load(ctx: &Context<'_>, id: &str) -> Result<Upload, Error> {
    let up = ctx.engine().load(id).await?.ok_or_else(not_found)?;
    if up.route != ctx.route.path {
        return Err(not_found());
    }
    up.check_live()?;
    if matches!(up.completion, Some(Completion::Pending { until, .. }) if until <= now()) {
        return Err(Error::new(
            ErrorKind::Expired,
            "the app did not accept the upload within retry_window",
        ));
    }
    Ok(up)
}

/// A complete upload whose metadata the app has not accepted: try again. `Ok(true)`
/// once accepted.
pub(crate) async fn retry(
    ctx: &Context<'_>,
    up: &mut Upload,
    parts: &http::request::Parts,
) -> Result<Option<Answer>, Error> {
    let pending = matches!(up.completion, Some(Completion::Pending { .. }));
    let unsent = up.is_complete() && up.completion.is_none();
    if !(pending || unsent) {
        return Ok(None);
    }
    if up.tus.concat == Some(Concat::Partial) {
        return Ok(None);
    }
    hand_over(ctx, up, parts).await.map(Some)
}

/// A creation that may go ahead, or the app's refusal of it.
pub(crate) enum Creation {
    Refused(Response<Body>),
    /// The admission permit (held while the creation's body streams) and the new
    /// upload, counted against its client.
    Go(OwnedSemaphorePermit, Box<Upload>),
}

/// The steps of every creation, in order: admission, room for the declared length,
/// the app's `authorize`, the new upload counted against its client.
pub(crate) async fn begin(
    ctx: &Context<'_>,
    req: &Request<Incoming>,
    protocol: Protocol,
    length: Option<u64>,
    metadata: Vec<(String, String)>,
    raw_metadata: Option<String>,
) -> Result<Creation, Error> {
    let h = req.headers();
    let permit = ctx.admit(h, u64::MAX)?;
    ctx.room_for(length.unwrap_or(0))?;
    let given = match ctx.authorize(req).await? {
        Authorized::Refused(refusal) => return Ok(Creation::Refused(refusal)),
        Authorized::Go { client } => client,
    };
    let mut up = new_upload(ctx, protocol, length, metadata, raw_metadata);
    let client = ctx.client_of(h, given.as_deref());
    count_client(&ctx.app, &mut up, client)?;
    Ok(Creation::Go(permit, Box::new(up)))
}

/// A new, empty upload on this route.
fn new_upload(
    ctx: &Context<'_>,
    protocol: Protocol,
    length: Option<u64>,
    metadata: Vec<(String, String)>,
    raw_metadata: Option<String>,
) -> Upload {
    Upload {
        length,
        name: lookup(&metadata, &["filename", "name"])
            .unwrap_or("")
            .to_string(),
        content_type: lookup(&metadata, &["filetype", "type"])
            .unwrap_or("")
            .to_string(),
        metadata,
        raw_metadata,
        ..Upload::new(None, protocol, ctx.route)
    }
}

/// Retries the notify of a complete upload the app has not accepted, for a request that
/// asks where the upload stands: never report a complete offset while the app has not
/// accepted it (docs/reference/metadata.md).
pub(crate) async fn renotify(
    ctx: &Context<'_>,
    up: &mut Upload,
    parts: &http::request::Parts,
) -> Result<(), Error> {
    let answer = retry(ctx, up, parts).await.or_else(|e| match e.kind {
        ErrorKind::BackendUnavailable | ErrorKind::BackendTimeout => Ok(None),
        _ => Err(e),
    })?;
    let refused = answer.as_ref().is_some_and(|a| !a.status.is_success());
    if refused && up.completion == Some(Completion::Refused) {
        return Err(crate::resumable::state::refused());
    }
    if refused || matches!(up.completion, Some(Completion::Pending { .. })) {
        return Err(Error::new(
            ErrorKind::Locked,
            "the upload is complete but the app has not accepted it yet",
        ));
    }
    Ok(())
}

/// Cancels an upload (tus termination, draft cancellation). An accepted file belongs to
/// the app: only porter's record of it goes.
pub(crate) async fn remove(ctx: &Context<'_>, id: &str) -> Result<(), Error> {
    let up = ctx.engine().load(id).await?.ok_or_else(not_found)?;
    if up.route != ctx.route.path {
        return Err(not_found());
    }
    let mut gone = up.clone();
    if matches!(up.completion, Some(Completion::Accepted { .. })) {
        gone.file.stored = None;
    }
    ctx.app.clients.close(&up.client, &up.id);
    ctx.engine().remove(&gone).await
}

/// Counts a new upload against its client (`limits.max_incomplete_per_client`, see
/// `clients`): 429 when the client already holds that many unfinished ones.
pub(crate) fn count_client(
    app: &crate::app::App,
    up: &mut Upload,
    client: String,
) -> Result<(), Error> {
    let max = app.config.limits.max_incomplete_per_client;
    app.clients
        .open(
            &client,
            &up.id,
            up.expires,
            crate::resumable::state::now(),
            max,
        )
        .map_err(|_| {
            tracing::info!(%client, max, "refused an upload: the client holds too many unfinished");
            Error::new(
                crate::error::ErrorKind::TooManyRequests,
                format!("this client has {max} unfinished uploads: finish or cancel some first"),
            )
        })?;
    up.client = client;
    Ok(())
}
