//! `cargo bench --bench h2 [-- --quick]`: one raw upload of 1 GiB (64 MiB with `--quick`)
//! through a release `porter serve` over HTTP/1.1 and HTTP/2, in plaintext (h2c, prior
//! knowledge) and over TLS (ALPN), storage on tmpfs, no hashes. Prints a Markdown table
//! with the h2 / HTTP/1.1 ratio per transport, plus one h2 run with the protocol's default
//! 64 KiB flow-control windows to show what porter's window settings buy.

mod support;

use bytes::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::load::PatternBody;
use support::{Porter, fake_backend, files_under};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq)]
enum Version {
    H1,
    H2,
}

/// Sends one `PUT /upload` of `size` bytes on `io`; the time to a 200 response.
async fn put<I>(io: I, version: Version, size: u64, pattern: &Bytes) -> Result<Duration, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let body = PatternBody::new(pattern, Bytes::new(), size, Bytes::new());
    let req = Request::put("http://localhost/upload")
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(body)
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(io);
    let status = match version {
        Version::H1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
        Version::H2 => {
            let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_frame_size(1 << 20)
                .handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
    };
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(start.elapsed())
}

/// A CA and a certificate for `localhost`, written to `dir`; the client's settings.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, rustls::RootCertStore) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let issuer = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, leaf.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issuer.der().clone()).expect("trust the CA");
    (cert_path, key_path, roots)
}

fn write_config(dir: &Path, backend: SocketAddr, server: &str) -> PathBuf {
    let quoted = |p: PathBuf| format!("{:?}", p.display().to_string());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_grace = \"2s\"\n{server}\n\
         [backend]\nurl = \"http://{backend}\"\n\
         [storage]\nroot = {}\ntemp = {}\nfsync = true\nmin_free = \"0\"\n\
         [[upload]]\npath = \"/upload\"\nkind = \"raw\"\nmethods = [\"PUT\"]\n\
         max_file_size = \"8GiB\"\nhashes = []\n",
        quoted(dir.join("root")),
        quoted(dir.join("tmp")),
    );
    let path = dir.join("porter.toml");
    std::fs::write(&path, text).expect("write porter.toml");
    path
}

struct Run {
    porter: Porter,
    dir: tempfile::TempDir,
    tls: bool,
    roots: Arc<rustls::RootCertStore>,
}

impl Run {
    /// Best of `tries` uploads; each must store exactly one file of `size` bytes.
    async fn best(&self, version: Version, size: u64, tries: usize, pattern: &Bytes) -> f64 {
        let mut best = Duration::MAX;
        for _ in 0..tries {
            let tcp = TcpStream::connect(self.porter.addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let took = match self.tls {
                false => put(tcp, version, size, pattern).await,
                true => {
                    let connector = self.connector(version);
                    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
                    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
                    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    let want: &[u8] = if version == Version::H2 {
                        b"h2"
                    } else {
                        b"http/1.1"
                    };
                    assert_eq!(alpn.as_deref(), Some(want), "ALPN");
                    put(tls, version, size, pattern).await
                }
            }
            .expect("upload through porter");
            best = best.min(took);
            let stored = files_under(&self.dir.path().join("root"));
            assert_eq!(stored.len(), 1, "stored files: {stored:?}");
            assert_eq!(stored[0].metadata().expect("stat").len(), size);
            std::fs::remove_file(&stored[0]).expect("delete stored file");
        }
        size as f64 / best.as_secs_f64() / f64::from(1 << 20)
    }

    fn connector(&self, version: Version) -> tokio_rustls::TlsConnector {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = vec![match version {
            Version::H1 => b"http/1.1".to_vec(),
            Version::H2 => b"h2".to_vec(),
        }];
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let tries = if quick { 1 } else { 3 };
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        env!("CARGO_TARGET_TMPDIR")
    };
    let pattern = support::load::shared_pattern();
    let (backend, rec) = fake_backend().await;
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key, roots) = tls_files(certs.path());
    let roots = Arc::new(roots);
    let tls_table = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let small_windows = "h2_stream_window = 65535\nh2_connection_window = 65535";
    let rows: [(&str, String, bool); 3] = [
        ("plaintext (h2c)", String::new(), false),
        ("TLS (ALPN)", tls_table.clone(), true),
        (
            "TLS, h2 windows 64 KiB",
            format!("{tls_table}\n{small_windows}"),
            true,
        ),
    ];
    println!(
        "\nporter over HTTP/2 vs HTTP/1.1: one raw upload of {} MiB to {base}, no hashes, best of {tries}\n",
        size >> 20
    );
    println!("| transport | HTTP/1.1 MiB/s | HTTP/2 MiB/s | h2 / HTTP/1.1 |");
    println!("|---|---:|---:|---:|");
    for (label, server, tls) in rows {
        let dir = tempfile::tempdir_in(base).expect("storage dir");
        let porter = Porter::start(
            &write_config(dir.path(), backend, &server),
            "info,porter::access=off",
        );
        let run = Run {
            porter,
            dir,
            tls,
            roots: roots.clone(),
        };
        let h1 = run.best(Version::H1, size, tries, &pattern).await;
        let h2 = run.best(Version::H2, size, tries, &pattern).await;
        println!("| {label} | {h1:.0} | {h2:.0} | {:.2} |", h2 / h1);
    }
    let got = rec.body_bytes.load(Ordering::SeqCst);
    assert!(got < 1 << 20, "the backend got {got} bytes: not offloaded");
}
