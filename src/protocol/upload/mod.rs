//! Intercepted uploads. Every kind has the same shape:
//!
//! 1. **admit**: limits that need no body byte (Content-Length, `min_free`,
//!    `max_concurrent_uploads`) — nothing is read before they pass, so a client's
//!    `Expect: 100-continue` is answered with the final status instead;
//! 2. **receive**: a protocol front-end (`form` for multipart) streams each file
//!    through a `FileReceiver` → sink (hashes + writer) → store;
//! 3. **deliver**: the metadata request goes to the app, signed, and the files are
//!    kept or deleted by its answer (docs/reference/metadata.md).

mod file;
mod form;

use crate::app::App;
use crate::backend::metadata::{self, Item};
use crate::backend::{Generated, relay};
use crate::config::UploadRoute;
use crate::error::Error;
use crate::http::Body;
use crate::http::body::GuardedBody;
use crate::http::multipart;
use crate::ingest::{Authorized, Context};
use crate::route::NormalPath;
use file::StoredFile;
use form::Received;
use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// How long a refused upload's remaining body is read and discarded, so the client
/// gets to read the error instead of a connection reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(10);

/// Multipart framing allowance per part when judging Content-Length up front.
const PART_OVERHEAD: u64 = 16 * 1024;

pub async fn multipart(ctx: Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let boundary = boundary(req.headers())?;
    let (app, route) = (&ctx.app, ctx.route);
    let limits = &app.config.limits;
    let cap = route
        .max_files
        .saturating_mul(route.max_file_size)
        .saturating_add(limits.max_fields_bytes)
        .saturating_add(limits.max_parts.saturating_mul(PART_OVERHEAD));
    let _permit = ctx.admit(req.headers(), cap)?;
    if let Authorized::Refused(refusal) = ctx.authorize(&req).await? {
        return Ok(refusal);
    }
    let (parts, body) = req.into_parts();
    let mut body = ctx.guarded(body, cap);
    let received = match form::receive(app, route, &mut body, &boundary).await {
        Ok(r) => r,
        Err(e) => {
            linger(body);
            return Err(e);
        }
    };
    Ok(hand_over(&ctx, &parts, received).await)
}

/// A `raw` upload: the body is the file (docs/guides/resumable-clients.md).
pub async fn raw(ctx: Context<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let route = ctx.route;
    let _permit = ctx.admit(req.headers(), route.max_file_size)?;
    if let Authorized::Refused(refusal) = ctx.authorize(&req).await? {
        return Ok(refusal);
    }
    let (parts, body) = req.into_parts();
    let filename = raw_file_name(&parts.headers, ctx.path);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut body = ctx.guarded(body, route.max_file_size);
    let received = async {
        let mut rx =
            file::FileReceiver::start(&ctx.app, route, &route.field, &filename, content_type)
                .await?;
        while let Some(data) = body.next_data().await? {
            rx.push(data).await?;
        }
        rx.finish().await
    }
    .await;
    match received {
        Ok(stored) => {
            let received = vec![Received::File(Box::new(stored))];
            Ok(hand_over(&ctx, &parts, received).await)
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

/// Turns the received parts into the metadata request and keeps or removes the files by its answer.
async fn hand_over(
    ctx: &Context<'_>,
    parts: &http::request::Parts,
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
    let (content_type, body) = metadata::encode(&ctx.encoding(), &items);
    let generated = Generated {
        method: parts.method.clone(),
        target: ctx.target(&parts.uri),
        headers: ctx.backend_headers(parts),
        content_type: Some(content_type),
        body,
    };
    deliver(ctx.app.clone(), ctx.route.clone(), generated, files).await
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

/// Sends the metadata and keeps or removes the files by its answer (docs/reference/metadata.md). Runs as its own
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
