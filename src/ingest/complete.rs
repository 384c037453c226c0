//! A finished resumable upload becomes the app's metadata request (docs/reference/metadata.md):
//! same fields, signature and hashes as multipart, then the app's answer decides.
//!
//! * 2xx: the file belongs to the app; the answer is kept for repeated requests.
//! * 4xx: final: file and data are deleted, and the upload answers 410 from then on.
//! * 5xx, or no answer (502/504): the file and state stay for `retry_window`, and the
//!   client's retry sends the metadata again.

use crate::app::App;
use crate::backend::Generated;
use crate::backend::metadata::{self, FileMeta, Item};
use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::metrics::Outcome;
use crate::resumable::Engine;
use crate::resumable::state::{Completion, Upload, now};
use crate::sink::hashes::Hashes;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;

/// The app's answer, read whole (it is small: the app answers metadata).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The answer as the client gets it.
    pub fn into_response(self) -> http::Response<crate::http::Body> {
        let mut r = http::Response::new(crate::http::full(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

/// What the completing request brings besides the upload.
pub struct Request {
    /// The completing client request, for the `authorize` question (docs/guides/authorize-and-progress.md).
    pub client: Option<(
        http::Method,
        http::Uri,
        HeaderMap,
        crate::http::headers::Peer,
    )>,
    pub method: http::Method,
    /// Canonical target (the route's `notify` or `complete` path, query included).
    pub target: String,
    /// The client's headers, prepared for the app.
    pub headers: HeaderMap,
    /// The client's own fields to send beside the metadata (tus `Upload-Metadata`,
    /// a chunked completion's form); names that could pass for metadata are dropped.
    pub fields: Vec<(String, String)>,
    /// Fields porter checked and vouches for (chunked: `upload_id`, `md5`); client
    /// fields a framework could read as one of these are dropped.
    pub vouched: Vec<(String, String)>,
}

impl Request {
    /// The completion of the client request `parts` (asked `authorize` again), to
    /// `target`, with no client fields.
    pub fn of_client(
        ctx: &crate::ingest::Context<'_>,
        parts: &http::request::Parts,
        target: String,
    ) -> Request {
        Request {
            client: Some((
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
                ctx.peer,
            )),
            method: http::Method::POST,
            target,
            headers: ctx.backend_headers(parts),
            fields: Vec::new(),
            vouched: Vec::new(),
        }
    }
}

/// Sends the metadata of a complete upload (again, on a retry) and applies the answer.
pub async fn complete(
    app: &App,
    route: &UploadRoute,
    engine: &Engine,
    up: &mut Upload,
    req: Request,
) -> Result<Answer, Error> {
    match &up.completion {
        Some(Completion::Refused) => return Err(crate::resumable::state::refused()),
        Some(Completion::Accepted {
            status,
            content_type,
            body,
        }) => {
            let mut headers = HeaderMap::new();
            if let Ok(v) = content_type.parse() {
                headers.insert(http::header::CONTENT_TYPE, v);
            }
            return Ok(Answer {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                headers,
                body: Bytes::from(body.clone()),
            });
        }
        _ => {}
    }
    // Every byte is in: the upload no longer counts against its client.
    app.clients.close(&up.client, &up.id);
    if let Some((method, uri, headers, peer)) = &req.client
        && let crate::ingest::Authorized::Refused(refusal) =
            crate::ingest::ask(app, route, method, uri, headers, *peer).await?
    {
        // A refusal at completion counts as the app's 4xx: final.
        let answer = read_answer(refusal, app.config.limits.response_buffer).await;
        return apply_answer(app, engine, route, up, answer).await;
    }
    if let Some(sniffed) = engine.commit(up).await?
        && let Err(why) = accepted(route, up, sniffed)
    {
        // As multipart refuses it: the bytes go, and the refusal is final (a 4xx).
        tracing::info!(id = %up.id, reason = %why, "a resumable upload is not an accepted type");
        let refusal = Err(Error::new(ErrorKind::UnsupportedType, why));
        return apply_answer(app, engine, route, up, refusal).await;
    }
    let meta = file_meta(route, up)?;
    let vouched = req.vouched.into_iter().map(|(name, value)| Item::Vouched {
        name,
        value: Bytes::from(value),
    });
    let fields = req.fields.into_iter().map(|(name, value)| Item::Field {
        name,
        value: Bytes::from(value),
    });
    let items: Vec<Item> = vouched.chain(fields).chain([Item::File(meta)]).collect();
    let how = crate::ingest::route_encoding(app, route);
    let (content_type, body) = metadata::encode(&how, &items);
    let sent = app
        .backend
        .send_generated(Generated {
            method: req.method,
            target: req.target,
            headers: req.headers,
            content_type: Some(content_type),
            body,
        })
        .await;
    let answer = match sent {
        Ok(resp) => read_answer(resp, app.config.limits.response_buffer).await,
        Err(e) => Err(Error::from(e)),
    };
    apply_answer(app, engine, route, up, answer).await
}

async fn read_answer(
    resp: http::Response<hyper::body::Incoming>,
    max: usize,
) -> Result<Answer, Error> {
    let (parts, body) = resp.into_parts();
    let limited = http_body_util::Limited::new(body, max);
    let body = limited
        .collect()
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::BackendUnavailable,
                format!("the app's answer failed: {e}"),
            )
        })?
        .to_bytes();
    let mut headers = parts.headers;
    crate::http::headers::strip_hop_by_hop(&mut headers, false);
    headers.remove(http::header::CONTENT_LENGTH);
    Ok(Answer {
        status: parts.status,
        headers,
        body,
    })
}

async fn apply_answer(
    app: &App,
    engine: &Engine,
    route: &UploadRoute,
    up: &mut Upload,
    answer: Result<Answer, Error>,
) -> Result<Answer, Error> {
    let status = match &answer {
        Ok(a) => a.status.as_u16(),
        Err(e) => e.kind.status().as_u16(),
    };
    let outcome = match status {
        200..=299 => Some(Outcome::ok),
        400..=499 => Some(Outcome::refused),
        // A retry of an upload already waiting for the app is not another upload.
        _ if matches!(up.completion, Some(Completion::Pending { .. })) => None,
        _ => Some(Outcome::backend_error),
    };
    if let Some(outcome) = outcome {
        let age = now().saturating_sub(if up.created == 0 { now() } else { up.created });
        app.metrics
            .upload_finished(route.kind.name(), outcome, Duration::from_secs(age));
    }
    match status {
        200..=299 => {
            let a = answer.as_ref().map_err(Clone::clone)?;
            up.completion = Some(Completion::Accepted {
                status,
                content_type: a
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: String::from_utf8_lossy(&a.body).into_owned(),
            });
            // The kept answer (and porter's record) lives for retry_window.
            up.expires = now() + route.retry_window.as_secs();
            engine.save(up).await?;
        }
        400..=499 => {
            tracing::info!(id = %up.id, status, "the app refused a resumable upload; deleted");
            engine.remove(up).await?;
            up.completion = Some(Completion::Refused);
            up.file.stored = None;
            engine.save(up).await?;
        }
        _ => {
            tracing::warn!(id = %up.id, status, "the app did not accept a finished upload; kept for a retry");
            let until = match up.completion {
                Some(Completion::Pending { until, .. }) => until,
                _ => now() + route.retry_window.as_secs(),
            };
            up.completion = Some(Completion::Pending { until, status });
            engine.save(up).await?;
        }
    }
    answer
}

/// The route's `accept` rules, checked as multipart checks them: the file name's
/// extension, then the type sniffed from the first bytes.
fn accepted(
    route: &UploadRoute,
    up: &Upload,
    sniffed: Option<crate::sink::accept::Sniffed>,
) -> Result<(), String> {
    use crate::sink::accept;
    let name = crate::http::names::safe_file_name(&up.name);
    accept::check_name(&route.accept, &name)?;
    accept::check_sniffed(&route.accept, &name, sniffed)
}

fn file_meta(route: &UploadRoute, up: &Upload) -> Result<FileMeta, Error> {
    let (key, path) = up.file.stored.clone().unwrap_or_default();
    let hashes =
        Hashes::restore(&up.hashes).ok_or_else(|| Error::internal("damaged hash state"))?;
    let id = uuid::Uuid::parse_str(&up.id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| up.id.clone());
    Ok(FileMeta {
        field: route.field.clone(),
        name: crate::http::names::safe_file_name(&up.name),
        content_type: up.content_type.clone(),
        charset: String::new(),
        detected_type: up.detected_type.clone(),
        path,
        key,
        bucket: up.file.bucket.clone(),
        id,
        size: up.offset,
        hashes: hashes.finish().0,
    })
}
