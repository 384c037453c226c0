//! Scale-out (docs/guides/scaling-out.md): two porter instances share resumable uploads through Redis
//! (state, leased locks, takeovers) and the Garage cluster of `s3.rs` (data), so
//! consecutive requests of one upload may land on either instance.

use super::s3::{Garage, object, prefix, wait_clean};
use crate::support::peers::{sample, tuspy};
use crate::support::*;
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

/// What instances share: the Garage cluster (under a fresh prefix), a Redis of their
/// own, and one backend.
struct Cluster {
    garage: &'static Garage,
    redis: RedisServer,
    backend: Backend,
    prefix: String,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster {
            garage: tokio::task::spawn_blocking(Garage::shared).await.unwrap(),
            redis: RedisServer::start(),
            backend: Backend::ok().await,
            prefix: prefix(),
        }
    }

    /// The tables instances share: S3 under the prefix, Redis, short leases.
    fn config(&self) -> Config {
        self.garage
            .storage(&self.prefix)
            .set("state.url", self.redis.url.as_str())
            .set("state.lock_lease", "2s")
    }

    /// Checks the one metadata request and the object it names; then that nothing
    /// partial is left in the bucket or in Redis.
    async fn check_object(&self, content: &[u8]) {
        let form = self.backend.only_form();
        assert_eq!(one(&form, "file.size"), content.len().to_string());
        assert_eq!(one(&form, "file.sha256"), sha256_hex(content));
        assert_eq!(one(&form, "file.path"), "", "no local path");
        assert_eq!(one(&form, "file.bucket"), self.garage.bucket);
        let key = one(&form, "file.key");
        assert!(key.starts_with(&self.prefix), "{key}");
        let s3 = self.garage.client();
        assert!(object(&s3, key).await == content, "the object's bytes");
        let partial = format!("{}partial/", self.prefix);
        assert!(
            s3.list(&partial).await.unwrap().is_empty(),
            "pending objects left"
        );
        assert!(
            s3.multipart_uploads(&self.prefix).await.unwrap().is_empty(),
            "multipart uploads left"
        );
        assert!(self.redis.keys("porter:data:*").is_empty());
        wait_unlocked(&self.redis, "*").await;
    }
}

/// Two instances of porter in one `Cluster`.
struct Pair {
    cluster: Cluster,
    a: Porter,
    b: Porter,
}

impl Pair {
    async fn start(routes: impl Into<Config>) -> Pair {
        let cluster = Cluster::start().await;
        let config = cluster.config().merge(routes.into());
        let a = Porter::start(cluster.backend.addr, config.clone()).await;
        let b = Porter::start(cluster.backend.addr, config).await;
        Pair { cluster, a, b }
    }
}

impl std::ops::Deref for Pair {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// Waits (bounded by more than the 2 s lease) until no lock matches `id`.
async fn wait_unlocked(redis: &RedisServer, id: &str) {
    let pattern = format!("porter:lock:{id}");
    let free = eventually(10, || redis.keys(&pattern).is_empty()).await;
    assert!(free, "{pattern} is still held");
}

/// Waits (bounded) until an instance holds the lock of upload `id`.
async fn wait_locked(redis: &RedisServer, id: &str) {
    let pattern = format!("porter:lock:{id}");
    let held = eventually(10, || !redis.keys(&pattern).is_empty()).await;
    assert!(held, "A never took the lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn tuspy_chunks_alternating_between_two_instances_make_one_object() {
    let p = Pair::start(tus::route()).await;
    // 13 MiB in 2 MiB chunks over 5 MiB parts: tails and parts change hands.
    let (file, content) = sample(p.a.dir.path(), 13 << 20);
    let alternate = format!("alternate:{}", p.b.url("/files"));
    tuspy(&p.a.url("/files"), &file, 2 << 20, &alternate).await;
    let form = p.backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    p.check_object(&content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_mid_patch_leaves_the_upload_to_the_other() {
    use tokio::io::AsyncWriteExt;
    let cluster = Cluster::start().await;
    // porter as processes on S3 and Redis, so one can be killed with SIGKILL.
    let config = cluster.config().upload(tus::route());
    let mut a = Served::start(cluster.backend.addr, config.clone());
    let b = Served::start(cluster.backend.addr, config);
    let (file, content) = sample(a.dir.path(), 12 << 20);
    let url = tuspy(&a.url("/files"), &file, 2 << 20, "partial:2").await;
    let id = tus::id(&url);
    // A PATCH that crosses the first part boundary dies with instance A, lock held.
    let head = tus::patch_head(&format!("/files/{id}"), 4 << 20, 4 << 20);
    let mut c = wire::open(a.addr(), head.as_bytes()).await;
    c.write_all(&content[4 << 20..7 << 20]).await.unwrap();
    wait_locked(&cluster.redis, id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.proc.kill9();
    drop(c);
    // A's lock is not released by anyone: it runs out with its lease.
    wait_unlocked(&cluster.redis, id).await;
    // B knows the upload, at the last acknowledged offset, and takes the rest.
    let on_b = b.url(&format!("/files/{id}"));
    assert_eq!(tus::offset(&on_b).await, 4 << 20);
    tuspy(&b.url("/files"), &file, 2 << 20, &format!("resume:{on_b}")).await;
    let form = cluster.backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    cluster.check_object(&content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_resumable_segments_out_of_order_on_both_instances() {
    let route = Upload::nginx_resumable("/resumable")
        .set("notify", "/uploads/done")
        .hashes(&["md5", "sha256"]);
    let p = Pair::start(route).await;
    let content = data(11 << 20, 8);
    let seg = 3 << 20;
    let starts = [9 << 20, 0, 6 << 20, 3 << 20];
    for (i, start) in starts.into_iter().enumerate() {
        let end = (start + seg).min(content.len());
        let at = if i % 2 == 0 { &p.a } else { &p.b };
        let part = &content[start..end];
        let r = nginx::segment(
            &at.url("/resumable"),
            "shared-session-01",
            part,
            start,
            content.len(),
        )
        .send()
        .await;
        let want = if i + 1 == starts.len() { 200 } else { 201 };
        assert_eq!(r.status, want, "segment {i}: {:?}", r.body);
    }
    let form = p.backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    p.check_object(&content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_alternate_between_instances_and_complete_on_either() {
    let p = Pair::start(chunked::route().max_file_size("32MiB")).await;
    let content = data(9 << 20, 9);
    let size = 2 << 20;
    let mut id: Option<String> = None;
    for (i, start) in (0..content.len()).step_by(size).enumerate() {
        let end = (start + size).min(content.len());
        let at = if i % 2 == 0 { &p.a } else { &p.b };
        let range = (start, end - 1, content.len());
        let r = chunked::send_chunk(at, &content[start..end], Some(range), id.as_deref()).await;
        assert_eq!(r.status, 200, "chunk {i}: {:?}", r.body);
        id.get_or_insert(chunked::upload_id(&r));
    }
    let fields = format!("upload_id={}&md5={}", id.unwrap(), md5_hex(&content));
    let r = chunked::send_complete(&p.b, &fields).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    p.check_object(&content).await;
}

/// No state, data record or lock of any upload is left in Redis.
fn no_upload_keys(redis: &RedisServer) {
    for pattern in ["porter:up:*", "porter:data:*", "porter:lock:*"] {
        assert!(redis.keys(pattern).is_empty(), "{:?}", redis.keys(pattern));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_and_expired_shared_uploads_leave_nothing_behind() {
    let p = Pair::start(tus::route().expire("1s")).await;
    let content = data(7 << 20, 10);
    // Termination on B of an upload A holds a part and a tail of.
    let url = tus::create(&p.a.url("/files"), 20u64 << 20).await;
    assert_eq!(tus::patch(&url, 0, &content).await.status, 204);
    let s3 = p.garage.client();
    assert_eq!(s3.multipart_uploads(&p.prefix).await.unwrap().len(), 1);
    let on_b = p.b.url(&format!("/files/{}", tus::id(&url)));
    assert_eq!(tus::delete(&on_b).await.status, 204);
    wait_clean(&s3, &p.prefix).await;
    no_upload_keys(&p.redis);
    // Expiry: `porter gc` (a third process) collects it across instances.
    let url = tus::create(&p.b.url("/files"), 20u64 << 20).await;
    assert_eq!(tus::patch(&url, 0, &content).await.status, 204);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let text = porter_gc(&p.a.config());
    assert!(text.contains("1 expired resumable upload"), "{text}");
    wait_clean(&s3, &p.prefix).await;
    no_upload_keys(&p.redis);
    assert!(p.backend.requests().is_empty());
}

/// The IETF draft's takeover across instances: an append stalled on A is stopped by a
/// HEAD on B (over Redis), keeps what it wrote, and B finishes the upload. B follows
/// A's progress through Redis too.
#[tokio::test(flavor = "multi_thread")]
async fn a_draft_request_on_one_instance_takes_over_an_append_stalled_on_the_other() {
    use tokio::io::AsyncWriteExt;
    let p = Pair::start(Config::from(tus::route()).progress("/progress")).await;
    let content = data(7 << 20, 12);
    let len = content.len().to_string();
    let creation = [("upload-complete", "?0"), ("upload-length", len.as_str())];
    let r = draft::create(&p.a.url("/files"), &creation, b"").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = tus::id(&r.location()).to_string();
    let head = draft::append_head(&format!("/files/{id}"), content.len());
    let mut s = wire::open(p.a.addr, head.as_bytes()).await;
    let sent = 6 << 20;
    s.write_all(&content[..sent]).await.unwrap();
    let on_b = p.b.url(&format!("/files/{id}"));
    wait_received(&p.b, &id, sent as u64).await;
    // A still holds the upload; B's HEAD asks it to stop rather than wait for it.
    let r = draft::head(&on_b).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let offset: u64 = r.header("upload-offset").parse().unwrap();
    assert_eq!(offset, sent as u64, "A kept what it wrote");
    let answer = wire::read_until(&mut s, "\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let r = draft::append(&on_b, offset, true, &content[sent..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    p.check_object(&content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_and_porter_check_online_reach_redis() {
    let cluster = Cluster::start().await;
    let mport = free_port();
    let config = cluster.config().metrics(mport).upload(tus::route());
    let a = Porter::start(cluster.backend.addr, config).await;
    wait_listening(mport).await;
    let check = || porter_check(&a.config(), true);
    assert_eq!(check().code, Some(0));
    let ready = || request("GET", &format!("http://127.0.0.1:{mport}/readyz")).send();
    assert_eq!(ready().await.status, 200);
    drop(cluster.redis);
    let checked = check();
    assert_eq!(checked.code, Some(1));
    assert!(checked.stderr.contains("state.url"), "{}", checked.stderr);
    let r = ready().await;
    assert_eq!(r.status, 503);
    assert!(
        String::from_utf8_lossy(&r.body).contains("shared state"),
        "{:?}",
        r.body
    );
    // Without Redis, a resumable request is refused with 503, not a lost upload.
    let r = tus::creation(&a.url("/files"), 10).send().await;
    assert_eq!(r.status, 503, "{:?}", r.body);
}

#[test]
fn porter_check_validates_state_and_masks_its_password() {
    let garage = Garage::shared();
    let dir = tempfile::tempdir().unwrap();
    let check = |config: Config| {
        let conf = dir.path().join("porter.toml");
        std::fs::write(&conf, config.text()).unwrap();
        porter_check(&conf, false).all()
    };
    let base = || Config::new().set("backend.url", "http://127.0.0.1:9");
    // [state] over local storage is refused; so are a bad URL and a short lease.
    let (code, text) = check(
        base()
            .set("state.url", "http://x")
            .set("state.lock_lease", "100ms"),
    );
    assert_eq!(code, Some(1), "{text}");
    for key in ["state:", "state.url", "state.lock_lease"] {
        assert!(text.contains(key), "{key}: {text}");
    }
    let (code, text) = check(
        base()
            .merge(garage.storage("c/"))
            .set("state.url", "redis://:hunter2@127.0.0.1:6379/0")
            .upload(tus::route()),
    );
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
    use tokio::io::AsyncWriteExt;
    let p = Pair::start(tus::route()).await;
    let content = data(9 << 20, 14);
    let url = tus::create(&p.a.url("/files"), content.len()).await;
    let id = tus::id(&url);
    let head = tus::patch_head(tus::path(&url), 0, content.len());
    let mut c = wire::open(p.a.addr, head.as_bytes()).await;
    c.write_all(&content[..3 << 20]).await.unwrap();
    wait_locked(&p.redis, id).await;
    p.redis.cli(&["DEL", &format!("porter:lock:{id}")]);
    // A notices at its next renewal (lease/3) and stops; its answer is an error.
    let answer = wire::answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 5"), "{answer}");
    // Nothing A received was counted: B resumes at 0 and finishes.
    let on_b = p.b.url(&format!("/files/{id}"));
    assert_eq!(tus::offset(&on_b).await, 0);
    assert_eq!(tus::patch(&on_b, 0, &content).await.status, 204);
    p.check_object(&content).await;
}
