//! The one `match` on an upload route's kind: the request's progress tracking, the
//! protocol front-end, and a refusal raised before the front-end ran, in that protocol's
//! shape.

use crate::app::App;
use crate::config::Kind;
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::ingest::Context;
use crate::progress::{self, Tracker};
use http::{Request, Response};
use hyper::body::Incoming;

/// An upload request: `ctx` comes from the gateway without progress, which is
/// tracked here when the request asks for it.
pub async fn handle(mut ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    let route = ctx.route;
    let mut progress = ProgressGuard(None);
    let draft = crate::protocol::tus::draft::is_draft(req.headers());
    let result = async {
        progress.0 = track(&ctx.app, &req)?;
        ctx.progress = progress.0.clone();
        match route.kind {
            Kind::Multipart => crate::protocol::upload::multipart(ctx, req).await,
            Kind::Raw => crate::protocol::upload::raw(ctx, req).await,
            Kind::Tus if draft => Ok(crate::protocol::tus::draft::handle(ctx, req).await),
            Kind::Tus => Ok(crate::protocol::tus::v1::handle(ctx, req).await),
            Kind::Chunked => Ok(crate::protocol::chunked::chunk(ctx, req).await),
            Kind::NginxResumable => Ok(crate::protocol::nginx::handle(ctx, req).await),
        }
    }
    .await;
    let resp = result.unwrap_or_else(|e| {
        tracing::info!(route = %route.path, error = %e, "upload refused");
        refusal(route.kind, draft, e)
    });
    progress.finish(resp.status().as_u16());
    resp
}

/// A chunked upload's completion request (its route's `complete` path).
pub async fn complete(ctx: Context<'_>, req: Request<Incoming>) -> Response<Body> {
    crate::protocol::chunked::completion(ctx, req).await
}

/// An error raised before a protocol front-end ran, in that protocol's shape: each
/// protocol renders through its own one function.
fn refusal(kind: Kind, draft: bool, e: Error) -> Response<Body> {
    match kind {
        Kind::Chunked => crate::protocol::chunked::render_error(e),
        Kind::Tus if draft => crate::protocol::tus::draft::render_error(e),
        Kind::Tus => crate::protocol::tus::v1::render_error(e),
        Kind::Multipart | Kind::Raw | Kind::NginxResumable => e.into_response(),
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
    let size = crate::ingest::content_length(req.headers())?.unwrap_or(0);
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
