//! Real tus clients against porter: tuspy (Python) and tus-js-client (Node), with a
//! connection cut mid-chunk and with porter killed (-9) and restarted mid-upload.
//! `scripts/test` installs both and sets the environment these tests read.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn peer_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the suite with scripts/test, which installs tuspy and tus-js-client"))
}

fn script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub async fn tuspy(endpoint: &str, file: &std::path::Path, chunk: usize, mode: &str) -> String {
    run(Command::new(peer_env("PORTER_TEST_PYTHON"))
        .arg(script("tus_upload.py"))
        .args([endpoint, file.to_str().unwrap(), &chunk.to_string(), mode]))
    .await
}

async fn tus_js(endpoint: &str, file: &std::path::Path, chunk: usize, url: Option<&str>) -> String {
    tus_js_with(endpoint, file, chunk, url, &[]).await
}

/// tus-js-client speaking the IETF draft (interop version 6).
const DRAFT: (&str, &str) = ("TUS_PROTOCOL", "ietf-draft-05");

async fn tus_js_with(
    endpoint: &str,
    file: &std::path::Path,
    chunk: usize,
    url: Option<&str>,
    env: &[(&str, &str)],
) -> String {
    let mut cmd = Command::new("node");
    cmd.envs(env.iter().copied())
        .env("NODE_PATH", peer_env("PORTER_TEST_NODE_PATH"))
        .arg(script("tus_upload.js"))
        .args([endpoint, file.to_str().unwrap(), &chunk.to_string()]);
    if let Some(u) = url {
        cmd.arg(u);
    }
    run(&mut cmd).await
}

async fn run(cmd: &mut Command) -> String {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("client finished in time")
        .expect("client runs");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// A TCP proxy in front of porter that cuts its first connection after `cut` bytes
/// from the client, mid-request; later connections pass untouched.
async fn cutting_proxy(target: std::net::SocketAddr, cut: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let limit = if first { Some(cut) } else { None };
            first = false;
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let n = limit.map_or(n, |l| n.min(l - sent));
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                        if limit == Some(sent) {
                            return;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

fn check_delivery(backend: &Backend, content: &[u8], album: &str) {
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "one notify");
    let form = parse_form(&seen[0]);
    assert_eq!(one(&form, "file.name"), "big.bin");
    assert_eq!(one(&form, "album"), album);
    assert_eq!(one(&form, "file.size"), content.len().to_string());
    assert_eq!(one(&form, "file.md5"), md5_hex(content));
    assert_eq!(one(&form, "file.sha256"), sha256_hex(content));
    assert!(std::fs::read(one(&form, "file.path")).unwrap() == content);
}

pub fn sample(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let content = data(len, 42);
    let path = dir.join("big.bin");
    std::fs::write(&path, &content).unwrap();
    (path, content)
}

#[tokio::test]
async fn tuspy_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, super::tus::ROUTE).await;
    let (file, content) = sample(porter.dir.path(), 5 << 20);
    let proxy = cutting_proxy(porter.addr, 1_300_000).await;
    let url = tuspy(&format!("http://{proxy}/files"), &file, 512 << 10, "full").await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "tuspy");
}

#[tokio::test]
async fn tus_js_client_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, super::tus::ROUTE).await;
    let (file, content) = sample(porter.dir.path(), 5 << 20);
    let proxy = cutting_proxy(porter.addr, 1_300_000).await;
    let url = tus_js(&format!("http://{proxy}/files"), &file, 512 << 10, None).await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "js");
}

#[tokio::test]
async fn tus_js_client_on_the_ietf_draft_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, super::tus::ROUTE).await;
    let (file, content) = sample(porter.dir.path(), 5 << 20);
    let proxy = cutting_proxy(porter.addr, 1_300_000).await;
    let url = tus_js_with(
        &format!("http://{proxy}/files"),
        &file,
        256 << 10,
        None,
        &[DRAFT],
    )
    .await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "js");
    assert_protocol(&porter.temp(), &url, "ietf-draft");
}

/// The protocol porter recorded for an upload (the client really spoke it).
fn assert_protocol(temp: &std::path::Path, url: &str, protocol: &str) {
    let id = url.rsplit('/').next().unwrap();
    let state = std::fs::read_to_string(temp.join("resumable").join(format!("{id}.json")))
        .expect("the upload's state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["protocol"], protocol, "{state}");
}

/// porter as a separate process, so it can be killed with SIGKILL.
pub struct Process {
    child: Child,
    conf: std::path::PathBuf,
    pub port: u16,
}

impl Process {
    fn start(dir: &std::path::Path, backend: std::net::SocketAddr, port: u16) -> Process {
        let conf = dir.join("porter.toml");
        std::fs::write(
            &conf,
            format!(
                "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backend]\nurl = \"http://{backend}\"\n[storage]\nroot = \"root\"\ntemp = \"tmp\"\nmin_free = 0\n{}",
                super::tus::ROUTE
            ),
        )
        .unwrap();
        Process::spawn(conf, port)
    }

    pub fn spawn(conf: std::path::PathBuf, port: u16) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_porter"))
            .args(["serve", "-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "porter did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Process { child, conf, port }
    }

    pub fn kill9(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(mut self) -> Process {
        let (conf, port) = (self.conf.clone(), self.port);
        self.stop();
        Process::spawn(conf, port)
    }
}

/// A failing test must not leave porter running (it would hold cargo's output pipe).
impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn uploads_resume_after_porter_is_killed() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = Process::start(dir.path(), backend.addr, port);
    let (file, content) = sample(dir.path(), 3 << 20);
    let endpoint = format!("http://127.0.0.1:{port}/files");
    // tuspy: three chunks, then porter dies, then the client resumes.
    let url = tuspy(&endpoint, &file, 256 << 10, "partial:3").await;
    let p = p.restart();
    let offset = head_offset(&url).await;
    assert_eq!(offset, 3 * (256 << 10), "the offset survived the restart");
    tuspy(&endpoint, &file, 256 << 10, &format!("resume:{url}")).await;
    check_delivery(&backend, &content, "tuspy");
    // A torn write: bytes past the saved offset are cut off on the next append.
    backend.seen.lock().unwrap().clear();
    let p = p.restart();
    let url = tuspy(&endpoint, &file, 256 << 10, "partial:2").await;
    let data_file = dir
        .path()
        .join("tmp/resumable")
        .join(format!("{}.data", url.rsplit('/').next().unwrap()));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data_file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"garbage that was never acknowledged").unwrap();
    let p = p.restart();
    assert_eq!(head_offset(&url).await, 2 * (256 << 10));
    tus_js(&endpoint, &file, 256 << 10, Some(&url)).await;
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    p.kill9();
}

#[tokio::test]
async fn tus_js_client_on_the_ietf_draft_resumes_after_porter_is_killed() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = Process::start(dir.path(), backend.addr, port);
    let (file, content) = sample(dir.path(), 4 << 20);
    let endpoint = format!("http://127.0.0.1:{port}/files");
    let stop = ("STOP_AFTER", "1000000");
    let url = tus_js_with(&endpoint, &file, 128 << 10, None, &[DRAFT, stop]).await;
    let p = p.restart();
    let offset = head_offset(&url).await;
    assert!((1_000_000..4 << 20).contains(&offset), "{offset}");
    // The client resumes from its stored URL: HEAD, then appends from the offset.
    tus_js_with(&endpoint, &file, 128 << 10, Some(&url), &[DRAFT]).await;
    check_delivery(&backend, &content, "js");
    assert_protocol(&dir.path().join("tmp"), &url, "ietf-draft");
    p.kill9();
}

pub async fn head_offset(url: &str) -> u64 {
    let r = send(
        request("HEAD", url)
            .header("tus-resumable", "1.0.0")
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    r.headers["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
