//! `cargo bench --bench offload [-- --quick]`: one multipart upload of 1 GiB (64 MiB with
//! `--quick`) through a release `porter serve` per storage location and hash set, against
//! the same body straight to the fake backend over loopback; prints a Markdown table. Each
//! upload must get a 200, store one file of N bytes (deleted after) and send the backend
//! only a small metadata request.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Porter, fake_backend, files_under};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 256 * 1024;
/// The body repeats with this period: odd, so consecutive chunks differ.
const PERIOD: usize = 1024 * 1024 + 7;
const BOUNDARY: &str = "porter-bench-7MA4YWxkTrZu0gW";

/// Streams one multipart upload of `size` pattern bytes over HTTP/1.1 with
/// Content-Length; returns the wall time from connect to the end of a 200 response.
async fn upload(addr: SocketAddr, size: u64) -> Result<Duration, String> {
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let length = part.len() as u64 + size + tail.len() as u64;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{part}"
    );
    let pattern = support::pattern(PERIOD, CHUNK);
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let sent = async {
        s.write_all(head.as_bytes()).await?;
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(CHUNK as u64) as usize;
            let at = (done % PERIOD as u64) as usize;
            s.write_all(&pattern[at..at + n]).await?;
            done += n as u64;
        }
        s.write_all(tail.as_bytes()).await?;
        s.flush().await
    }
    .await;
    let mut response = Vec::new();
    let read = s.read_to_end(&mut response).await;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&response);
    match (sent, read) {
        (Ok(()), Ok(_)) if text.starts_with("HTTP/1.1 200 ") => Ok(elapsed),
        (sent, read) => Err(format!(
            "send: {sent:?}, read: {read:?}, response: {text:?}"
        )),
    }
}

fn write_config(dir: &Path, backend: SocketAddr, hashes: &[&str]) -> PathBuf {
    let quoted = |p: PathBuf| format!("{:?}", p.display().to_string());
    let hashes: Vec<String> = hashes.iter().map(|h| format!("{h:?}")).collect();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_grace = \"2s\"\n\n\
         [backend]\nurl = \"http://{backend}\"\n\n\
         [storage]\nroot = {}\ntemp = {}\nfsync = true\nmin_free = \"0\"\n\n\
         [[upload]]\npath = \"/upload\"\nkind = \"multipart\"\nmax_file_size = \"8GiB\"\n\
         hashes = [{}]\n",
        quoted(dir.join("root")),
        quoted(dir.join("tmp")),
        hashes.join(", "),
    );
    let path = dir.join("porter.toml");
    std::fs::write(&path, text).expect("write porter.toml");
    path
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let (backend, rec) = fake_backend().await;
    let take = || {
        let requests = rec.requests.swap(0, Ordering::SeqCst);
        (requests, rec.body_bytes.swap(0, Ordering::SeqCst))
    };
    let mib_s = |t: Duration| size as f64 / t.as_secs_f64() / f64::from(1 << 20);
    let locations = [
        ("tmpfs (/dev/shm)", "/dev/shm"),
        ("disk (target/tmp)", env!("CARGO_TARGET_TMPDIR")),
    ];
    let hash_sets: [(&str, &[&str]); 2] = [("none", &[]), ("md5+sha256", &["md5", "sha256"])];

    println!(
        "\nporter offload: one multipart upload of {} MiB, fsync = true\n",
        size >> 20
    );
    println!("| storage | hashes | porter MiB/s | loopback MiB/s | ratio | porter peak RSS MiB |");
    println!("|---|---|---:|---:|---:|---:|");
    for (label, base) in locations {
        if !Path::new(base).is_dir() {
            eprintln!("skipping {label}: {base} is absent");
            continue;
        }
        for (hash_label, hashes) in hash_sets {
            let dir = tempfile::tempdir_in(base).expect("temp dir for storage");
            // The ceiling: best of three straight to the backend (the first warms up).
            let mut ceiling = Duration::MAX;
            for _ in 0..3 {
                ceiling = ceiling.min(upload(backend, size).await.expect("loopback upload"));
            }
            let (_, got) = take();
            assert!(got >= 3 * size, "backend read {got} of 3 x {size} bytes");

            let porter = Porter::start(&write_config(dir.path(), backend, hashes), "info");
            let took = upload(porter.addr, size)
                .await
                .expect("upload through porter");
            let rss = porter.peak_rss_mib();
            drop(porter);
            let (requests, got) = take();
            assert_eq!(requests, 1, "backend requests per upload");
            assert!(got < 1 << 20, "backend got {got} bytes: not offloaded");
            let stored = files_under(&dir.path().join("root"));
            assert_eq!(stored.len(), 1, "stored files: {stored:?}");
            let len = stored[0].metadata().expect("stat the stored file").len();
            assert_eq!(len, size, "stored file size");
            std::fs::remove_file(&stored[0]).expect("delete stored file");

            let (p, c) = (mib_s(took), mib_s(ceiling));
            println!(
                "| {label} | {hash_label} | {p:.0} | {c:.0} | {:.2} | {rss:.1} |",
                p / c
            );
        }
    }
}
