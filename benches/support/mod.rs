//! What the benchmarks share: a release `porter serve` child process, found by the
//! port it logs, and stopped on drop.

#![allow(dead_code)] // each bench uses its own subset

pub mod load;
pub mod servers;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A running `porter serve`, stopped on drop (SIGTERM; SIGKILL if still alive after 10 s).
pub struct Porter {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Porter {
    /// Starts porter with `RUST_LOG=rust_log` (it must keep the `listening` line).
    pub fn start(config: &Path, rust_log: &str) -> Porter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_porter"))
            .args(["serve", "-c"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn porter");
        let stderr = child.stderr.take().expect("porter stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining after `rx` is gone, so porter never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        let port = loop {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(line) => match listening_port(&line) {
                    Some(port) => break port,
                    None => log.push(line),
                },
                Err(e) => panic!("no `listening` line from porter ({e}):\n{}", log.join("\n")),
            }
        };
        Porter {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Peak resident set size (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<porter>/status");
        let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
        let kib = kib.and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        kib.expect("VmHWM in /proc/<porter>/status") / 1024.0
    }
}

impl Drop for Porter {
    fn drop(&mut self) {
        stop(&mut self.child, &[libc::SIGTERM]);
    }
}

/// Sends `signals` in turn to our own `child`, waiting up to 10 s after each, then
/// SIGKILL; reaps it.
pub fn stop(child: &mut Child, signals: &[libc::c_int]) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    for &signal in signals {
        // SAFETY: kill(2) with our own child's pid; it only sends a signal.
        unsafe { libc::kill(pid, signal) };
        for _ in 0..500 {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The port in porter's `listening local=127.0.0.1:PORT` log line (ANSI colours or not).
pub fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split_once("listening")?.1.split_once("127.0.0.1:")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).expect("list a storage directory");
    let mut out = Vec::new();
    for path in entries.map(|e| e.expect("directory entry").path()) {
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A repeating, non-constant byte pattern: `period` odd so consecutive chunks differ.
pub fn pattern(period: usize, extra: usize) -> Vec<u8> {
    (0..period + extra)
        .map(|i| {
            let x = (i % period) as u32;
            (x.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (x >> 8) as u8
        })
        .collect()
}

/// What the fake backend has seen.
#[derive(Default)]
pub struct Recorder {
    pub requests: AtomicU64,
    pub body_bytes: AtomicU64,
}

/// The app: `GET /f/<name>` answers 200 with `X-Accel-Redirect: /protected/<name>` and an
/// empty body; `GET /p/<n>` answers `n` bytes (up to 1 MiB: passthrough); anything else
/// gets 200 `{"ok":true}` after its body is read and discarded.
pub async fn fake_backend() -> (SocketAddr, &'static Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    let rec: &'static Recorder = Box::leak(Box::default());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                if let Some(res) = accel_redirect(&req).or_else(|| passthrough(&req)) {
                    return Ok(res);
                }
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        rec.body_bytes
                            .fetch_add(data.len() as u64, Ordering::SeqCst);
                    }
                }
                rec.requests.fetch_add(1, Ordering::SeqCst);
                let mut res = Response::new(Full::new(Bytes::from_static(br#"{"ok":true}"#)));
                let json = hyper::header::HeaderValue::from_static("application/json");
                res.headers_mut().insert(hyper::header::CONTENT_TYPE, json);
                Ok::<_, hyper::Error>(res)
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, rec)
}

/// The answer to `GET /p/<n>`: `n` bytes, for passthrough.
fn passthrough(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let n: usize = req.uri().path().strip_prefix("/p/")?.parse().ok()?;
    let body = BODY.get_or_init(|| Bytes::from(vec![b'x'; 1 << 20]));
    (req.method() == hyper::Method::GET && n <= body.len())
        .then(|| Response::new(Full::new(body.slice(..n))))
}

/// The answer to `GET /f/<name>`: an empty 200 sending the client to `/protected/<name>`.
fn accel_redirect(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let name = req.uri().path().strip_prefix("/f/")?;
    if req.method() != hyper::Method::GET || name.is_empty() || name.contains('/') {
        return None;
    }
    let target = hyper::header::HeaderValue::from_str(&format!("/protected/{name}")).ok()?;
    let mut res = Response::new(Full::new(Bytes::new()));
    res.headers_mut().insert("x-accel-redirect", target);
    Some(res)
}
