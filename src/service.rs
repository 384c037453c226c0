//! One request, start to finish: strip what clients may not send, check its `Host`,
//! route, dispatch, pass the answer through the one response path, and log it.

use crate::app::App;
use crate::config::{Kind, Static, UploadRoute};
use crate::download::{self, Ask};
use crate::error::{Error, ErrorKind};
use crate::http::Body;
use crate::http::body::with_guard;
use crate::http::headers::{Peer, check_host, strip_accel, strip_client};
use crate::http::stats::{Counting, RequestStats};
use crate::ingest::Context;
use crate::listen::activity::InFlight;
use crate::metrics::{Metrics, Outcome};
use crate::proxy;
use crate::route::{NormalPath, Route, route};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(
    app: Arc<App>,
    peer: Peer,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> Response<Body> {
    let stats = Arc::new(RequestStats::default());
    let admitted = in_flight.admitted();
    let log = AccessLog {
        start: Instant::now(),
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        peer,
        h2: req.version() == http::Version::HTTP_2,
        status: 0,
        label: Label::default(),
        stats: stats.clone(),
        metrics: app.metrics.clone(),
        _in_flight: in_flight,
    };
    if !admitted {
        // Over `max_requests`: every request may hold a backend connection and files,
        // and the open-file budget counts them.
        let busy = Error::new(
            ErrorKind::Busy,
            "too many requests in progress; retry later",
        );
        return respond(busy.into_response(), log);
    }
    stats.scope(dispatch(app, peer, req, log)).await
}

async fn dispatch(
    app: Arc<App>,
    peer: Peer,
    mut req: Request<Incoming>,
    mut log: AccessLog,
) -> Response<Body> {
    strip_client(req.headers_mut());
    let ask = Ask::of(req.method(), req.headers());
    let resp = match check_host(req.version(), req.headers(), req.uri()) {
        Ok(()) => route_and_serve(&app, peer, req, &ask, &mut log.label).await,
        Err(e) => {
            log.label = Label::named("invalid");
            Error::bad_request(e).into_response()
        }
    };
    let resp = if download::requested(&resp) {
        log.label.download = true;
        Box::pin(download::from_backend(&app, &ask, resp)).await
    } else {
        resp
    };
    respond(resp, log)
}

/// Routes the request (docs/reference/routing.md) and serves it where it belongs.
async fn route_and_serve(
    app: &Arc<App>,
    peer: Peer,
    req: Request<Incoming>,
    ask: &Ask,
    label: &mut Label,
) -> Response<Body> {
    let path = match NormalPath::parse(req.uri().path()) {
        Ok(path) => path,
        // `OPTIONS *` names the server, not a path: the app answers it. The asterisk
        // form is for OPTIONS only (RFC 9112 §3.2.4); with any other method it is 400.
        Err(_) if req.uri().path() == "*" && req.method() == http::Method::OPTIONS => {
            *label = Label::named("passthrough");
            return proxy::forward(app.clone(), peer, req).await;
        }
        Err(e) => {
            *label = Label::named("invalid");
            return Error::bad_request(e.to_string()).into_response();
        }
    };
    let route = route(&app.config, req.method(), &path);
    *label = Label::of(&route);
    match route {
        // Every arm but passthrough is boxed: a future is as large as its largest
        // arm, and the upload protocols' are kilobytes that every passed-through
        // request would otherwise allocate and copy (docs/performance.md).
        Route::Progress => {
            Box::pin(app.progress.respond(req.method(), req.uri(), req.headers())).await
        }
        Route::Static(s) => Box::pin(serve_static(app, ask, s, &path)).await,
        Route::Internal => {
            tracing::info!(path = %path.display(), "refused a direct request for an internal location");
            Error::new(ErrorKind::NotFound, "not found").into_response()
        }
        Route::Complete(r) => {
            Box::pin(crate::dispatch::complete(upload(app, r, peer, &path), req)).await
        }
        Route::Upload(r) => {
            Box::pin(crate::dispatch::handle(upload(app, r, peer, &path), req)).await
        }
        Route::Passthrough => proxy::forward(app.clone(), peer, req).await,
    }
}

/// A `[[static]]` location: public files straight from disk, GET and HEAD only.
async fn serve_static(app: &App, ask: &Ask, s: &Static, path: &NormalPath) -> Response<Body> {
    // The path is decoded once, by routing; the rest below the prefix is used as is.
    let rest = &path.as_bytes()[s.prefix.len().min(path.as_bytes().len())..];
    let candidate = match download::resolve::join_segments(&s.root, rest) {
        Ok(c) => c,
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
    let body = Counting::wrap(body, log.stats.clone());
    let watcher = log.h2.then(|| log._in_flight.watcher());
    let body = with_guard(body, log);
    // An HTTP/2 stream can stall without the socket ever blocking: watched.
    let body = match watcher {
        Some(w) => w.watch(body),
        None => body,
    };
    Response::from_parts(parts, body)
}

/// How a request shows up in metrics: a name from the config, never the raw path.
#[derive(Default)]
struct Label {
    route: String,
    /// The upload kind, for an upload route.
    kind: Option<crate::config::Kind>,
    /// The answer was a file served by porter.
    download: bool,
}

impl Label {
    fn named(route: &str) -> Label {
        Label {
            route: route.to_string(),
            ..Label::default()
        }
    }

    fn of(route: &Route) -> Label {
        match route {
            Route::Internal => Label::named("internal"),
            Route::Progress => Label::named("progress"),
            Route::Static(s) => Label {
                route: s.prefix.clone(),
                kind: None,
                download: true,
            },
            Route::Upload(r) | Route::Complete(r) => Label {
                route: r.path.clone(),
                kind: Some(r.kind),
                download: false,
            },
            Route::Passthrough => Label::named("passthrough"),
        }
    }
}

/// Writes one access-log line, and counts the request, when dropped: that is, when
/// the response body is finished (or the client went away).
struct AccessLog {
    start: Instant,
    method: String,
    target: String,
    peer: Peer,
    /// The request came over HTTP/2 (its response goes under the stall check).
    h2: bool,
    status: u16,
    label: Label,
    stats: Arc<RequestStats>,
    metrics: Arc<Metrics>,
    /// Keeps the connection's in-flight count up until the response is done.
    _in_flight: InFlight,
}

impl AccessLog {
    fn count(&self) {
        let m = &self.metrics;
        m.request(&self.label.route, self.status);
        if self.label.download {
            m.download_bytes(self.stats.sent());
        }
        let Some(kind) = self.label.kind else { return };
        m.upload_bytes(kind.name(), self.stats.received());
        // Resumable kinds finish an upload over many requests: counted at completion.
        if matches!(kind, Kind::Multipart | Kind::Raw) && self.stats.received() > 0 {
            let outcome = if self.status < 400 {
                Outcome::ok
            } else if self.stats.delivered() {
                Outcome::backend_error
            } else {
                Outcome::refused
            };
            m.upload_finished(kind.name(), outcome, self.start.elapsed());
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.count();
        crate::access_log::write(&crate::access_log::Line {
            method: &self.method,
            target: &self.target,
            status: self.status,
            bytes_in: self.stats.received(),
            bytes_out: self.stats.sent(),
            ms: self.start.elapsed().as_millis() as u64,
            client: self.peer.addr,
            upload: self.stats.upload_id().unwrap_or("-"),
        });
    }
}

/// The context of a request on an upload route; `dispatch` adds its progress.
fn upload<'a>(
    app: &Arc<App>,
    route: &'a UploadRoute,
    peer: Peer,
    path: &'a NormalPath,
) -> Context<'a> {
    Context {
        app: app.clone(),
        route,
        peer,
        path,
        progress: None,
    }
}
