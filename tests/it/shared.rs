//! Scale-out (SPEC §9): two porter instances share resumable uploads through Redis
//! (state, leased locks, takeovers) and the Garage cluster of `s3.rs` (data), so
//! consecutive requests of one upload may land on either instance.

use super::chunked::{send_chunk, send_complete};
use super::nginx_resumable::segment;
use super::s3::{Garage, object, prefix, wait_clean};
use super::tus_clients::{Process, head_offset, sample, tuspy};
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

/// A Redis server of its own on a free loopback port, stopped when dropped.
pub struct RedisServer {
    child: std::process::Child,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        }
    }

    /// Keys matching `pattern` (the shell client, so the test does not trust porter's).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
    }

    /// Runs `redis-cli` against this server; its output lines.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let port = self.url.rsplit(':').next().unwrap().trim_end_matches("/0");
        let out = std::process::Command::new("redis-cli")
            .args(["-p", port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TUS: &str = "[[upload]]\npath = \"/files\"\nkind = \"tus\"\nnotify = \"/uploads/done\"\nhashes = [\"md5\", \"sha256\"]\nmax_file_size = \"64MiB\"\n";

/// The tables two instances share: S3 under `prefix`, Redis, short leases.
fn shared_tables(garage: &Garage, redis: &RedisServer, prefix: &str) -> String {
    format!(
        "{}[state]\nurl = \"{}\"\nlock_lease = \"2s\"\n",
        garage.table(prefix),
        redis.url
    )
}

async fn instance(
    garage: &Garage,
    redis: &RedisServer,
    backend: std::net::SocketAddr,
    prefix: &str,
    routes: &str,
) -> Porter {
    Porter::start_with(
        &format!(
            "[backend]\nurl = \"http://{backend}\"\n[storage]\nbackend = \"s3\"\nmin_free = 0\n{}",
            shared_tables(garage, redis, prefix)
        ),
        routes,
    )
    .await
}

/// Two instances sharing the Garage cluster (under a fresh prefix) and a Redis of
/// their own, in front of one backend.
struct Pair {
    garage: &'static Garage,
    redis: RedisServer,
    backend: Backend,
    prefix: String,
    a: Porter,
    b: Porter,
}

impl Pair {
    async fn start(routes: &str) -> Pair {
        let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
        let redis = RedisServer::start();
        let backend = Backend::ok().await;
        let prefix = prefix();
        let a = instance(garage, &redis, backend.addr, &prefix, routes).await;
        let b = instance(garage, &redis, backend.addr, &prefix, routes).await;
        Pair {
            garage,
            redis,
            backend,
            prefix,
            a,
            b,
        }
    }
}

/// Checks the one metadata request and the object it names; then that nothing
/// partial is left in the bucket or in Redis.
async fn check_object(
    garage: &Garage,
    redis: &RedisServer,
    backend: &Backend,
    prefix: &str,
    content: &[u8],
) {
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "one metadata request");
    let form = parse_form(&seen[0]);
    assert_eq!(one(&form, "file.size"), content.len().to_string());
    assert_eq!(one(&form, "file.sha256"), sha256_hex(content));
    assert_eq!(one(&form, "file.path"), "", "no local path");
    assert_eq!(one(&form, "file.bucket"), garage.bucket);
    let key = one(&form, "file.key");
    assert!(key.starts_with(prefix), "{key}");
    let s3 = garage.client();
    assert!(object(&s3, key).await == content, "the object's bytes");
    let partial = format!("{prefix}partial/");
    assert!(
        s3.list(&partial).await.unwrap().is_empty(),
        "pending objects left"
    );
    assert!(
        s3.multipart_uploads(prefix).await.unwrap().is_empty(),
        "multipart uploads left"
    );
    assert!(redis.keys("porter:data:*").is_empty());
    wait_unlocked(redis, "*").await;
}

/// Waits (bounded by more than the 2 s lease) until no lock matches `id`.
async fn wait_unlocked(redis: &RedisServer, id: &str) {
    let pattern = format!("porter:lock:{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis.keys(&pattern).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{pattern} is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tuspy_chunks_alternating_between_two_instances_make_one_object() {
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(TUS).await;
    // 13 MiB in 2 MiB chunks over 5 MiB parts: tails and parts change hands.
    let (file, content) = sample(a.dir.path(), 13 << 20);
    tuspy(
        &a.url("/files"),
        &file,
        2 << 20,
        &format!("alternate:{}", b.url("/files")),
    )
    .await;
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    check_object(garage, &redis, &backend, &prefix, &content).await;
}

/// porter as a process on S3 and Redis, so it can be killed with SIGKILL.
fn process(dir: &std::path::Path, tables: &str, backend: std::net::SocketAddr) -> Process {
    let port = free_port();
    let conf = dir.join(format!("porter-{port}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backend]\nurl = \"http://{backend}\"\n[storage]\nbackend = \"s3\"\nroot = \"root\"\ntemp = \"tmp-{port}\"\nmin_free = 0\n{tables}{TUS}"
        ),
    )
    .unwrap();
    Process::spawn(conf, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_mid_patch_leaves_the_upload_to_the_other() {
    use tokio::io::AsyncWriteExt;
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let redis = RedisServer::start();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let tables = shared_tables(garage, &redis, &prefix);
    let a = process(dir.path(), &tables, backend.addr);
    let b = process(dir.path(), &tables, backend.addr);
    let (a_url, b_url) = (
        format!("http://127.0.0.1:{}/files", a.port),
        format!("http://127.0.0.1:{}/files", b.port),
    );
    let (file, content) = sample(dir.path(), 12 << 20);
    let url = tuspy(&a_url, &file, 2 << 20, "partial:2").await;
    let id = url.rsplit('/').next().unwrap().to_string();
    // A PATCH that crosses the first part boundary dies with instance A, lock held.
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", a.port))
        .await
        .unwrap();
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        4 << 20,
        4 << 20
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&content[4 << 20..7 << 20]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.keys(&format!("porter:lock:{id}")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill9();
    drop(c);
    // A's lock is not released by anyone: it runs out with its lease.
    wait_unlocked(&redis, &id).await;
    // B knows the upload, at the last acknowledged offset, and takes the rest.
    let on_b = format!("{b_url}/{id}");
    assert_eq!(head_offset(&on_b).await, 4 << 20);
    tuspy(&b_url, &file, 2 << 20, &format!("resume:{on_b}")).await;
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    check_object(garage, &redis, &backend, &prefix, &content).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_resumable_segments_out_of_order_on_both_instances() {
    let route = "[[upload]]\npath = \"/resumable\"\nkind = \"nginx-resumable\"\nnotify = \"/uploads/done\"\nhashes = [\"md5\", \"sha256\"]\n";
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(route).await;
    let content = data(11 << 20, 8);
    let seg = 3 << 20;
    let starts = [9 << 20, 0, 6 << 20, 3 << 20];
    for (i, start) in starts.into_iter().enumerate() {
        let end = (start + seg).min(content.len());
        let at = if i % 2 == 0 { &a } else { &b };
        let r = segment(
            at,
            "shared-session-01",
            &content[start..end],
            start,
            content.len(),
        )
        .await;
        let want = if i + 1 == starts.len() { 200 } else { 201 };
        assert_eq!(r.status, want, "segment {i}: {:?}", r.body);
    }
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    check_object(garage, &redis, &backend, &prefix, &content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_alternate_between_instances_and_complete_on_either() {
    let route = "[[upload]]\npath = \"/api/chunked_upload\"\nkind = \"chunked\"\ncomplete = \"/api/chunked_upload_complete/\"\nhashes = [\"sha256\"]\nmax_file_size = \"32MiB\"\n";
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(route).await;
    let content = data(9 << 20, 9);
    let size = 2 << 20;
    let mut id: Option<String> = None;
    for (i, start) in (0..content.len()).step_by(size).enumerate() {
        let end = (start + size).min(content.len());
        let at = if i % 2 == 0 { &a } else { &b };
        let range = (start, end - 1, content.len());
        let r = send_chunk(at, &content[start..end], Some(range), id.as_deref()).await;
        assert_eq!(r.status, 200, "chunk {i}: {:?}", r.body);
        id.get_or_insert(r.json()["upload_id"].as_str().unwrap().to_string());
    }
    let fields = format!("upload_id={}&md5={}", id.unwrap(), md5_hex(&content));
    let r = send_complete(&b, &fields).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    check_object(garage, &redis, &backend, &prefix, &content).await;
}

async fn tus_create(porter: &Porter, len: usize) -> String {
    let r = send(
        request("POST", &porter.url("/files"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", len)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201);
    let loc = r.headers["location"].to_str().unwrap();
    loc.rsplit('/').next().unwrap().to_string()
}

async fn tus_patch(porter: &Porter, id: &str, offset: usize, body: &[u8]) -> Reply {
    send(
        request("PATCH", &porter.url(&format!("/files/{id}")))
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(Full::new(Bytes::from(body.to_vec())))
            .unwrap(),
    )
    .await
}

/// No state, data record or lock of any upload is left in Redis.
fn no_upload_keys(redis: &RedisServer) {
    for pattern in ["porter:up:*", "porter:data:*", "porter:lock:*"] {
        assert!(redis.keys(pattern).is_empty(), "{:?}", redis.keys(pattern));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_and_expired_shared_uploads_leave_nothing_behind() {
    let route = TUS.replace("max_file_size", "expire = \"1s\"\nmax_file_size");
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(&route).await;
    let content = data(7 << 20, 10);
    // Termination on B of an upload A holds a part and a tail of.
    let id = tus_create(&a, 20 << 20).await;
    assert_eq!(tus_patch(&a, &id, 0, &content).await.status, 204);
    assert_eq!(
        garage
            .client()
            .multipart_uploads(&prefix)
            .await
            .unwrap()
            .len(),
        1
    );
    let r = send(
        request("DELETE", &b.url(&format!("/files/{id}")))
            .header("tus-resumable", "1.0.0")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204);
    wait_clean(&garage.client(), &prefix).await;
    no_upload_keys(&redis);
    // Expiry: `porter gc` (a third process) collects it across instances.
    let id = tus_create(&b, 20 << 20).await;
    assert_eq!(tus_patch(&b, &id, 0, &content).await.status, 204);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let text = porter_gc(&a.dir.path().join("porter.toml"));
    assert!(text.contains("1 expired resumable upload"), "{text}");
    wait_clean(&garage.client(), &prefix).await;
    no_upload_keys(&redis);
    assert!(backend.requests().is_empty());
}

/// The IETF draft's takeover across instances: an append stalled on A is stopped by a
/// HEAD on B (over Redis), keeps what it wrote, and B finishes the upload. B follows
/// A's progress through Redis too.
#[tokio::test(flavor = "multi_thread")]
async fn a_draft_request_on_one_instance_takes_over_an_append_stalled_on_the_other() {
    use super::draft::{append, create, head, header, read_until, wait_received};
    use tokio::io::AsyncWriteExt;
    let routes = format!("[progress]\npath = \"/progress\"\n{TUS}");
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(&routes).await;
    let content = data(7 << 20, 12);
    let r = create(
        &a,
        &[
            ("upload-complete", "?0"),
            ("upload-length", &content.len().to_string()),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = header(&r, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let req = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 6\r\nContent-Type: application/partial-upload\r\nUpload-Offset: 0\r\nUpload-Complete: ?1\r\nContent-Length: {}\r\n\r\n",
        content.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let sent = 6 << 20;
    s.write_all(&content[..sent]).await.unwrap();
    let on_b = b.url(&format!("/files/{id}"));
    wait_received(&b, &on_b, sent as u64).await;
    // A still holds the upload; B's HEAD asks it to stop rather than wait for it.
    let r = head(&on_b).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let offset: u64 = header(&r, "upload-offset").parse().unwrap();
    assert_eq!(offset, sent as u64, "A kept what it wrote");
    let answer = read_until(&mut s, "\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let r = append(&on_b, offset, true, &content[sent..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    check_object(garage, &redis, &backend, &prefix, &content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_and_porter_check_online_reach_redis() {
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let redis = RedisServer::start();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let mport = free_port();
    let routes = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n{TUS}");
    let a = instance(garage, &redis, backend.addr, &prefix, &routes).await;
    let conf = a.dir.path().join("porter.toml");
    wait_listening(mport).await;
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
            .args(["check", "--online", "-c"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    assert!(check().status.success());
    let ready = || async {
        send(
            request("GET", &format!("http://127.0.0.1:{mport}/readyz"))
                .body(Full::default())
                .unwrap(),
        )
        .await
    };
    assert_eq!(ready().await.status, 200);
    drop(redis);
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state.url"));
    let r = ready().await;
    assert_eq!(r.status, 503);
    assert!(
        String::from_utf8_lossy(&r.body).contains("shared state"),
        "{:?}",
        r.body
    );
    // Without Redis, a resumable request is refused with 503, not a lost upload.
    let r = send(
        request("POST", &a.url("/files"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "10")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
}

#[test]
fn porter_check_validates_state_and_masks_its_password() {
    let garage = Garage::shared();
    let dir = tempfile::tempdir().unwrap();
    let check = |text: String| {
        let conf = dir.path().join("porter.toml");
        std::fs::write(&conf, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
            .args(["check", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let base = "[backend]\nurl = \"http://127.0.0.1:9\"\n";
    // [state] over local storage is refused; so are a bad URL and a short lease.
    let (code, text) = check(format!(
        "{base}[state]\nurl = \"http://x\"\nlock_lease = \"100ms\"\n"
    ));
    assert_eq!(code, Some(1), "{text}");
    for key in ["state:", "state.url", "state.lock_lease"] {
        assert!(text.contains(key), "{key}: {text}");
    }
    let (code, text) = check(format!(
        "{base}[storage]\nbackend = \"s3\"\n{}[state]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n{TUS}",
        garage.table("c/")
    ));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("redis://:********@127.0.0.1:6379/0"),
        "{text}"
    );
    assert!(text.contains("lock_lease = \"10s\""), "{text}");
}

/// A request whose lease is gone (here: deleted, as if it had run out while the
/// instance was paused) must not write the upload's state any more: its successor may
/// own the upload by then. Its save is refused, and the upload goes on from what was
/// last saved under a valid lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_lost_its_lease_cannot_save() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Pair {
        garage,
        redis,
        backend,
        prefix,
        a,
        b,
    } = Pair::start(TUS).await;
    let content = data(9 << 20, 14);
    let id = tus_create(&a, content.len()).await;
    let mut c = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        content.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&content[..3 << 20]).await.unwrap();
    let lock = format!("porter:lock:{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.keys(&lock).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.cli(&["DEL", &lock]);
    // A notices at its next renewal (lease/3) and stops; its answer is an error.
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut answer))
        .await
        .expect("A answers once it lost the lease")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 5"), "{answer}");
    // Nothing A received was counted: B resumes at 0 and finishes.
    let r = send(
        request("HEAD", &b.url(&format!("/files/{id}")))
            .header("tus-resumable", "1.0.0")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["upload-offset"], "0");
    assert_eq!(tus_patch(&b, &id, 0, &content).await.status, 204);
    check_object(garage, &redis, &backend, &prefix, &content).await;
}
