//! The fake app behind porter: it records every request and answers as the test's
//! builder says (after linkerd2-proxy's test server), e.g.
//! `backend().route("/auth", 204, "").once(503, "{}").run().await`.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A JSON answer of `status` with `body`.
pub fn answer(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("ct"));
    r
}

/// `answer`, with `name: value` added.
pub fn answer_with(
    status: u16,
    body: &str,
    name: &'static str,
    value: &str,
) -> Response<Full<Bytes>> {
    let mut r = answer(status, body.to_string());
    r.headers_mut()
        .insert(name, value.parse().expect("header value"));
    r
}

type Respond = Arc<dyn Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync>;

/// What the fake app will do; `run` starts it.
pub struct BackendBuilder {
    routes: Vec<(String, Respond)>,
    turns: Vec<(u16, Bytes)>,
    otherwise: Respond,
    hang: bool,
}

/// A fake app that answers 200 `{"ok":true}` until told otherwise.
pub fn backend() -> BackendBuilder {
    BackendBuilder {
        routes: Vec::new(),
        turns: Vec::new(),
        otherwise: Arc::new(|_| answer(200, r#"{"ok":true}"#)),
        hang: false,
    }
}

impl BackendBuilder {
    /// Answers every request no route takes with `status` and `body`.
    pub fn reply(mut self, status: u16, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.otherwise = Arc::new(move |_| answer(status, body.clone()));
        self
    }

    /// Answers every request no route takes with `f`'s response.
    pub fn respond(
        mut self,
        f: impl Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        self.otherwise = Arc::new(f);
        self
    }

    /// Sends the request body back as the answer.
    pub fn echo(self) -> Self {
        self.respond(|r| answer(200, r.body.clone()))
    }

    /// Answers the next request no route takes with `status` and `body`, once; several
    /// `once` answer in turn, before `reply`.
    pub fn once(mut self, status: u16, body: impl Into<Bytes>) -> Self {
        self.turns.push((status, body.into()));
        self
    }

    /// Answers requests whose target starts with `prefix` with `status` and `body`.
    pub fn route(self, prefix: &str, status: u16, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.route_fn(prefix, move |_| answer(status, body.clone()))
    }

    /// Answers requests whose target starts with `prefix` with `f`'s response; the
    /// first route that matches answers.
    pub fn route_fn(
        mut self,
        prefix: &str,
        f: impl Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        self.routes.push((prefix.to_string(), Arc::new(f)));
        self
    }

    /// Answers `<from><rest>` with `X-Accel-Redirect: <to><rest>` (see [`accel`]).
    pub fn x_accel(self, from: &str, to: &str) -> Self {
        let (from, to) = (from.to_string(), to.to_string());
        let prefix = from.clone();
        self.route_fn(&prefix, move |r| {
            let rest = r.target.strip_prefix(from.as_str()).unwrap_or_default();
            accel(&format!("{to}{rest}"))
        })
    }

    /// Records each request and never answers it.
    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Starts the app on 127.0.0.1:0.
    pub async fn run(self) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let app = Arc::new(App {
            routes: self.routes,
            turns: Mutex::new(self.turns.into()),
            otherwise: self.otherwise,
            hang: self.hang,
            seen: seen.clone(),
        });
        let ended = closed.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (app, ended) = (app.clone(), ended.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Backend { addr, seen, closed }
    }
}

/// A 200 with `X-Accel-Redirect: target`, no Content-Type (porter takes the file's),
/// and a body porter must never send.
pub fn accel(target: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"the app's body, never sent")));
    r.headers_mut().insert(
        "x-accel-redirect",
        target.parse().expect("X-Accel-Redirect value"),
    );
    r
}

struct App {
    routes: Vec<(String, Respond)>,
    turns: Mutex<VecDeque<(u16, Bytes)>>,
    otherwise: Respond,
    hang: bool,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl App {
    async fn serve(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let r = Recorded {
            method: parts.method,
            target: parts.uri.to_string(),
            headers: parts.headers,
            body,
        };
        let resp = self.answer(&r);
        self.seen.lock().expect("lock").push(r);
        if self.hang {
            std::future::pending::<()>().await;
        }
        resp
    }

    fn answer(&self, r: &Recorded) -> Response<Full<Bytes>> {
        if let Some((_, f)) = self.routes.iter().find(|(p, _)| r.target.starts_with(p)) {
            return f(r);
        }
        if let Some((status, body)) = self.turns.lock().expect("lock").pop_front() {
            return answer(status, body);
        }
        (self.otherwise)(r)
    }
}

/// A running fake app.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// Connections that have ended (closed by porter or failed).
    pub closed: Arc<AtomicUsize>,
}

impl Backend {
    /// The app that accepts everything: 200 `{"ok":true}`.
    pub async fn ok() -> Backend {
        backend().run().await
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// The requests whose target is `target`.
    pub fn at(&self, target: &str) -> Vec<Recorded> {
        let seen = self.requests();
        seen.into_iter().filter(|r| r.target == target).collect()
    }

    /// The parsed form of the only request so far.
    pub fn only_form(&self) -> Vec<(String, String)> {
        let seen = self.requests();
        assert_eq!(seen.len(), 1, "one metadata request");
        super::parse_form(&seen[0])
    }

    /// The parsed form of the first request.
    pub fn first_form(&self) -> Vec<(String, String)> {
        super::parse_form(&self.requests()[0])
    }

    /// Connections porter has closed so far.
    pub fn connections_closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// An address where nothing listens (bound a moment ago, then released).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::free_port()))
}
