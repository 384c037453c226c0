//! A porter over a memory store, a fake app that records what porter tells it, and a
//! small client.

use crate::app::{App, Storage};
use crate::config::Listen;
use crate::resumable::Spools;
use crate::server::{Bound, Control};
use crate::store::memory::MemoryStore;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the fake app was sent: method, target, and the metadata fields.
#[derive(Debug, Clone)]
pub struct Told {
    pub target: String,
    pub fields: Vec<(String, String)>,
}

impl Told {
    /// The one value of field `name`.
    pub fn field(&self, name: &str) -> &str {
        let mut it = self.fields.iter().filter(|(n, _)| n == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => v,
            _ => panic!("expected one {name:?} in {:?}", self.fields),
        }
    }
}

/// The app behind porter: answers every request 200 and records the POSTs.
pub struct FakeApp {
    pub addr: SocketAddr,
    told: Arc<Mutex<Vec<Told>>>,
}

impl FakeApp {
    pub async fn start() -> FakeApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let told: Arc<Mutex<Vec<Told>>> = Arc::default();
        let seen = told.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        record(&seen, req).await;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("{}"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        FakeApp { addr, told }
    }

    /// The metadata requests so far.
    pub fn told(&self) -> Vec<Told> {
        self.told.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

async fn record(seen: &Mutex<Vec<Told>>, req: Request<Incoming>) {
    if req.method() != http::Method::POST {
        return;
    }
    let target = req.uri().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return,
    };
    let fields = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Ok(mut s) = seen.lock() {
        s.push(Told { target, fields });
    }
}

/// porter over a memory store, in this process.
pub struct Porter {
    pub addr: SocketAddr,
    pub store: MemoryStore,
    pub app: FakeApp,
    /// The secret file and the spools; no upload's bytes.
    _dir: tempfile::TempDir,
    control: tokio::sync::mpsc::Sender<Control>,
}

impl Porter {
    /// Starts porter with `routes` (TOML `[[upload]]` tables) before a fake app.
    pub async fn start(routes: &str) -> Porter {
        let app = FakeApp::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let text = format!(
            "[backend]\nurl = \"http://{}\"\nsecret_file = \"{d}/secret\"\n\
             [storage]\nroot = \"{d}/root\"\ntemp = \"{d}/tmp\"\nmin_free = 0\n{routes}",
            app.addr
        );
        let config = crate::config::parse(&text, &dir.path().join("porter.toml"))
            .unwrap_or_else(|p| panic!("config: {p:?}"));
        let spools = dir.path().join("spools");
        std::fs::create_dir(&spools).expect("spools");
        let store = MemoryStore::default();
        let storage = Storage::in_memory(&store, Spools::new(spools, 0o600));
        let porter = App::with_storage(Arc::new(config), storage).expect("app");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bound = vec![Bound {
            entry: Listen::Addr(addr),
            listener,
        }];
        let (control, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(crate::server::serve(bound, porter, rx));
        Porter {
            addr,
            store,
            app,
            _dir: dir,
            control,
        }
    }

    /// Sends one request to porter; returns the status, headers and body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .expect("porter answers within 10 s")
            .expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }

    /// The finished file the app was told of in `told`, from the memory store.
    pub fn file_of(&self, told: &Told) -> Vec<u8> {
        let key = told.field("file.key");
        self.store
            .file(key)
            .map(|f| f.as_ref().clone())
            .unwrap_or_else(|| panic!("no file {key} in the memory store"))
    }

    /// The one request the app was told, checking that the file it names holds
    /// `content`.
    pub fn told_the_file(&self, content: &[u8]) -> Told {
        let told = self.app.told();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(self.file_of(&told[0]) == content, "the stored bytes");
        told[0].clone()
    }
}

/// An `[[upload]]` route forwarding its metadata as a form (what `Told` reads).
pub fn route(path: &str, kind: &str, extra: &str) -> String {
    format!("[[upload]]\npath = \"{path}\"\nkind = \"{kind}\"\nforward = \"urlencoded\"\n{extra}\n")
}

impl Drop for Porter {
    fn drop(&mut self) {
        let _ = self.control.try_send(Control::Shutdown);
    }
}

/// Deterministic test data that is not all one byte.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    crate::sink::hashes::hex(&sha2::Sha256::digest(bytes))
}

pub fn md5(bytes: &[u8]) -> String {
    use md5::Digest;
    crate::sink::hashes::hex(&md5::Md5::digest(bytes))
}
