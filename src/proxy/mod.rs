//! Passthrough: everything not intercepted goes to the app, buffered like nginx so slow
//! clients never hold an app worker (docs/reference/routing.md).
//!
//! A request body up to `request_buffer` is received whole before the app is contacted;
//! larger ones stream. The response is read ahead up to `response_buffer`. `Upgrade`
//! requests (WebSocket) become a byte tunnel once the app answers 101.

use crate::app::App;
use crate::backend::relay_within;
use crate::error::{Error, ErrorKind};
use crate::http::body::{ConnBudget, GuardedBody};
use crate::http::headers::{Peer, for_backend, strip_hop_by_hop};
use crate::http::{Body, BoxError, empty, full};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

pub async fn forward(app: Arc<App>, peer: Peer, mut req: Request<Incoming>) -> Response<Body> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let budget = req.extensions().get::<ConnBudget>().cloned();
    match send(&app, peer, req, upgrade, budget.as_ref()).await {
        Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => match client_upgrade {
            Some(on_client) => tunnel(on_client, &mut resp),
            None => Error::new(
                ErrorKind::BackendUnavailable,
                "the backend switched protocols unasked",
            )
            .into_response(),
        },
        Ok(resp) => relay_within(
            resp,
            app.config.limits.response_buffer,
            app.config.server.idle_timeout,
            budget,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "passthrough failed");
            e.into_response()
        }
    }
}

async fn send(
    app: &App,
    peer: Peer,
    req: Request<Incoming>,
    upgrade: bool,
    budget: Option<&ConnBudget>,
) -> Result<Response<Incoming>, Error> {
    let limits = &app.config.limits;
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_size) {
        return Err(Error::too_large(format!(
            "the body is larger than {} bytes",
            limits.max_body_size
        )));
    }
    for_backend(
        &mut parts.headers,
        &parts.uri,
        &peer,
        &app.config.server.trusted_proxies,
        upgrade,
    );
    let mut body = GuardedBody::new(body, app.config.server.idle_timeout, limits.max_body_size)
        .with_min_rate(limits.min_body_rate, limits.min_body_rate_grace);
    let failure = body.failure();
    let idle = app.config.server.idle_timeout;
    // Held until the app has answered, that is, until it has read the buffered bytes.
    let (prefix, ended, _held) =
        read_prefix(&mut body, limits.request_buffer, declared, budget, idle).await?;
    let body: Body = if ended {
        parts.headers.remove(header::TRANSFER_ENCODING);
        if !prefix.is_empty() || declared.is_some() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(prefix.len()));
        }
        full(prefix)
    } else {
        body.with_prefix(prefix).map_err(BoxError::from).boxed()
    };
    let req = Request::from_parts(parts, body);
    match app.backend.send(req).await {
        Ok(resp) => Ok(resp),
        // The client's body broke the request: say why (413, 408, 400), not 502.
        Err(e) => Err(failure.get().cloned().unwrap_or_else(|| e.into())),
    }
}

/// Reads until `limit` bytes are in or the body ends; `true` if it ended.
///
/// The buffer's room is taken from the connection's `budget` (the returned permit)
/// *before* a byte is read: a stream that read a frame and then waited for room would
/// hold that frame outside every bound (HTTP/2 lets the client send again as soon as a
/// frame is read). A stream that finds the budget spent by its siblings waits up to
/// `idle` for room, then gets 503.
async fn read_prefix(
    body: &mut GuardedBody<Incoming>,
    limit: usize,
    declared: Option<u64>,
    budget: Option<&ConnBudget>,
    idle: std::time::Duration,
) -> Result<(Bytes, bool, Option<OwnedSemaphorePermit>), Error> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok((Bytes::new(), true, None));
    }
    // Sized by the declared length when there is one: one allocation, no regrowth.
    let want = declared.map_or(limit, |n| n.min(limit as u64) as usize);
    let mut held = None;
    if let Some(b) = budget {
        room(b, want, idle, &mut held).await?;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    loop {
        if body.is_end_stream() {
            return Ok((buf.into(), true, held));
        }
        if buf.len() >= limit {
            return Ok((buf.into(), false, held));
        }
        let Some(d) = body.next_data().await? else {
            return Ok((buf.into(), true, held));
        };
        // The last frame may run past `limit`: its room is taken too.
        let len = buf.len() + d.len();
        if len > buf.capacity() {
            if let Some(b) = budget {
                let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
                room(b, len.saturating_sub(have), idle, &mut held).await?;
            }
            buf.reserve_exact(len - buf.len());
        }
        buf.extend_from_slice(&d);
    }
}

/// Takes `n` more bytes of the connection's budget into `held`, waiting up to `idle`.
async fn room(
    budget: &ConnBudget,
    n: usize,
    idle: std::time::Duration,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    let wait = budget.0.clone().acquire_many_owned(n as u32);
    let permit = tokio::time::timeout(idle, wait)
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Busy,
                "this connection holds too many buffered request bodies",
            )
        })?;
    match held.as_mut() {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Answers 101 to the client and copies bytes both ways once both sides upgraded.
fn tunnel(on_client: hyper::upgrade::OnUpgrade, resp: &mut Response<Incoming>) -> Response<Body> {
    let on_backend = hyper::upgrade::on(&mut *resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(on_client, on_backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut c, mut b) = (TokioIo::new(client), TokioIo::new(backend));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
            tracing::debug!(error = %e, "tunnel closed");
        }
    });
    let mut out = Response::new(empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    strip_hop_by_hop(out.headers_mut(), true);
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out
}
