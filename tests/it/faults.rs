//! Faults around porter: a full disk, a hung or crashing backend, porter itself killed
//! with SIGKILL. Each gets its status, leaves nothing behind, and porter keeps serving.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn upload() -> Upload {
    Upload::multipart("/upload").hashes(&["sha256"])
}

/// Uploads `data` as one file to `url`.
async fn post_upload(url: &str, data: &[u8]) -> Reply {
    let form = Form::new().file("f", "a.bin", "application/octet-stream", data);
    request("POST", url).form(form).send().await
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

/// porter (the binary) with storage in `storage` and `routes`.
fn serve(backend: std::net::SocketAddr, storage: &Path, routes: impl Into<Config>) -> Served {
    let at = |name: &str| storage.join(name).display().to_string();
    let config = routes
        .into()
        .set("server.idle_timeout", "5s")
        .set("storage.root", at("root"))
        .set("storage.temp", at("tmp"));
    Served::start(backend, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_507_leaves_nothing_and_recovers() {
    let backend = Backend::ok().await;
    let disk = SmallDisk::mount("4m");
    let mut porter = serve(backend.addr, disk.path(), upload());
    let url = porter.url("/upload");

    let reply = post_upload(&url, &data(8 << 20, 1)).await;
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
    let reply = post_upload(&url, &data(64 << 10, 2)).await;
    assert_eq!(reply.status, 507, "{:?}", reply.body);
    // ...until space returns.
    std::fs::remove_file(&filler).expect("remove filler");
    let reply = post_upload(&url, &data(64 << 10, 3)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        backend.count(),
        1,
        "only the last upload reached the backend"
    );
    assert_eq!(files_under(&disk.path().join("root")).len(), 1);
    porter.proc.signal(libc::SIGTERM);
    assert!(porter.proc.wait_exit(10).is_some());
}

#[tokio::test]
async fn hung_backend_is_504_and_cleans_up() {
    let hung = backend().hang().run().await;
    let config = Config::from(upload()).set("backend.response_timeout", "1s");
    let porter = Porter::start(hung.addr, config).await;
    let reply = post_upload(&porter.url("/upload"), &data(100_000, 4)).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "backend_timeout");
    assert!(
        porter.wait_empty().await.is_empty(),
        "files left after a timeout"
    );
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
    let porter = Porter::start(addr, upload()).await;
    let reply = post_upload(&porter.url("/upload"), &data(100_000, 5)).await;
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
    let porter = Porter::start(addr, Config::new()).await;
    for _ in 0..2 {
        let mut s = wire::open(porter.addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let text = wire::read_to_close(&mut s).await;
        let text = text.expect("porter closed the broken response");
        // Never a complete 1000-byte response made up from 7 bytes.
        let complete = text.starts_with("HTTP/1.1 200") && text.len() >= 1000;
        assert!(!complete, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_resumes_at_a_true_offset_and_sweeps_partials() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("storage");
    let tus = Upload::tus("/files", "/done").hashes(&["sha256"]);
    let mut porter = serve(backend.addr, &storage, upload().and(tus));
    let file = data(3 << 20, 6);

    // A tus upload: 1 MiB accepted, then a PATCH cut off mid-body by the kill.
    let url = tus::create(&porter.url("/files"), file.len()).await;
    let path = tus::path(&url).to_string();
    let r = tus::patch(&url, 0, &file[..1 << 20]).await;
    assert_eq!(r.status, 204);
    let head = tus::patch_head(&path, 1 << 20, 1 << 20);
    let mut tus_cut = wire::open(porter.addr(), head.as_bytes()).await;
    tus_cut
        .write_all(&file[1 << 20..(3 << 19)])
        .await
        .expect("half a chunk");

    // A multipart upload cut off mid-body.
    let (ct, body) = Form::new()
        .file("f", "big.bin", "application/octet-stream", &file)
        .finish();
    let head = wire::head(
        "POST",
        "/upload",
        &[&format!("Content-Type: {ct}")],
        body.len(),
    );
    let mut multi_cut = wire::open(porter.addr(), head.as_bytes()).await;
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
    assert!(
        eventually(2, || !parts(&storage.join("tmp")).is_empty()).await,
        "the multipart upload has a partial file"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    porter.proc.kill9();
    drop((tus_cut, multi_cut));

    porter.restart();
    // The start-up sweep logs what it removed (after the `listening` line).
    let swept = porter.proc.wait_for("removed partial files", 10);
    assert!(
        swept.is_some(),
        "no sweep at start-up: {:?}",
        porter.proc.seen
    );
    let left = parts(&storage.join("tmp"));
    assert!(left.is_empty(), "partials survived the restart: {left:?}");
    // The offset is true: porter holds exactly those bytes, and the rest completes the
    // file with the right whole-file hash.
    let url = porter.url(&path);
    let offset = tus::offset(&url).await as usize;
    assert!((1 << 20..=3 << 19).contains(&offset), "offset {offset}");
    let r = tus::patch(&url, offset, &file[offset..]).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let notify = backend.at("/done");
    let form = parse_form(notify.first().expect("the tus upload was notified"));
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&file));
    assert_eq!(one(&form, "file.size"), file.len().to_string());
    assert!(backend.at("/upload").is_empty(), "the cut upload arrived");
    porter.proc.signal(libc::SIGTERM);
    assert!(porter.proc.wait_exit(10).is_some());
}
