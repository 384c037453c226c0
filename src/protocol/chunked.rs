//! The django-chunked-upload protocol (docs/guides/resumable-clients.md "chunked"), so jQuery-File-Upload
//! clients keep working: multipart chunks with `Content-Range` to `path`, then a POST
//! to `complete` with `upload_id` and `md5`. Errors are `{"detail": ...}` with that
//! package's own sentences, which clients show.

use crate::app::App;
use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::body::GuardedBody;
use crate::http::multipart::{Event, Limits as ParserLimits, Parser, parse_params};
use crate::ingest::complete::{self, Answer};
use crate::ingest::{Authorized, Context};
use crate::namespace::{control_in_name, has_control};
use crate::resumable::state::{Completion, Protocol, Upload, now};
use crate::resumable::{Engine, Spool};
use crate::route::percent_decode;
use crate::sink::Pipe;
use crate::sink::hashes::{Algorithm, Hashes};
use bytes::BytesMut;
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;

/// A `{"detail": ...}` answer.
fn detail(status: u16, text: &str, extra: Option<(&str, serde_json::Value)>) -> Response<Body> {
    let mut v = serde_json::json!({ "detail": text });
    if let Some((k, x)) = extra {
        v[k] = x;
    }
    crate::http::json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &v,
    )
}

/// porter's errors in django-chunked-upload's shape: `{"detail": "..."}`, the status
/// and `Retry-After` from the one error table.
pub fn render_error(e: Error) -> Response<Body> {
    let retry = e.retry_after();
    let status = e.kind.status();
    let mut r = crate::http::json_response(status, &serde_json::json!({ "detail": e.message }));
    if let Some(v) = retry {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// `2026-11-25T18:16:20.551Z` for unix seconds (UTC, milliseconds, `Z`).
pub fn iso8601(secs: u64) -> String {
    format!("{}.000Z", crate::http::date::date_time(secs))
}

/// The form of a chunk or completion request.
#[derive(Default)]
struct Form {
    fields: Vec<(String, String)>,
    /// The chunk: spooled, with the client's file name and declared type.
    chunk: Option<(Spool, String, String)>,
}

impl Form {
    /// The field porter reads (`upload_id`, `md5`). Given twice with different values,
    /// porter and the app could each act on another one: refused.
    fn get(&self, name: &str) -> Result<Option<&str>, Error> {
        let mut values = self
            .fields
            .iter()
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.any(|v| Some(v) != first) {
            return Err(Error::bad_request(format!(
                "the form gives {name} twice with different values"
            )));
        }
        Ok(first)
    }

    /// Refuses a form that names a field with a control character (a multipart form's
    /// names are checked part by part as they come).
    fn check_names(self) -> Result<Form, Error> {
        if self.fields.iter().any(|(n, _)| has_control(n)) {
            return Err(control_in_name());
        }
        Ok(self)
    }
}

/// Reads a multipart or urlencoded form; the part named `file_field` is spooled.
async fn read_form(
    app: &App,
    engine: &Engine,
    h: &HeaderMap,
    body: &mut GuardedBody<Incoming>,
    file_field: Option<&str>,
) -> Result<Form, Error> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (ty, params) = parse_params(ct);
    let limits = &app.config.limits;
    if ty == "application/x-www-form-urlencoded" {
        let mut raw = Vec::new();
        while let Some(d) = body.next_data().await? {
            raw.extend_from_slice(&d);
            if raw.len() as u64 > limits.max_fields_bytes {
                return Err(Error::too_large("the form is too large"));
            }
        }
        let fields = raw
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = match p.iter().position(|b| *b == b'=') {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (p, &b""[..]),
                };
                let dec = |s: &[u8]| {
                    let plus: Vec<u8> = s
                        .iter()
                        .map(|b| if *b == b'+' { b' ' } else { *b })
                        .collect();
                    String::from_utf8_lossy(&percent_decode(&plus)).into_owned()
                };
                (dec(k), dec(v))
            })
            .collect();
        return Form {
            fields,
            chunk: None,
        }
        .check_names();
    }
    let boundary = params
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)
        .filter(|_| ty == "multipart/form-data")
        .ok_or_else(|| Error::bad_request("expected a multipart/form-data or urlencoded form"))?;
    let mut parser = Parser::new(
        &boundary,
        ParserLimits {
            max_header_bytes: limits.max_header_bytes,
            max_preamble: limits.max_header_bytes,
        },
    );
    let mut buf = BytesMut::new();
    let (mut eof, mut form) = (false, Form::default());
    let mut field: Option<(String, Vec<u8>)> = None;
    let mut pipe: Option<(Pipe<Spool>, String, String)> = None;
    let mut field_bytes = 0u64;
    let mut parts_seen = 0u64;
    loop {
        match parser
            .feed(&mut buf, eof)
            .map_err(|e| Error::bad_request(e.to_string()))?
        {
            None => match body.next_data().await? {
                Some(d) => parser.push(&mut buf, d),
                None => eof = true,
            },
            Some(Event::Part(head)) => {
                parts_seen += 1;
                if parts_seen > limits.max_parts
                    || form.fields.len() as u64 > limits.max_fields.max(1)
                {
                    return Err(Error::too_large("too many parts in the form"));
                }
                let name = head.name.unwrap_or_default();
                if has_control(&name) {
                    return Err(control_in_name());
                }
                field_bytes += name.len() as u64;
                if head.filename.is_some()
                    && file_field == Some(name.as_str())
                    && form.chunk.is_none()
                    && pipe.is_none()
                {
                    let p = Pipe::new(engine.spool()?, Hashes::new(&[]), None, limits.buffer);
                    pipe = Some((
                        p,
                        head.filename.unwrap_or_default(),
                        head.content_type.unwrap_or_default(),
                    ));
                } else if head.filename.is_none() {
                    field = Some((name, Vec::new()));
                }
            }
            Some(Event::Data(d)) => {
                if let Some((p, ..)) = &mut pipe {
                    p.write(d).await?;
                } else if let Some((_, v)) = &mut field {
                    field_bytes += d.len() as u64;
                    if field_bytes > limits.max_fields_bytes
                        || v.len() as u64 + d.len() as u64 > limits.max_field_bytes
                    {
                        return Err(Error::too_large("the form's fields are too large"));
                    }
                    v.extend_from_slice(&d);
                }
            }
            Some(Event::PartEnd) => {
                if let Some((p, name, ct)) = pipe.take() {
                    form.chunk = Some((p.drain().await?.file, name, ct));
                } else if let Some((n, v)) = field.take() {
                    form.fields
                        .push((n, String::from_utf8_lossy(&v).into_owned()));
                }
            }
            Some(Event::End) => break,
        }
    }
    while body.next_data().await?.is_some() {}
    Ok(form)
}

/// The optional `Content-Range: bytes START-END/TOTAL`.
fn content_range(h: &HeaderMap) -> Result<Option<(u64, u64, u64)>, Error> {
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let range = v.to_str().ok().and_then(crate::http::content_range::parse);
    range
        .map(Some)
        .ok_or_else(|| Error::bad_request("bad Content-Range"))
}

fn algorithms(route: &UploadRoute) -> Vec<Algorithm> {
    let mut a = route.hashes.clone();
    a.push(Algorithm::Md5);
    a
}

pub async fn chunk(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    match chunk_inner(&ctx, req).await {
        Ok(r) => r,
        Err(e) => render_error(e),
    }
}

async fn chunk_inner(ctx: &Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let (app, route) = (&ctx.app, ctx.route);
    let range = content_range(req.headers())?;
    let _permit = ctx.admit(req.headers(), u64::MAX)?;
    // A chunk at offset 0 creates an upload: ask the app before reading it.
    let mut given = None;
    if range.is_none_or(|(a, _, _)| a == 0) {
        match ctx.authorize(&req).await? {
            Authorized::Refused(refusal) => return Ok(refusal),
            Authorized::Go { client } => given = client,
        }
    }
    let client = ctx.client_of(req.headers(), given.as_deref());
    let engine = &app.resumable;
    let (parts, body) = req.into_parts();
    let mut body = ctx.guarded(
        body,
        route
            .max_file_size
            .saturating_add(app.config.limits.max_fields_bytes),
    );
    let mut form = read_form(app, engine, &parts.headers, &mut body, Some(&route.field)).await?;
    let Some((spool, filename, ctype)) = form.chunk.take() else {
        return Ok(detail(400, "No chunk file was submitted", None));
    };
    let size = spool.len();
    let (start, end, total) = range.unwrap_or((0, size.saturating_sub(1), size));
    let max = route.max_file_size;
    if total > max {
        return Ok(detail(
            400,
            &format!("Size of file exceeds the limit ({max} bytes)"),
            None,
        ));
    }
    let (mut up, _lock) = match form.get("upload_id")? {
        Some(id) => {
            let lock = engine
                .try_lock(id)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::Locked, "the upload is busy"))?;
            let Some(up) = engine
                .load(id)
                .await?
                .filter(|u| u.route == route.path && u.protocol == Protocol::Chunked)
            else {
                return Ok(detail(404, "Not found.", None));
            };
            if let Some(r) = invalid(&up) {
                return Ok(r);
            }
            (up, lock)
        }
        None if start != 0 => {
            return Ok(detail(
                400,
                "Offsets do not match",
                Some(("offset", 0.into())),
            ));
        }
        None => {
            let (name, content_type) = (
                filename,
                crate::http::names::split_content_type(Some(&ctype)).0,
            );
            ctx.room_for(total)?;
            let mut up = new_upload(route, name, content_type);
            crate::ingest::resumable::count_client(app, &mut up, client)?;
            let lock = engine
                .try_lock(&up.id)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::Locked, "the upload is busy"))?;
            engine.create(&up).await?;
            (up, lock)
        }
    };
    if up.offset != start {
        return Ok(detail(
            400,
            "Offsets do not match",
            Some(("offset", up.offset.into())),
        ));
    }
    if size != end - start + 1 {
        return Ok(detail(400, "File size doesn't match headers", None));
    }
    let block = app.config.limits.buffer.max(64 << 10);
    let hashes = engine.append_spool(&up, spool, block).await?;
    up.offset += size;
    up.length = Some(total);
    up.hashes = hashes.save();
    up.expires = now() + route.expire.as_secs();
    engine.save(&up).await?;
    Ok(crate::http::json_response(
        StatusCode::OK,
        &serde_json::json!({ "upload_id": up.id, "offset": up.offset, "expires": iso8601(up.expires) }),
    ))
}

fn new_upload(route: &UploadRoute, name: String, content_type: String) -> Upload {
    Upload {
        name,
        content_type,
        // The completion request's md5 is always checked.
        hashes: Hashes::new(&algorithms(route)).save(),
        ..Upload::new(None, Protocol::Chunked, route)
    }
}

/// django-chunked-upload's `is_valid_chunked_upload`.
fn invalid(up: &Upload) -> Option<Response<Body>> {
    match &up.completion {
        Some(Completion::Refused) => return Some(detail(410, "Upload has expired", None)),
        Some(_) => {
            return Some(detail(
                400,
                "Upload has already been marked as \"complete\"",
                None,
            ));
        }
        None => {}
    }
    (up.expires <= now()).then(|| detail(410, "Upload has expired", None))
}

pub async fn completion(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    match finish_inner(&ctx, req).await {
        Ok(r) => r,
        Err(e) => render_error(e),
    }
}

async fn finish_inner(ctx: &Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let (app, route, engine) = (&ctx.app, ctx.route, ctx.engine());
    let authorized = match ctx.authorize(&req).await? {
        Authorized::Refused(refusal) => Some(refusal),
        Authorized::Go { .. } => None,
    };
    let (parts, body) = req.into_parts();
    let mut body = ctx.guarded_quietly(body, app.config.limits.max_fields_bytes);
    let form = read_form(app, engine, &parts.headers, &mut body, None).await?;
    let (Some(id), Some(md5)) = (form.get("upload_id")?, form.get("md5")?) else {
        return Ok(detail(400, "Both 'upload_id' and 'md5' are required", None));
    };
    let _lock = engine
        .try_lock(id)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::Locked, "the upload is busy"))?;
    let Some(mut up) = engine
        .load(id)
        .await?
        .filter(|u| u.route == route.path && u.protocol == Protocol::Chunked)
    else {
        return Ok(detail(404, "Not found.", None));
    };
    match &up.completion {
        Some(Completion::Refused) => return Ok(detail(410, "Upload has expired", None)),
        Some(Completion::Accepted { .. }) => {}
        _ if up.expires <= now() && up.completion.is_none() => {
            return Ok(detail(410, "Upload has expired", None));
        }
        _ => {}
    }
    // Every completion, retries included, must name the right md5.
    let have = Hashes::restore(&up.hashes)
        .map(|h| h.finish())
        .ok_or_else(|| Error::internal("damaged hash state"))?;
    if have.get(Algorithm::Md5) != Some(md5.to_ascii_lowercase().as_str()) {
        return Ok(detail(400, "md5 checksum does not match", None));
    }
    if up.completion.is_none() {
        up.length = Some(up.offset);
    }
    // A refusal of the completion counts as the app's 4xx (docs/guides/authorize-and-progress.md).
    if let Some(refusal) = authorized
        && !matches!(up.completion, Some(Completion::Accepted { .. }))
    {
        engine.remove(&up).await?;
        up.completion = Some(Completion::Refused);
        up.file.stored = None;
        engine.save(&up).await?;
        return Ok(refusal);
    }
    let req = complete::Request {
        client: None,
        method: parts.method.clone(),
        target: ctx.target(&parts.uri),
        headers: ctx.backend_headers(&parts),
        fields: form.fields.clone(),
        // Checked above: the upload's id, and the md5 porter computed (lowercase).
        vouched: vec![
            ("upload_id".into(), id.to_string()),
            ("md5".into(), md5.to_ascii_lowercase()),
        ],
    };
    let answer: Answer = complete::complete(app, route, engine, &mut up, req).await?;
    Ok(answer.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_094_580), "2025-11-25T18:16:20.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h).unwrap(), None);
        h.insert(header::CONTENT_RANGE, "bytes 0-99/1000".parse().unwrap());
        assert_eq!(content_range(&h).unwrap(), Some((0, 99, 1000)));
        for bad in [
            "bytes 5-1/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
        ] {
            h.insert(header::CONTENT_RANGE, bad.parse().unwrap());
            assert!(content_range(&h).is_err(), "{bad}");
        }
    }
}
