//! Test harness: a recording fake backend, a porter server on an ephemeral port, and a
//! real HTTP client. Every test gets its own ports and directories.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

type Answer = Arc<dyn Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync>;

/// A fake app on 127.0.0.1:0 that records every request (linkerd's test server idea).
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// Connections that have ended (closed by porter or failed).
    pub closed: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn answer(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("ct"));
    r
}

impl Backend {
    pub async fn ok() -> Backend {
        Backend::start(|_| answer(200, r#"{"ok":true}"#)).await
    }

    pub async fn start(
        f: impl Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let f: Answer = Arc::new(f);
        let rec = seen.clone();
        let ended = closed.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, f, ended) = (rec.clone(), f.clone(), ended.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (rec, f) = (rec.clone(), f.clone());
                        async move {
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
                            let resp = f(&r);
                            rec.lock().expect("lock").push(r);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Backend { addr, seen, closed }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// A porter server on 127.0.0.1:0, with its own storage directories.
pub struct Porter {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Porter {
    /// Starts porter in front of `backend` with `extra` TOML appended to a base config.
    pub async fn start(backend: SocketAddr, extra: &str) -> Porter {
        Porter::start_with(&format!("[backend]\nurl = \"http://{backend}\"\n"), extra).await
    }

    pub async fn start_with(backend_table: &str, extra: &str) -> Porter {
        // PORTER_TEST_LOG=1: in-process servers log to stderr (run with --nocapture).
        if std::env::var_os("PORTER_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .try_init();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let head = if backend_table.contains("[storage]\n") {
            backend_table.replace(
                "[storage]\n",
                "[storage]\nroot = \"root\"\ntemp = \"tmp\"\n",
            )
        } else {
            format!("{backend_table}\n[storage]\nroot = \"root\"\ntemp = \"tmp\"\nmin_free = 0\n")
        };
        let text = format!(
            "{head}\n{}\n{extra}",
            if extra.contains("[server]") {
                ""
            } else {
                "[server]\nidle_timeout = \"5s\"\n"
            }
        );
        let path = dir.path().join("porter.toml");
        std::fs::write(&path, &text).expect("write config");
        let cfg = porter::config::parse(&text, &path).unwrap_or_else(|p| panic!("config: {p:?}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            porter::run(vec![listener], cfg, async {
                let _ = rx.await;
            })
            .await
            .expect("porter run");
        });
        Porter {
            addr,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn temp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    pub fn secret(&self) -> porter::backend::sign::Secret {
        let bytes = std::fs::read(self.dir.path().join("secret")).expect("secret file");
        porter::backend::sign::Secret::from_bytes(bytes).expect("secret")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every regular file under the storage directories.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = files_under(&self.root());
        out.extend(files_under(&self.temp()));
        out
    }

    /// Waits (bounded) until no file is left in storage.
    pub async fn wait_empty(&self) -> Vec<PathBuf> {
        for _ in 0..100 {
            if self.stored_files().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stored_files()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A finished response, body collected.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request over a fresh HTTP/1.1 connection with hyper's client.
pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    try_send(req).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `send`, with a failed connection or response as an error rather than a panic.
pub async fn try_send(req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no response in time".to_string())?
        .map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body: body.to_bytes(),
    })
}

/// A request body the test feeds chunk by chunk; dropping the sender ends it.
pub struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A body fed through the returned sender.
pub fn fed() -> (tokio::sync::mpsc::Sender<Bytes>, Fed) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (tx, Fed(rx))
}

/// Sends a request whose body the test feeds; returns the status (0: no answer).
pub async fn send_fed(req: http::request::Builder, body: Fed) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let Ok(req) = req.body(body) else { return 0 };
    match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
        Ok(Ok(resp)) => resp.status().as_u16(),
        _ => 0,
    }
}

pub fn request(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// A multipart body under construction.
pub struct Form {
    pub boundary: String,
    body: Vec<u8>,
}

impl Form {
    pub fn new() -> Form {
        Form {
            boundary: "----testBoundary7MA4YWxkTrZu0gW".into(),
            body: Vec::new(),
        }
    }

    pub fn field(mut self, name: &str, value: &str) -> Form {
        self.body.extend(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .bytes(),
        );
        self
    }

    pub fn file(mut self, name: &str, filename: &str, ct: &str, data: &[u8]) -> Form {
        self.body.extend(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n",
                self.boundary
            )
            .bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend(b"\r\n");
        self
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend(format!("--{}--\r\n", self.boundary).bytes());
        (self.content_type(), self.body)
    }
}

/// Parses a multipart body the backend received into `(name, value)` pairs.
pub fn parse_form(r: &Recorded) -> Vec<(String, String)> {
    let ct = r.header("content-type").expect("content-type");
    let boundary = ct.split("boundary=").nth(1).expect("boundary");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let mut out = Vec::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("name");
        out.push((
            name.to_string(),
            value.strip_suffix("\r\n").unwrap_or(value).to_string(),
        ));
    }
    out
}

pub fn get<'a>(form: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

pub fn one<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    let v = get(form, name);
    assert_eq!(v.len(), 1, "expected one {name:?} in {form:?}");
    v[0]
}

/// Deterministic test data that is not all one byte.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u32)
                .to_le_bytes()[1]
        })
        .collect()
}

pub fn md5_hex(d: &[u8]) -> String {
    use md5::Digest;
    porter::sink::hashes::hex(&md5::Md5::digest(d))
}

pub fn sha256_hex(d: &[u8]) -> String {
    use sha2::Digest;
    porter::sink::hashes::hex(&sha2::Sha256::digest(d))
}

/// Runs curl (a real peer) and returns (status, body).
pub async fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let stdout = out.stdout;
    let cut = stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&stdout[cut..])
        .trim()
        .parse()
        .unwrap_or(0);
    (code, stdout[..cut].to_vec())
}

/// Runs one `porter gc -c config` pass, which must succeed; returns what it printed.
pub fn porter_gc(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
        .args(["gc", "-c"])
        .arg(config)
        .output()
        .expect("porter gc runs");
    assert!(
        out.status.success(),
        "porter gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most 10 s) until something accepts on `port`: listeners porter binds
/// itself after it starts (the metrics listener) are not there at once.
pub async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// A port that was free a moment ago (for configs that must name their port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The real `porter` binary, with its stderr lines collected.
pub struct Proc {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn command() -> std::process::Command {
        std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
    }

    /// Starts `porter serve -c config`.
    pub fn serve(config: &Path) -> Proc {
        let mut cmd = Proc::command();
        cmd.args(["serve", "-c"]).arg(config);
        Proc::spawn(cmd)
    }

    /// Starts `cmd` with stderr captured.
    pub fn spawn(mut cmd: std::process::Command) -> Proc {
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("porter starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        // PORTER_TEST_LOG_DIR: each child's stderr is kept there too, as porter-<pid>.log.
        let mut keep = std::env::var_os("PORTER_TEST_LOG_DIR").and_then(|d| {
            std::fs::File::create(Path::new(&d).join(format!("porter-{}.log", child.id()))).ok()
        });
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(f) = keep.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `secs`) for a stderr line containing `needle`, and returns it.
    pub fn wait_for(&mut self, needle: &str, secs: u64) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
        }
        None
    }

    /// The port of the first `listening` line.
    pub fn port(&mut self) -> u16 {
        let line = self.wait_for("listening", 20).unwrap_or_else(|| {
            panic!("porter did not start listening: {:?}", self.seen);
        });
        line.split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which is still ours until waited for.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        for _ in 0..secs * 10 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Proc {
    /// Kills the child if the test fails first, so it cannot hold cargo's output pipe.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test certificate authority and the certificates it signs (rcgen).
pub struct Pki {
    pub dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    /// A new CA; its certificate is written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("porter test CA {name}"));
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA cert");
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).expect("write CA");
        Pki {
            dir: dir.to_path_buf(),
            issuer,
        }
    }

    pub fn ca_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A leaf certificate for `names`, written as `<file>.crt` and `<file>.key`
    /// (PKCS#8); returns both paths.
    pub fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (crt, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (crt, k)
    }
}

/// Runs futures concurrently on this task (no extra crate).
pub async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}
