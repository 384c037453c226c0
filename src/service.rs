//! One request, start to finish: strip what clients may not send, route, dispatch,
//! pass the answer through the one response path, and log it.

use crate::app::App;
use crate::config::Static;
use crate::download::{self, Ask};
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::body::with_guard;
use crate::http::headers::{Peer, strip_accel, strip_porter};
use crate::listen::conn::InFlight;
use crate::route::{NormalPath, Route, route};
use crate::{proxy, upload};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(
    app: Arc<App>,
    peer: Peer,
    mut req: Request<Incoming>,
    in_flight: InFlight,
) -> Response<Body> {
    let log = AccessLog {
        start: Instant::now(),
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        peer,
        status: 0,
        _in_flight: in_flight,
    };
    strip_porter(req.headers_mut());
    let ask = Ask::of(req.method(), req.headers());
    let resp = match NormalPath::parse(req.uri().path()) {
        // `OPTIONS *` names the server, not a path: the app answers it.
        Err(_) if req.uri().path() == "*" => proxy::forward(app.clone(), peer, req).await,
        Err(e) => Error::bad_request(e.to_string()).into_response(),
        Ok(path) => match route(&app.config, req.method(), &path) {
            Route::Progress => app.progress.respond(req.method(), req.uri(), req.headers()),
            Route::Static(s) => serve_static(&app, &ask, s, &path).await,
            Route::Internal => {
                tracing::info!(path = %path.display(), "refused a direct request for an internal location");
                Error::new(ErrorKind::NotFound, "not found").into_response()
            }
            Route::Complete(r) => {
                crate::resumable::chunked::finish(app.clone(), r, peer, &path, req).await
            }
            Route::Upload(r) => upload::handle(app.clone(), r, peer, &path, req).await,
            Route::Passthrough => proxy::forward(app.clone(), peer, req).await,
        },
    };
    let resp = if download::requested(&resp) {
        download::from_backend(&app, &ask, resp).await
    } else {
        resp
    };
    respond(resp, log)
}

/// A `[[static]]` location: public files straight from disk, GET and HEAD only.
async fn serve_static(app: &App, ask: &Ask, s: &Static, path: &NormalPath) -> Response<Body> {
    let rest = &path.as_bytes()[s.prefix.len().min(path.as_bytes().len())..];
    let rel = String::from_utf8_lossy(rest).into_owned();
    let candidate =
        match download::resolve::by_prefix(&[("".into(), s.root.clone())], &format!("/{rel}")) {
            Ok(c) => c.path,
            Err(reason) => {
                tracing::debug!(reason, "static target refused");
                return Error::new(ErrorKind::NotFound, "not found").into_response();
            }
        };
    let mut headers = http::HeaderMap::new();
    if let Some(age) = s.max_age
        && let Ok(v) = http::HeaderValue::from_str(&format!("max-age={}", age.as_secs()))
    {
        headers.insert(http::header::CACHE_CONTROL, v);
    }
    download::add_headers(&mut headers, &s.headers);
    let opts = download::Options {
        headers,
        rate: None,
        charset: None,
    };
    download::serve(app, ask, &s.root, &candidate, opts).await
}

/// The one response path every route's answer takes: `X-Accel-*` and `X-Sendfile`
/// never reach a client, and the access-log line is written when the body is done.
fn respond(resp: Response<Body>, mut log: AccessLog) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_accel(&mut parts.headers);
    log.status = parts.status.as_u16();
    Response::from_parts(parts, with_guard(body, log))
}

/// Writes one access-log line when dropped, i.e. when the response body is finished.
struct AccessLog {
    start: Instant,
    method: String,
    target: String,
    peer: Peer,
    status: u16,
    /// Keeps the connection's in-flight count up until the response is done.
    _in_flight: InFlight,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "porter::access",
            method = %self.method,
            target = %self.target,
            status = self.status,
            ms = self.start.elapsed().as_millis() as u64,
            client = %self.peer.addr,
            "request"
        );
    }
}
