//! `cargo bench --bench download [-- --quick]`: `X-Accel-Redirect` downloads through a
//! release `porter serve` against stock nginx doing the same job, from the same in-process
//! fake backend and the same files, in one run; prints a Markdown table of ratios.
//!
//! The backend answers `GET /f/<name>` with `200` + `X-Accel-Redirect: /protected/<name>`
//! and an empty body; both servers map `/protected/` onto one directory (on disk under
//! `target/tmp`, so the files are read from the page cache after they are written).
//! Scenarios: one large file (1 GiB, 64 MiB with `--quick`) fetched by a streaming hyper
//! client, best of 3 (1 with `--quick`), in MiB/s; and a 10 KiB file hammered by
//! `wrk -t2 -c64 -d10s` (`-d3s` with `--quick`), in requests/s. Needs `/usr/sbin/nginx`
//! and `wrk` (Debian: `apt-get install nginx wrk`); without them it prints a "skipped"
//! line and exits 0. Both servers log no access lines (porter: `porter::access=off`).

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Porter, stop};
use tokio::net::{TcpListener, TcpStream};

const NGINX: &str = "/usr/sbin/nginx";
const SMALL: u64 = 10 * 1024;
/// Longest one large download may take before the run fails.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(300);

/// The app: `GET /f/<name>` answers 200 with `X-Accel-Redirect: /protected/<name>` and an
/// empty body; anything else gets 404.
async fn fake_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let name = req.uri().path().strip_prefix("/f/").unwrap_or_default();
                let found = req.method() == Method::GET && !name.is_empty() && !name.contains('/');
                let mut res = Response::new(Empty::<Bytes>::new());
                if found {
                    let target = format!("/protected/{name}");
                    match hyper::header::HeaderValue::from_str(&target) {
                        Ok(v) => {
                            res.headers_mut().insert("x-accel-redirect", v);
                        }
                        Err(_) => *res.status_mut() = StatusCode::BAD_REQUEST,
                    }
                } else {
                    *res.status_mut() = StatusCode::NOT_FOUND;
                }
                Ok::<_, hyper::Error>(res)
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Writes `size` pseudo-random bytes (xorshift64*, seeded) to `path`.
fn write_file(path: &Path, size: u64, seed: u64) {
    let file = std::fs::File::create(path).expect("create a test file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for word in buf[..n].chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        out.write_all(&buf[..n]).expect("write a test file");
        left -= n as u64;
    }
    out.flush().expect("flush a test file");
}

fn write_porter_config(dir: &Path, backend: SocketAddr, files: &Path) -> PathBuf {
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_grace = \"2s\"\n\n\
         [backend]\nurl = \"http://{backend}\"\n\n\
         [storage]\nroot = {}\ntemp = {}\nmin_free = \"0\"\n\n\
         [[internal]]\nprefix = \"/protected/\"\nroot = {}\n\n\
         [log]\nlevel = \"info\"\n",
        quoted(&dir.join("porter-root")),
        quoted(&dir.join("porter-tmp")),
        quoted(files),
    );
    let path = dir.join("porter.toml");
    std::fs::write(&path, text).expect("write porter.toml");
    path
}

/// A running nginx (master + 2 workers, not daemonised), stopped on drop (SIGQUIT, then
/// SIGTERM, then SIGKILL).
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(dir: &Path, backend: SocketAddr, files: &Path) -> Nginx {
        // A free port: bind, read it, release it (nginx binds it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a free port for nginx")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        // SAFETY: geteuid(2) has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;\nmaster_process on;\nworker_processes 2;\n\
             pid \"{d}/nginx.pid\";\nerror_log \"{d}/error.log\" warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
             keepalive_requests 100000;\n\
             client_body_temp_path \"{d}/client_body\";\n  proxy_temp_path \"{d}/proxy\";\n\
             fastcgi_temp_path \"{d}/fastcgi\";\n  uwsgi_temp_path \"{d}/uwsgi\";\n\
             scgi_temp_path \"{d}/scgi\";\n\
             upstream app {{ server {backend}; keepalive 32; }}\n\
             server {{\n    listen {addr};\n\
             location /protected/ {{ internal; alias \"{}/\"; }}\n\
             location / {{ proxy_pass http://app; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            files.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let error_log = dir.join("error.log");
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = || std::fs::read_to_string(&error_log).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited at start ({status}):\n{}", log());
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                stop(&mut child, &[libc::SIGTERM]);
                panic!("nginx does not accept on {addr} after 15 s:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child, &[libc::SIGQUIT, libc::SIGTERM]);
    }
}

/// `nginx -v`'s answer, e.g. `nginx/1.22.1`.
fn nginx_version() -> String {
    let out = Command::new(NGINX).arg("-v").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    match text.split_once("version:") {
        Some((_, v)) => v.trim().to_string(),
        None => text,
    }
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// One downloaded response.
struct Fetched {
    bytes: u64,
    /// The body, when asked to keep it.
    body: Vec<u8>,
    /// From connect to the last body byte.
    took: Duration,
}

/// `GET path` on a new HTTP/1.1 connection; the body is counted (and kept if `keep`).
/// Anything but a 200 whose body matches its Content-Length is an error.
async fn fetch(addr: SocketAddr, path: &str, keep: bool) -> Result<Fetched, String> {
    let start = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {} for {path}", resp.status()));
    }
    let length = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = resp.into_body();
    let (mut bytes, mut kept) = (0u64, Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body after {bytes} bytes: {e}"))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    let took = start.elapsed();
    drop(sender);
    conn.abort();
    if length.is_some_and(|l| l != bytes) {
        return Err(format!("Content-Length {length:?}, got {bytes} bytes"));
    }
    Ok(Fetched {
        bytes,
        body: kept,
        took,
    })
}

/// `wrk -t2 -c64 -dSECSs` on `path`; requests per second. Non-2xx answers are an error.
async fn wrk(addr: SocketAddr, path: &str, secs: u64) -> Result<f64, String> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{secs}s")])
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(secs + 30), cmd.output())
        .await
        .map_err(|_| format!("wrk still running after {} s", secs + 30))?
        .map_err(|e| format!("run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("wrk: {}\n{text}{err}", out.status));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        return Err(format!("wrk: {}\n{text}", line.trim()));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        eprintln!("note: wrk on {addr}: {}", line.trim());
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

struct Results {
    big_mib_s: [f64; 2],
    small_req_s: [f64; 2],
}

/// Measures both servers; `servers` is `[porter, nginx]`.
async fn measure(
    servers: [(&str, SocketAddr); 2],
    big: u64,
    small_body: &[u8],
    runs: usize,
    secs: u64,
) -> Result<Results, String> {
    for (name, addr) in servers {
        let f = fetch(addr, "/f/small.bin", true)
            .await
            .map_err(|e| format!("{name}: small file: {e}"))?;
        if f.body != small_body {
            return Err(format!(
                "{name}: small file: {} bytes that differ from small.bin ({} bytes)",
                f.bytes,
                small_body.len()
            ));
        }
    }

    let mut big_mib_s = [0.0f64; 2];
    // Alternating, so drift in the machine's state hits both alike.
    for _ in 0..runs {
        for (i, (name, addr)) in servers.into_iter().enumerate() {
            let f = tokio::time::timeout(DOWNLOAD_LIMIT, fetch(addr, "/f/big.bin", false))
                .await
                .map_err(|_| format!("{name}: large file: over {DOWNLOAD_LIMIT:?}"))?
                .map_err(|e| format!("{name}: large file: {e}"))?;
            if f.bytes != big {
                return Err(format!("{name}: large file: {} of {big} bytes", f.bytes));
            }
            let rate = big as f64 / f.took.as_secs_f64() / f64::from(1 << 20);
            big_mib_s[i] = big_mib_s[i].max(rate);
        }
    }

    let mut small_req_s = [0.0f64; 2];
    for (i, (name, addr)) in servers.into_iter().enumerate() {
        small_req_s[i] = wrk(addr, "/f/small.bin", secs)
            .await
            .map_err(|e| format!("{name}: small files: {e}"))?;
    }
    Ok(Results {
        big_mib_s,
        small_req_s,
    })
}

#[tokio::main]
async fn main() {
    if !Path::new(NGINX).is_file() || !in_path("wrk") {
        println!("skipped: nginx/wrk not installed (need {NGINX} and wrk on PATH)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let big: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let runs = if quick { 1 } else { 3 };
    let secs = if quick { 3 } else { 10 };

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under target/");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("create the files dir");
    write_file(&files.join("big.bin"), big, 0x9e37_79b9_7f4a_7c15);
    write_file(&files.join("small.bin"), SMALL, 0xd1b5_4a32_d192_ed03);
    let small_body = std::fs::read(files.join("small.bin")).expect("read small.bin");

    let backend = fake_backend().await;
    let porter = Porter::start(
        &write_porter_config(dir.path(), backend, &files),
        // `listening` is logged at info; access lines are off, as in the nginx config.
        "info,porter::access=off",
    );
    let nginx = Nginx::start(dir.path(), backend, &files);
    let servers = [("porter", porter.addr), ("nginx", nginx.addr)];
    let result = measure(servers, big, &small_body, runs, secs).await;
    drop(porter);
    drop(nginx);
    drop(dir);
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };

    println!(
        "\nporter vs nginx {}: X-Accel-Redirect downloads from one fake backend, loopback\n",
        nginx_version()
    );
    println!("| scenario | porter | nginx | porter/nginx |");
    println!("|---|---:|---:|---:|");
    let [p, n] = r.big_mib_s;
    println!(
        "| large file ({} MiB, best of {runs}), MiB/s | {p:.0} | {n:.0} | {:.2} |",
        big >> 20,
        p / n
    );
    let [p, n] = r.small_req_s;
    println!(
        "| small file (10 KiB, wrk -t2 -c64 -d{secs}s), req/s | {p:.0} | {n:.0} | {:.2} |",
        p / n
    );
}
