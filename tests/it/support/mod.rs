//! Test harness: porter in-process on an ephemeral port (or as its own process), the
//! fake app behind it, clients for each protocol, and small helpers. Every test gets
//! its own ports and directories.

pub mod backend;
pub mod chunked;
pub mod client;
pub mod config;
pub mod draft;
pub mod multipart;
pub mod nginx;
pub mod peers;
pub mod process;
pub mod tus;
pub mod wire;

pub use backend::{Backend, accel, answer, answer_with, backend, dead_addr};
pub use client::{Call, Fed, Reply, curl, fed, request};
pub use config::{Config, Upload};
pub use multipart::{Form, assert_file, assert_signed, get, one, parse_form};
pub use process::{Proc, Served, porter_check, porter_gc};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A porter server on 127.0.0.1:0, with its own storage directories.
pub struct Porter {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Porter {
    /// Starts porter in front of `backend` with `config`, on storage of its own (and,
    /// unless the config has a `[server]` table, `server.idle_timeout = "5s"`).
    pub async fn start(backend: SocketAddr, config: impl Into<Config>) -> Porter {
        // PORTER_TEST_LOG=1: in-process servers log to stderr (run with --nocapture).
        if std::env::var_os("PORTER_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .try_init();
        }
        let mut config = config.into();
        if !config.has("backend.url") {
            config = config.backend(backend);
        }
        if !config.has("server") {
            config = config.set("server.idle_timeout", "5s");
        }
        let text = config.with_storage_defaults().text();
        let dir = tempfile::tempdir().expect("tempdir");
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

    /// The config file porter runs on (for `porter gc -c`).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("porter.toml")
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
        eventually(5, || self.stored_files().is_empty()).await;
        self.stored_files()
    }

    /// Waits (bounded) until something is in storage; whether it is.
    pub async fn wait_stored(&self) -> bool {
        eventually(2, || !self.stored_files().is_empty()).await
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

/// Waits (at most `secs`) until `f` holds; whether it did.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The upload progress porter reports for `id` (docs/guides/authorize-and-progress.md), which must be served.
pub async fn progress(porter: &Porter, id: &str) -> serde_json::Value {
    let r = request("GET", &porter.url(&format!("/progress?X-Progress-ID={id}")))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-cache");
    r.json()
}

/// Waits (at most 10 s, by its progress) until porter has received `n` bytes of upload
/// `id`, which it must; that progress.
pub async fn wait_received(porter: &Porter, id: &str, n: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = progress(porter, id).await;
        if p["received"] == n {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}: never received {n}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// A temporary file holding `content` (for curl's `@file`), removed when dropped.
pub fn temp_file(content: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), content).expect("write the temporary file");
    file
}

pub fn md5_hex(d: &[u8]) -> String {
    use md5::Digest;
    porter::sink::hashes::hex(&md5::Md5::digest(d))
}

pub fn sha256_hex(d: &[u8]) -> String {
    use sha2::Digest;
    porter::sink::hashes::hex(&sha2::Sha256::digest(d))
}

/// Waits (at most 10 s) until something accepts on `port`: listeners porter binds
/// itself after it starts (the metrics listener) are not there at once.
pub async fn wait_listening(port: u16) {
    let up = eventually(10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up.await, "nothing listens on {port}");
}

/// A port that was free a moment ago (for configs that must name their port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Base64 (standard alphabet, padded), as tus metadata wants it.
pub fn b64(s: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
