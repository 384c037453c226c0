//! Faults around porter: a full disk, a hung or crashing backend, porter itself killed
//! with SIGKILL. Each gets its status, leaves nothing behind, and porter keeps serving.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UPLOAD: &str =
    "[[upload]]\npath = \"/upload\"\nkind = \"multipart\"\nhashes = [\"sha256\"]\n";
const TUS: &str =
    "[[upload]]\npath = \"/files\"\nkind = \"tus\"\nnotify = \"/done\"\nhashes = [\"sha256\"]\n";

fn upload_request(url: &str, data: &[u8]) -> http::Request<Full<Bytes>> {
    let (ct, body) = Form::new()
        .file("f", "a.bin", "application/octet-stream", data)
        .finish();
    request("POST", url)
        .header("content-type", ct)
        .body(body.into())
        .expect("request")
}

/// A tmpfs of `size` mounted on a new folder; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a config for the real binary with storage in `storage` and `routes`.
fn config(dir: &Path, backend: std::net::SocketAddr, storage: &Path, routes: &str) -> PathBuf {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"5s\"\n\
         [backend]\nurl = \"http://{backend}\"\n\
         [storage]\nroot = \"{0}/root\"\ntemp = \"{0}/tmp\"\nmin_free = 0\n{routes}",
        storage.display()
    );
    let path = dir.join("porter.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_507_leaves_nothing_and_recovers() {
    let backend = Backend::ok().await;
    let disk = SmallDisk::mount("4m");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut porter = Proc::serve(&config(dir.path(), backend.addr, disk.path(), UPLOAD));
    let url = format!("http://127.0.0.1:{}/upload", porter.port());

    let reply = send(upload_request(&url, &data(8 << 20, 1))).await;
    assert_eq!(reply.status, 507, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "insufficient_storage");
    assert!(
        files_under(disk.path()).is_empty(),
        "left: {:?}",
        files_under(disk.path())
    );

    // Fill what is left: even a small upload is refused...
    let filler = disk.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 << 20]);
    let reply = send(upload_request(&url, &data(64 << 10, 2))).await;
    assert_eq!(reply.status, 507, "{:?}", reply.body);
    // ...until space returns.
    std::fs::remove_file(&filler).expect("remove filler");
    let reply = send(upload_request(&url, &data(64 << 10, 3))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        backend.count(),
        1,
        "only the last upload reached the backend"
    );
    assert_eq!(files_under(&disk.path().join("root")).len(), 1);
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_exit(10).is_some());
}

#[tokio::test]
async fn hung_backend_is_504_and_cleans_up() {
    // Accepts and never answers.
    let hung = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = hung.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let table = format!("[backend]\nurl = \"http://{addr}\"\nresponse_timeout = \"1s\"\n");
    let porter = Porter::start_with(&table, UPLOAD).await;
    let reply = send(upload_request(&porter.url("/upload"), &data(100_000, 4))).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "backend_timeout");
    assert!(
        porter.wait_empty().await.is_empty(),
        "files left after a timeout"
    );
    holder.abort();
}

/// A backend that reads the request head, then resets the connection: before any answer
/// when `answer` is empty, else after writing `answer`.
async fn resetting_backend(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Linger 0: the close sends a reset, which is the point (the blocking
                // drop it warns about cannot happen with a zero timeout).
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn backend_reset_is_502_and_cleans_up() {
    let addr = resetting_backend(b"").await;
    let porter = Porter::start(addr, UPLOAD).await;
    let reply = send(upload_request(&porter.url("/upload"), &data(100_000, 5))).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "backend_unavailable");
    assert!(
        porter.wait_empty().await.is_empty(),
        "files left after a reset"
    );
}

#[tokio::test]
async fn backend_reset_mid_response_cuts_only_that_response() {
    let addr = resetting_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial").await;
    let porter = Porter::start(addr, "").await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(porter.addr).await.expect("connect");
        s.write_all(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "porter closed the broken response");
        let text = String::from_utf8_lossy(&got);
        // Never a complete 1000-byte response made up from 7 bytes.
        let complete = text.starts_with("HTTP/1.1 200") && got.len() >= 1000;
        assert!(!complete, "{text}");
    }
}

/// The upload's `Upload-Offset` as porter reports it.
async fn tus_offset(url: &str) -> u64 {
    let r = send(
        request("HEAD", url)
            .header("tus-resumable", "1.0.0")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(r.status, 200, "HEAD {url}");
    r.headers["upload-offset"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_resumes_at_a_true_offset_and_sweeps_partials() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("storage");
    let cfg = config(
        dir.path(),
        backend.addr,
        &storage,
        &format!("{UPLOAD}{TUS}"),
    );
    let mut porter = Proc::serve(&cfg);
    let base = format!("http://127.0.0.1:{}", porter.port());
    let file = data(3 << 20, 6);

    // A tus upload: 1 MiB accepted, then a PATCH cut off mid-body by the kill.
    let created = send(
        request("POST", &format!("{base}/files"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", file.len())
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(created.status, 201);
    let path = created.headers["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let path = path.trim_start_matches(&base).to_string();
    let patch = |url: String, offset: usize, bytes: Vec<u8>| {
        request("PATCH", &url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(Full::new(Bytes::from(bytes)))
            .expect("request")
    };
    let r = send(patch(format!("{base}{path}"), 0, file[..1 << 20].to_vec())).await;
    assert_eq!(r.status, 204);
    let port = base.rsplit(':').next().expect("port").to_string();
    let mut tus_cut = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        1 << 20,
        1 << 20
    );
    tus_cut.write_all(head.as_bytes()).await.expect("head");
    tus_cut
        .write_all(&file[1 << 20..(3 << 19)])
        .await
        .expect("half a chunk");

    // A multipart upload cut off mid-body.
    let (ct, body) = Form::new()
        .file("f", "big.bin", "application/octet-stream", &file)
        .finish();
    let mut multi_cut = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    multi_cut.write_all(head.as_bytes()).await.expect("head");
    multi_cut
        .write_all(&body[..body.len() / 2])
        .await
        .expect("half");
    let parts = |temp: &Path| -> Vec<PathBuf> {
        files_under(temp)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".part"))
            .collect()
    };
    for _ in 0..100 {
        if !parts(&storage.join("tmp")).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !parts(&storage.join("tmp")).is_empty(),
        "the multipart upload has a partial file"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    porter.signal(libc::SIGKILL);
    assert!(porter.wait_exit(10).is_some());
    drop((tus_cut, multi_cut));

    let mut porter = Proc::serve(&cfg);
    let base = format!("http://127.0.0.1:{}", porter.port());
    // The start-up sweep logs what it removed (after the `listening` line).
    let swept = porter.wait_for("removed partial files", 10);
    assert!(swept.is_some(), "no sweep at start-up: {:?}", porter.seen);
    let left = parts(&storage.join("tmp"));
    assert!(left.is_empty(), "partials survived the restart: {left:?}");
    // The offset is true: porter holds exactly those bytes, and the rest completes the
    // file with the right whole-file hash.
    let offset = tus_offset(&format!("{base}{path}")).await as usize;
    assert!((1 << 20..=3 << 19).contains(&offset), "offset {offset}");
    let r = send(patch(
        format!("{base}{path}"),
        offset,
        file[offset..].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let done = backend.requests();
    let notify = done
        .iter()
        .find(|r| r.target == "/done")
        .expect("the tus upload was notified");
    let form = parse_form(notify);
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&file));
    assert_eq!(one(&form, "file.size"), file.len().to_string());
    assert_eq!(
        done.iter().filter(|r| r.target == "/upload").count(),
        0,
        "the cut upload arrived"
    );
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_exit(10).is_some());
}
