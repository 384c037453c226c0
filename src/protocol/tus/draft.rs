//! The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload) on a tus
//! route, beside tus 1.0 and on the same uploads (docs/guides/resumable-clients.md, "IETF draft").
//!
//! A request carrying `Upload-Draft-Interop-Version` lands here. `POST path` creates
//! (optionally with the whole file or its start), `HEAD path/<id>` asks for the offset,
//! `PATCH path/<id>` appends (`application/partial-upload`), `DELETE` cancels. Errors are
//! problem details (RFC 9457), with the draft's problem types where it names one.
//!
//! What changes between interop versions is one row of `VERSIONS`. Where tus answers 423
//! for an upload busy in another request, the draft has the newer request win: a client
//! that lost its connection resumes at once, often before porter noticed the loss, so
//! the older request is told to stop and keeps what it wrote (`Engine::take_over`).

use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::informational::Informational;
use crate::http::multipart::disposition_filename;
use crate::ingest::resumable::{
    Context, Creation, append, begin, cors, hand_over, hv, load, location, parse_u64, renotify,
    status, target, text,
};
use crate::resumable::state::{Completion, Protocol, Upload, now};
use crate::resumable::{Lock, UploadProgress, not_found};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use std::sync::Mutex;
use std::time::Duration;

/// One interop version of the draft: what differs from the others.
#[derive(Debug)]
pub struct Version {
    /// `Upload-Draft-Interop-Version`.
    pub interop: u32,
    /// The `Upload-Limit` key for the seconds left before an upload expires
    /// (`expires` up to interop 6; later drafts renamed it `max-age`).
    pub age_key: &'static str,
    /// Whether a successful append's response must carry `Upload-Offset` (later drafts
    /// make it optional; porter sends it whenever it has it).
    pub offset_in_append: bool,
}

/// The interop versions porter speaks, oldest first. A newer draft is a new row.
pub const VERSIONS: &[Version] = &[Version {
    interop: 6,
    age_key: "expires",
    offset_in_append: true,
}];

const PARTIAL: &str = "application/partial-upload";
const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types#";
/// How long a request waits for an older one on the same upload to stop.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Whether a request speaks the draft.
pub fn is_draft(h: &HeaderMap) -> bool {
    h.contains_key("upload-draft-interop-version")
}

/// The version a request asks for, or the 400 that lists the supported ones.
pub fn version(h: &HeaderMap) -> Result<&'static Version, Problem> {
    let asked = text(h, "upload-draft-interop-version").and_then(|v| v.parse::<u32>().ok());
    VERSIONS
        .iter()
        .find(|v| Some(v.interop) == asked)
        .ok_or_else(|| {
            let supported: Vec<u32> = VERSIONS.iter().map(|v| v.interop).collect();
            let mut p = Problem::from(Error::bad_request(format!(
                "unsupported Upload-Draft-Interop-Version; porter speaks {supported:?}"
            )));
            p.extra
                .insert("supported-versions".into(), serde_json::json!(supported));
            p
        })
}

/// A problem-details answer (RFC 9457, `application/problem+json`).
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    /// A draft problem type (`mismatching-upload-offset`, ...); `about:blank` if none.
    kind: Option<&'static str>,
    title: String,
    /// porter's error code (docs/reference/errors.md), for every problem porter raises itself.
    code: &'static str,
    extra: serde_json::Map<String, serde_json::Value>,
    /// `Upload-Complete: ?0` goes with an offset mismatch.
    incomplete: bool,
    /// The error's kind, for the table's `Retry-After`.
    error: ErrorKind,
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        let (status, code) = e.kind.status_and_code();
        Problem {
            status,
            kind: None,
            title: e.message,
            code,
            extra: serde_json::Map::new(),
            incomplete: false,
            error: e.kind,
        }
    }
}

impl Problem {
    fn typed(kind: &'static str, title: impl Into<String>) -> Problem {
        let mut p = Problem::from(Error::bad_request(title));
        p.kind = Some(kind);
        p
    }

    fn mismatch(expected: u64, provided: u64) -> Problem {
        let mut p = Problem::from(Error::new(
            ErrorKind::Conflict,
            format!("Upload-Offset is {provided}, the upload is at {expected}"),
        ));
        p.kind = Some("mismatching-upload-offset");
        p.extra
            .insert("expected-offset".into(), serde_json::json!(expected));
        p.extra
            .insert("provided-offset".into(), serde_json::json!(provided));
        p.incomplete = true;
        p
    }

    fn inconsistent(title: impl Into<String>) -> Problem {
        Problem::typed("inconsistent-upload-length", title)
    }

    fn completed() -> Problem {
        Problem::typed("completed-upload", "the upload is already complete")
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = serde_json::Map::new();
        let kind = self.kind.map_or_else(
            || "about:blank".to_string(),
            |k| format!("{PROBLEM_TYPES}{k}"),
        );
        body.insert("type".into(), kind.into());
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("code".into(), self.code.into());
        body.extend(self.extra);
        let mut r = Response::new(crate::http::full(
            serde_json::Value::Object(body).to_string(),
        ));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.incomplete {
            h.insert("upload-complete", HeaderValue::from_static("?0"));
        }
        if let Some(v) = self.error.retry_after() {
            h.insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// porter's errors as the draft answers them: `application/problem+json`.
pub fn render_error(e: Error) -> Response<Body> {
    Problem::from(e).into_response()
}

/// One draft request: its version, and the offset to report whatever the outcome.
struct Draft<'c, 'a> {
    ctx: &'c Context<'a>,
    version: &'static Version,
    /// The upload's offset and seconds left before it expires, once it is loaded.
    seen: Mutex<Option<(u64, u64)>>,
}

/// Serves a request on a tus route that carries `Upload-Draft-Interop-Version`; the
/// uploads are the same as tus 1.0's, so either may continue one the other began.
pub async fn handle(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    let origin = text(req.headers(), "origin").map(str::to_string);
    let mut resp = answer(&ctx, req).await;
    cors(ctx.route, origin, resp.headers_mut());
    resp
}

async fn answer(ctx: &Context<'_>, req: Request<Incoming>) -> Response<Body> {
    let version = match version(req.headers()) {
        Ok(v) => v,
        Err(p) => return p.into_response(),
    };
    let d = Draft {
        ctx,
        version,
        seen: Mutex::new(None),
    };
    let mut resp = match dispatch(&d, req).await {
        Ok(r) => r,
        Err(p) => {
            tracing::info!(route = %ctx.route.path, status = p.status.as_u16(), error = %p.title, "IETF draft request refused");
            p.into_response()
        }
    };
    let h = resp.headers_mut();
    if let Some((o, _)) = d.known()
        && !h.contains_key("upload-offset")
    {
        h.insert("upload-offset", HeaderValue::from(o));
    }
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let limit = d.limit();
        resp.headers_mut().insert("upload-limit", limit);
    }
    resp
}

async fn dispatch(d: &Draft<'_, '_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    if req.headers().contains_key("tus-resumable") {
        return Err(Error::bad_request(
            "a request speaks tus (Tus-Resumable) or the IETF draft (Upload-Draft-Interop-Version), not both",
        )
        .into());
    }
    let (method, rest) = target(d.ctx, &req)?;
    match (method, rest.as_str()) {
        (Method::OPTIONS, _) => Ok(d.options()),
        (Method::POST, "") => d.create(req).await,
        (_, "") => Ok(not_allowed("POST, OPTIONS")),
        (_, id) if id.contains('/') || !crate::store::resumable::valid_id(id) => {
            Err(not_found().into())
        }
        (Method::HEAD, id) => d.head(id, req).await,
        (Method::PATCH, id) => d.append(id, req).await,
        (Method::DELETE, id) => d.cancel(id).await,
        _ => Ok(not_allowed("HEAD, PATCH, DELETE, OPTIONS")),
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `Upload-Complete`: a structured-field boolean, `?1` or `?0`.
fn upload_complete(h: &HeaderMap) -> Result<Option<bool>, Problem> {
    match text(h, "upload-complete") {
        None => Ok(None),
        Some("?1") => Ok(Some(true)),
        Some("?0") => Ok(Some(false)),
        Some(_) => Err(Error::bad_request("Upload-Complete must be ?0 or ?1").into()),
    }
}

fn required_complete(h: &HeaderMap) -> Result<bool, Problem> {
    upload_complete(h)?.ok_or_else(|| Error::bad_request("Upload-Complete is required").into())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    text(h, "content-length").and_then(|v| v.parse().ok())
}

fn complete_header(complete: bool) -> HeaderValue {
    HeaderValue::from_static(if complete { "?1" } else { "?0" })
}

/// Name/value pairs, as tus's `Upload-Metadata` gives them.
type Metadata = Vec<(String, String)>;

/// The client's metadata: tus's `Upload-Metadata` (tus-js-client sends it), else the
/// `Content-Disposition` file name and the request's `Content-Type`.
fn metadata(h: &HeaderMap) -> Result<(Metadata, Option<String>), Problem> {
    if let Some(raw) = crate::protocol::tus::headers::upload_metadata(h)? {
        return Ok((
            crate::protocol::tus::headers::parse_metadata(raw)?,
            Some(raw.to_string()),
        ));
    }
    let mut meta = Vec::new();
    if let Some(name) = text(h, "content-disposition").and_then(disposition_filename) {
        meta.push(("filename".to_string(), name));
    }
    if let Some(ct) = text(h, "content-type").filter(|ct| !ct.starts_with(PARTIAL)) {
        meta.push(("filetype".to_string(), ct.to_string()));
    }
    Ok((meta, None))
}

impl Draft<'_, '_> {
    /// `Upload-Limit`: the size limit and, for a known upload, the seconds it has left.
    fn limit(&self) -> HeaderValue {
        let age = self
            .known()
            .map_or_else(|| self.ctx.route.expire.as_secs(), |(_, age)| age);
        hv(&format!(
            "max-size={}, {}={age}",
            self.ctx.route.max_file_size, self.version.age_key
        ))
    }

    /// Records what every response about `up` reports.
    fn seen(&self, up: &Upload) {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some((up.offset, up.expires.saturating_sub(now())));
        }
    }

    fn known(&self) -> Option<(u64, u64)> {
        self.seen.lock().ok().and_then(|s| *s)
    }

    fn options(&self) -> Response<Body> {
        let mut r = status(StatusCode::NO_CONTENT);
        r.headers_mut().insert("upload-limit", self.limit());
        r
    }

    /// The lock of an upload, taking it from an older request if one holds it.
    async fn take(&self, id: &str) -> Result<Lock, Problem> {
        self.ctx
            .engine()
            .take_over(id, TAKEOVER_WAIT)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Locked,
                    "the upload is busy in a request that does not stop",
                )
                .into()
            })
    }

    async fn create(&self, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
        let (ctx, h) = (self.ctx, req.headers());
        let complete = required_complete(h)?;
        let declared = parse_u64(h, "upload-length")?;
        let mut length = declared;
        if complete && let Some(n) = content_length(h) {
            if declared.is_some_and(|d| d != n) {
                return Err(Problem::inconsistent(
                    "Upload-Length contradicts the body of a complete upload",
                ));
            }
            length = Some(n);
        }
        if length.is_some_and(|l| l > ctx.route.max_file_size) {
            return Err(too_large(ctx).into());
        }
        let (meta, raw) = metadata(h)?;
        let created = begin(ctx, &req, Protocol::IetfDraft, length, meta, raw).await?;
        let (_permit, mut up) = match created {
            Creation::Refused(refusal) => return Ok(refusal),
            Creation::Go(permit, up) => (permit, *up),
        };
        // Locked before it exists, so nothing (not even the collector) sees it half made.
        let lock =
            ctx.engine().try_lock(&up.id).await?.ok_or_else(|| {
                Problem::from(Error::internal("a new upload id is already locked"))
            })?;
        ctx.engine().create(&up).await?;
        self.seen(&up);
        let loc = location(ctx, h, &up.id);
        let told = self.interim(&req, &loc);
        let (parts, body) = req.into_parts();
        let tracking = UploadProgress::start(&ctx.app.progress, &up);
        if !body.is_end_stream() {
            let appended = append(ctx, &mut up, &lock, body, &parts.headers, &tracking).await;
            self.seen(&up);
            if let Err(e) = appended {
                if !told {
                    // The client never learnt the Location: nothing may stay behind.
                    let _ = ctx.engine().remove(&up).await;
                }
                return Err(e.into());
            }
        }
        if complete {
            self.complete_length(&mut up).await?;
        }
        let mut resp = if up.is_complete() {
            let answer = hand_over(ctx, &mut up, &parts).await?;
            tracking.end(&up);
            answer.into_response()
        } else {
            drop(tracking);
            let mut r = status(StatusCode::CREATED);
            r.headers_mut().insert("upload-limit", self.limit());
            r
        };
        let out = resp.headers_mut();
        out.insert(header::LOCATION, hv(&loc));
        out.insert("upload-offset", HeaderValue::from(up.offset));
        out.insert("upload-complete", complete_header(up.is_complete()));
        Ok(resp)
    }

    /// Sends `104 Upload Resumption Supported` where the connection can carry it (see
    /// `http::informational`); whether it went out.
    fn interim(&self, req: &Request<Incoming>, location: &str) -> bool {
        let Some(i) = req.extensions().get::<Informational>() else {
            return false;
        };
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, hv(location));
        h.insert(
            "upload-draft-interop-version",
            HeaderValue::from(self.version.interop),
        );
        i.send(
            StatusCode::from_u16(104).unwrap_or(StatusCode::CONTINUE),
            "Upload Resumption Supported",
            &h,
        )
    }

    /// The client said the upload is complete: what it sent is the whole file.
    async fn complete_length(&self, up: &mut Upload) -> Result<(), Problem> {
        match up.length {
            Some(l) if l != up.offset => Err(Problem::inconsistent(format!(
                "the upload is complete at {} bytes but its length is {l}",
                up.offset
            ))),
            Some(_) => Ok(()),
            None => {
                up.length = Some(up.offset);
                Ok(self.ctx.engine().save(up).await?)
            }
        }
    }

    async fn head(&self, id: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
        let h = req.headers();
        if h.contains_key("upload-offset") || h.contains_key("upload-complete") {
            return Err(Error::bad_request(
                "an offset retrieval carries neither Upload-Offset nor Upload-Complete",
            )
            .into());
        }
        let _lock = self.take(id).await?;
        let mut up = load(self.ctx, id).await?;
        let (parts, _) = req.into_parts();
        renotify(self.ctx, &mut up, &parts).await?;
        self.seen(&up);
        let mut r = status(StatusCode::NO_CONTENT);
        let out = r.headers_mut();
        out.insert("upload-offset", HeaderValue::from(up.offset));
        out.insert("upload-complete", complete_header(up.is_complete()));
        if let Some(l) = up.length {
            out.insert("upload-length", HeaderValue::from(l));
        }
        out.insert("upload-limit", self.limit());
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    async fn append(&self, id: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
        let (ctx, h) = (self.ctx, req.headers());
        if !text(h, "content-type").is_some_and(|ct| ct.starts_with(PARTIAL)) {
            let mut p = Problem::from(Error::bad_request(format!(
                "an append needs Content-Type: {PARTIAL}"
            )));
            p.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            p.code = "unsupported_type";
            return Err(p);
        }
        let offset = parse_u64(h, "upload-offset")?
            .ok_or_else(|| Problem::from(Error::bad_request("Upload-Offset is required")))?;
        let complete = required_complete(h)?;
        let _permit = ctx.admit(h, u64::MAX)?;
        let lock = self.take(id).await?;
        let mut up = load(ctx, id).await?;
        self.seen(&up);
        if up.tus.concat.is_some() {
            return Err(Error::bad_request("a tus concatenation takes no draft appends").into());
        }
        if offset != up.offset {
            return Err(Problem::mismatch(up.offset, offset));
        }
        let (parts, body) = req.into_parts();
        if up.is_complete() {
            return self.complete_again(&mut up, &parts, &body).await;
        }
        let implied = complete
            .then(|| content_length(&parts.headers).map(|n| offset + n))
            .flatten();
        for l in [parse_u64(&parts.headers, "upload-length")?, implied]
            .into_iter()
            .flatten()
        {
            self.learn_length(&mut up, l).await?;
        }
        let tracking = UploadProgress::start(&ctx.app.progress, &up);
        if !body.is_end_stream() {
            let appended = append(ctx, &mut up, &lock, body, &parts.headers, &tracking).await;
            self.seen(&up);
            appended?;
        }
        if complete {
            self.complete_length(&mut up).await?;
        }
        if !up.is_complete() {
            drop(tracking);
            let mut r = status(StatusCode::NO_CONTENT);
            if self.version.offset_in_append {
                r.headers_mut()
                    .insert("upload-offset", HeaderValue::from(up.offset));
            }
            r.headers_mut()
                .insert("upload-complete", complete_header(false));
            return Ok(r);
        }
        let answer = hand_over(ctx, &mut up, &parts).await?;
        tracking.end(&up);
        Ok(with_complete(answer.into_response(), &up))
    }

    /// An append to an upload whose bytes are all in: 400, unless it is an empty retry
    /// of a completion the app has not accepted yet, which sends the metadata again.
    async fn complete_again(
        &self,
        up: &mut Upload,
        parts: &http::request::Parts,
        body: &Incoming,
    ) -> Result<Response<Body>, Problem> {
        let unsettled = matches!(up.completion, None | Some(Completion::Pending { .. }));
        if !(unsettled && body.is_end_stream()) {
            return Err(Problem::completed());
        }
        let answer = hand_over(self.ctx, up, parts).await?;
        Ok(with_complete(answer.into_response(), up))
    }

    /// A length the client states (`Upload-Length`, or implied by a completing append):
    /// it must agree with what is known.
    async fn learn_length(&self, up: &mut Upload, l: u64) -> Result<(), Problem> {
        match up.length {
            Some(have) if have != l => Err(Problem::inconsistent(format!(
                "the upload's length is {have}, not {l}"
            ))),
            Some(_) => Ok(()),
            None if l < up.offset => Err(Problem::inconsistent(format!(
                "a length of {l} is below the {} bytes already received",
                up.offset
            ))),
            None if l > self.ctx.route.max_file_size => Err(too_large(self.ctx).into()),
            None => {
                up.length = Some(l);
                Ok(self.ctx.engine().save(up).await?)
            }
        }
    }

    async fn cancel(&self, id: &str) -> Result<Response<Body>, Problem> {
        let _lock = self.take(id).await?;
        crate::ingest::resumable::remove(self.ctx, id).await?;
        Ok(status(StatusCode::NO_CONTENT))
    }
}

/// The app's answer to a completing request, with the draft's headers.
fn with_complete(mut r: Response<Body>, up: &Upload) -> Response<Body> {
    let h = r.headers_mut();
    h.insert("upload-offset", HeaderValue::from(up.offset));
    h.insert("upload-complete", complete_header(true));
    r
}

fn too_large(ctx: &Context<'_>) -> Error {
    Error::too_large(format!(
        "the upload is larger than {} bytes",
        ctx.route.max_file_size
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_booleans() {
        let mut h = HeaderMap::new();
        h.insert(
            "upload-draft-interop-version",
            HeaderValue::from_static("6"),
        );
        assert_eq!(version(&h).unwrap().interop, 6);
        h.insert(
            "upload-draft-interop-version",
            HeaderValue::from_static("3"),
        );
        let r = version(&h).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.extra["supported-versions"], serde_json::json!([6]));
        h.insert("upload-complete", HeaderValue::from_static("?1"));
        assert_eq!(upload_complete(&h).unwrap(), Some(true));
        h.insert("upload-complete", HeaderValue::from_static("true"));
        assert!(upload_complete(&h).is_err());
    }
}
