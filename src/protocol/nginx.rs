//! The nginx-upload-module resumable protocol (docs/guides/resumable-clients.md "nginx-resumable"): raw
//! segments POSTed with `X-Content-Range` and `X-Session-ID`, in any order and in
//! parallel. Fixes that module's known faults: the state is saved after every segment
//! write, the whole-file hashes are right whatever the order (the file is read once
//! at the end), and the state is kept until the app has accepted the file.

use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::http::multipart::disposition_filename;
use crate::http::{Body, full};
use crate::ingest::complete;
use crate::ingest::{Authorized, Context, content_length};
use crate::resumable::state::{Completion, Protocol, SegmentState, Upload, now};
use crate::route::canonical_encode;
use crate::sink::hashes::{hex, md5};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use sha2::Digest;

fn text<'a>(h: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| h.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The session id: `min` to 128 of `A-Z a-z 0-9 _ -`. Whoever knows it may add to the
/// upload, so a short one (`1`) would be guessed.
fn session(h: &HeaderMap, min: usize) -> Result<String, Error> {
    let s = text(h, &["x-session-id", "session-id"])
        .ok_or_else(|| Error::bad_request("X-Session-ID is required"))?;
    let ok = (min.max(1)..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::bad_request(format!(
            "X-Session-ID must be {} to 128 of A-Z a-z 0-9 _ -",
            min.max(1)
        )))
    }
}

/// Who sent a segment, as far as porter can tell: a digest of its `Authorization` and
/// `Cookie` headers (empty when it has neither). A session belongs to the credentials
/// of its first segment, so another client that learns the id cannot overwrite or
/// complete it.
fn owner(h: &HeaderMap) -> String {
    let creds: Vec<(&str, &[u8])> = [header::AUTHORIZATION, header::COOKIE]
        .iter()
        .flat_map(|n| h.get_all(n).iter().map(move |v| (n.as_str(), v.as_bytes())))
        .collect();
    if creds.is_empty() {
        return String::new();
    }
    let mut d = sha2::Sha256::new();
    for (name, value) in creds {
        d.update(name.as_bytes());
        d.update((value.len() as u64).to_be_bytes());
        d.update(value);
    }
    hex(&d.finalize())
}

fn range(h: &HeaderMap) -> Result<(u64, u64, u64), Error> {
    let v = text(h, &["x-content-range", "content-range"])
        .ok_or_else(|| Error::bad_request("X-Content-Range is required"))?;
    crate::http::content_range::parse(v).ok_or_else(|| Error::bad_request("bad X-Content-Range"))
}

/// Merges an inclusive range into a sorted, merged list.
pub fn merge(list: &mut Vec<(u64, u64)>, r: (u64, u64)) {
    list.push(r);
    list.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(list.len());
    for &(a, b) in list.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *list = out;
}

fn range_text(up: &Upload) -> String {
    let total = up.length.unwrap_or(0);
    up.segments
        .ranges
        .iter()
        .map(|(a, b)| format!("{a}-{b}/{total}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn handle(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    match segment(&ctx, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// One segment: checked, written, counted; the last one completes the upload.
async fn segment(ctx: &Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let route = ctx.route;
    let h = req.headers();
    let sid = session(h, route.session_id_min)?;
    let (start, end, total) = range(h)?;
    if content_length(h)? != Some(end - start + 1) {
        return Err(Error::new(
            ErrorKind::RangeNotSatisfiable,
            "Content-Length does not match X-Content-Range",
        ));
    }
    if total > route.max_file_size {
        return Err(Error::too_large(format!(
            "the file is larger than {} bytes",
            route.max_file_size
        )));
    }
    let _permit = ctx.admit(h, u64::MAX)?;
    // The store wants 32-hex ids; a session id names an upload per route.
    let id = hex(&md5::digest(format!("{}\n{sid}", route.path).as_bytes()));
    let up = match open(ctx, &id, total, &req).await? {
        Ok(up) => up,
        Err(refusal) => return Ok(refusal),
    };
    check(&up, &req, total)?;
    let (parts, body) = req.into_parts();
    if up.completion.is_none() {
        let up = write(ctx, &id, (start, end), body).await?;
        if up.segments.ranges != [(0, total - 1)] || up.completion.is_some() {
            return Ok(received(&up));
        }
    }
    // Every byte is in (now, or a retry of a completion the app has not accepted).
    complete_session(ctx, &id, total, &parts).await
}

/// The session's upload, created (after asking `authorize`) by its first segment; the
/// app's refusal as `Err`.
async fn open(
    ctx: &Context<'_>,
    id: &str,
    total: u64,
    req: &Request<Incoming>,
) -> Result<Result<Upload, Response<Body>>, Error> {
    let engine = ctx.engine();
    if let Some(up) = engine.load(id).await? {
        return Ok(Ok(up));
    }
    ctx.room_for(total)?;
    let given = match ctx.authorize(req).await? {
        Authorized::Refused(refusal) => return Ok(Err(refusal)),
        Authorized::Go { client } => client,
    };
    let client = ctx.client_of(req.headers(), given.as_deref());
    // Parallel first segments: one creates, the others find it made.
    let _lock = engine.try_lock_wait(id).await?.ok_or_else(busy)?;
    if let Some(existing) = engine.load(id).await? {
        return Ok(Ok(existing));
    }
    let mut up = new_upload(ctx.route, id, total, req.headers());
    crate::ingest::resumable::count_client(&ctx.app, &mut up, client)?;
    engine.create(&up).await?;
    Ok(Ok(up))
}

/// A later segment must come from the session's owner, agree on the total, and find
/// the upload alive.
fn check(up: &Upload, req: &Request<Incoming>, total: u64) -> Result<(), Error> {
    if up.segments.owner != owner(req.headers()) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "this session belongs to another client",
        ));
    }
    if up.length != Some(total) {
        return Err(Error::bad_request(
            "the total size differs from earlier segments",
        ));
    }
    up.check_live()?;
    Ok(())
}

/// Writes one segment's bytes at their place and records the range; returns the
/// upload as saved.
async fn write(
    ctx: &Context<'_>,
    id: &str,
    (start, end): (u64, u64),
    body: Incoming,
) -> Result<Upload, Error> {
    let engine = ctx.engine();
    // Re-check under the lock: a completion may be moving the data right now.
    {
        let _lock = engine.try_lock_wait(id).await?.ok_or_else(busy)?;
        let now_state = engine
            .load(id)
            .await?
            .ok_or_else(crate::resumable::not_found)?;
        if now_state.completion.is_some() || now_state.file.stored.is_some() {
            return Err(busy());
        }
    }
    let claim = engine.claim(id, (start, end)).ok_or_else(|| {
        Error::new(
            ErrorKind::Conflict,
            "the segment overlaps one still being written",
        )
    })?;
    let mut body = ctx.guarded(body, end - start + 1);
    let written = engine
        .write_segment(id, start, &mut body, ctx.app.config.limits.buffer)
        .await?;
    if written != end - start + 1 {
        return Err(Error::bad_request("the segment is shorter than its range"));
    }
    let _lock = engine.try_lock_wait(id).await?.ok_or_else(busy)?;
    let mut up = engine
        .load(id)
        .await?
        .ok_or_else(crate::resumable::not_found)?;
    merge(&mut up.segments.ranges, (start, end));
    if up.segments.ranges.len() > MAX_RANGES {
        return Err(Error::new(
            ErrorKind::RangeNotSatisfiable,
            "too many separate ranges; send contiguous segments",
        ));
    }
    up.offset = up.segments.ranges.iter().map(|(a, b)| b - a + 1).sum();
    up.expires = now() + ctx.route.expire.as_secs();
    engine.save(&up).await?;
    drop(claim);
    Ok(up)
}

/// 201 with the ranges received so far.
fn received(up: &Upload) -> Response<Body> {
    let body = range_text(up);
    let mut r = Response::new(full(body.clone()));
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert(
        header::RANGE,
        HeaderValue::from_str(&body).unwrap_or(HeaderValue::from_static("")),
    );
    r
}

/// Hashes the complete file (its segments came in any order) and hands it to the app.
async fn complete_session(
    ctx: &Context<'_>,
    id: &str,
    total: u64,
    parts: &http::request::Parts,
) -> Result<Response<Body>, Error> {
    let (engine, route) = (ctx.engine(), ctx.route);
    let _lock = engine.try_lock(id).await?.ok_or_else(busy)?;
    // No segment may still be writing (a resend of stored bytes) while the file moves.
    let _all = engine
        .claim_wait(id, (0, total.saturating_sub(1)))
        .await
        .ok_or_else(busy)?;
    let mut up = engine
        .load(id)
        .await?
        .ok_or_else(crate::resumable::not_found)?;
    let unsettled =
        up.completion.is_none() || matches!(up.completion, Some(Completion::Pending { .. }));
    if unsettled && up.file.stored.is_none() {
        let block = ctx.app.config.limits.buffer.max(64 << 10);
        up.hashes = engine.hash_file(&up, &route.hashes, block).await?.save();
        engine.save(&up).await?;
    }
    let target = match &route.notify {
        Some(n) => canonical_encode(n.as_bytes()),
        None => ctx.target(&parts.uri),
    };
    let req = complete::Request::of_client(ctx, parts, target);
    let a = complete::complete(&ctx.app, route, engine, &mut up, req).await?;
    Ok(a.into_response())
}

/// Separate received ranges one upload may have; beyond, segments are refused (416),
/// so a client cannot make every segment rewrite an ever larger state.
const MAX_RANGES: usize = 1000;

fn busy() -> Error {
    Error::new(ErrorKind::Locked, "the upload is busy")
}

fn new_upload(route: &UploadRoute, id: &str, total: u64, h: &HeaderMap) -> Upload {
    let name = text(h, &["content-disposition"])
        .and_then(disposition_filename)
        .unwrap_or_default();
    let content_type = crate::http::names::split_content_type(text(h, &["content-type"])).0;
    Upload {
        length: Some(total),
        name,
        content_type,
        segments: SegmentState {
            ranges: Vec::new(),
            owner: owner(h),
        },
        ..Upload::new(Some(id.to_string()), Protocol::NginxResumable, route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging() {
        let mut l = Vec::new();
        merge(&mut l, (100, 199));
        merge(&mut l, (0, 49));
        assert_eq!(l, vec![(0, 49), (100, 199)]);
        merge(&mut l, (50, 99));
        assert_eq!(l, vec![(0, 199)]);
        merge(&mut l, (10, 20));
        assert_eq!(l, vec![(0, 199)]);
    }
}
