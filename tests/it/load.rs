//! Hostile load (SECURITY.md, "Bounds per stream and per client"): clients that open
//! resumable uploads they never finish, or announce more than the disk holds, trickle
//! bodies a byte at a time, or open HTTP/2 streams they never read.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

fn tus_route() -> Upload {
    Upload::tus("/files", "/done").max_file_size("100GiB")
}

async fn tus_create(porter: &Porter, len: u64) -> Reply {
    tus::creation(&porter.url("/files"), len).send().await
}

/// Free bytes on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df's answer")
}

/// A creation that names a length the disk cannot hold above `min_free` is 507 before
/// anything is stored, in every resumable protocol.
#[tokio::test]
async fn creations_that_would_cross_min_free_are_507() {
    let backend = Backend::ok().await;
    let probe = tempfile::tempdir().unwrap();
    let min_free = free_bytes(probe.path()).saturating_sub(2 << 30);
    let routes = tus_route()
        .and(Upload::chunked("/c", "/cd/").max_file_size("100GiB"))
        .upload(Upload::nginx_resumable("/r").max_file_size("100GiB"))
        .set("storage.min_free", min_free as i64);
    let porter = Porter::start(backend.addr, routes).await;
    let big = 50u64 << 30;
    assert_eq!(tus_create(&porter, big).await.status, 507);
    let creation = [
        ("upload-complete", "?0"),
        ("upload-length", &big.to_string()),
    ];
    let r = draft::create(&porter.url("/files"), &creation, b"").await;
    assert_eq!(r.status, 507);
    let file = ("a.bin", "application/octet-stream");
    let r = chunked::chunk(
        &porter.url("/c"),
        file,
        b"abc",
        Some((0, 2, big as usize)),
        None,
    )
    .send()
    .await;
    assert_eq!(r.status, 507);
    let r = nginx::segment(
        &porter.url("/r"),
        "a-session-of-16-chars",
        b"abc",
        0,
        big as usize,
    )
    .send()
    .await;
    assert_eq!(r.status, 507);
    assert!(files_under(&porter.temp()).is_empty(), "nothing stored");
    assert_eq!(tus_create(&porter, 1 << 20).await.status, 201);
}

/// One client may hold `max_incomplete_per_client` unfinished uploads (429 beyond,
/// with Retry-After), across protocols; finishing or cancelling one frees its place,
/// and the clients `authorize` names are counted apart.
#[tokio::test]
async fn unfinished_uploads_are_capped_per_client() {
    // The app names the client of each upload by its Authorization.
    let backend = backend()
        .route_fn("/auth", |r| match r.header("authorization") {
            Some(who) => answer_with(200, "{}", "x-porter-client-id", who),
            None => answer(200, "{}"),
        })
        .reply(200, "{}")
        .run()
        .await;
    let routes = tus_route()
        .and(Upload::nginx_resumable("/resumable"))
        .upload(Upload::tus("/a", "/done").authorize("/auth"))
        .set("limits.max_incomplete_per_client", 3);
    let porter = Porter::start(backend.addr, routes).await;
    let mut urls = Vec::new();
    for _ in 0..2 {
        urls.push(tus::create(&porter.url("/files"), 10).await);
    }
    let seg = nginx::segment(
        &porter.url("/resumable"),
        "capped-session-0001",
        b"abc",
        0,
        10,
    );
    assert_eq!(seg.send().await.status, 201, "the third, another protocol");
    let r = tus_create(&porter, 10).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // Finish one: a place is free.
    assert_eq!(tus::patch(&urls[0], 0, b"0123456789").await.status, 204);
    assert_eq!(tus_create(&porter, 10).await.status, 201);
    assert_eq!(tus_create(&porter, 10).await.status, 429);
    // Cancel one: a place is free.
    assert_eq!(tus::delete(&urls[1]).await.status, 204);
    assert_eq!(tus_create(&porter, 10).await.status, 201);
    // Clients the app names through authorize are counted apart from the address.
    for user in ["alice", "bob"] {
        for i in 0..4 {
            let r = tus::creation(&porter.url("/a"), 10)
                .header("authorization", user)
                .send()
                .await;
            assert_eq!(r.status, if i < 3 { 201 } else { 429 }, "{user} #{i}");
        }
    }
}

/// Sends `n` bytes one at a time, `every` apart, then ends the body; returns the
/// status porter answered (0: none).
async fn trickle(url: String, n: usize, every: std::time::Duration) -> u16 {
    let (tx, body) = fed();
    let feed = tokio::spawn(async move {
        for _ in 0..n {
            if tx.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let status = request("PUT", &url).send_fed(body).await;
    feed.abort();
    status
}

/// Bodies trickled a byte at a time no longer hold upload slots for `idle_timeout` per
/// byte: they are cut once the grace is spent (408), on upload routes and passthrough,
/// and the slots they held take real uploads again; a fast body may still pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_at_the_minimum_rate() {
    let backend = Backend::ok().await;
    let config = Config::from(Upload::raw("/raw"))
        .set("server.idle_timeout", "30s")
        .set("limits.min_body_rate", "100B")
        .set("limits.min_body_rate_grace", "2s")
        .set("limits.max_concurrent_uploads", 2)
        .set("limits.request_buffer", "4KiB");
    let porter = Porter::start(backend.addr, config).await;
    let started = std::time::Instant::now();
    let every = std::time::Duration::from_millis(400);
    let slow = [
        tokio::spawn(trickle(porter.url("/raw/a.bin"), 100, every)),
        tokio::spawn(trickle(porter.url("/raw/b.bin"), 100, every)),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let put = || request("PUT", &porter.url("/raw/c.bin")).body("now").send();
    assert_eq!(put().await.status, 503, "both slots held by the trickles");
    for t in slow {
        assert_eq!(t.await.unwrap(), 408);
    }
    let cut = started.elapsed();
    assert!(
        cut < std::time::Duration::from_secs(10),
        "cut after {cut:?}"
    );
    assert_eq!(put().await.status, 200, "the slots are free again");
    // Passthrough bodies too (beyond request_buffer they stream).
    assert_eq!(trickle(porter.url("/app/form"), 100, every).await, 408);
    // A body that sends fast and then pauses a little has credit for it.
    let (tx, body) = fed();
    let feed = tokio::spawn(async move {
        tx.send(Bytes::from(vec![7u8; 10_000])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tx.send(Bytes::from_static(b"end")).await.unwrap();
    });
    let put = request("PUT", &porter.url("/raw/d.bin")).send_fed(body);
    assert_eq!(put.await, 200);
    feed.await.unwrap();
}

/// porter as its own process, so its memory and descriptors can be read, serving
/// X-Accel-Redirect files from its `files` folder.
fn served(backend: std::net::SocketAddr, config: Config) -> Served {
    let served = Served::start(backend, config.internal("/protected/", "files"));
    std::fs::create_dir_all(served.dir.path().join("files")).unwrap();
    served
}

/// porter's resident memory, in bytes.
fn rss(served: &Served) -> u64 {
    served.proc.memory_kib("VmRSS") * 1024
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 (prior knowledge) connection whose streams' receive windows start at
/// `window` bytes; the task ends when the connection does.
async fn h2(port: u16, window: u32) -> (H2, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(window)
            .adaptive_window(false)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// Opens `n` streams of `req()` and keeps the responses, unread; returns them.
async fn open_streams(
    send: &H2,
    n: usize,
    req: impl Fn() -> http::Request<Full<Bytes>>,
) -> Vec<tokio::task::JoinHandle<Option<http::Response<hyper::body::Incoming>>>> {
    (0..n)
        .map(|_| {
            let mut s = send.clone();
            let r = req();
            tokio::spawn(async move {
                s.ready().await.ok()?;
                s.send_request(r).await.ok()
            })
        })
        .collect()
}

/// A stream body's next frame: `Some(true)` data, `Some(false)` reset, `None` pending.
async fn next_frame(resp: &mut http::Response<hyper::body::Incoming>) -> Option<bool> {
    use http_body_util::BodyExt;
    match tokio::time::timeout(std::time::Duration::from_millis(50), resp.frame()).await {
        Ok(Some(Ok(_))) => Some(true),
        Ok(_) => Some(false),
        Err(_) => None,
    }
}

/// 200 HTTP/2 streams of a large X-Accel-Redirect file whose windows stay shut: porter
/// reads no file bytes for them (its memory grows by far less than 64 MiB), resets
/// each once it made no progress for `idle_timeout`, gives back its descriptors, and
/// closes the connection once nothing is left on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_downloads_that_never_read_hold_little_and_are_reset() {
    let backend = backend()
        .respond(|_| accel("/protected/big.bin"))
        .run()
        .await;
    let timeouts = Config::new()
        .set("server.idle_timeout", "3s")
        .set("server.keepalive_timeout", "3s");
    let served = served(backend.addr, timeouts);
    std::fs::write(served.dir.path().join("files/big.bin"), data(32 << 20, 1)).unwrap();
    // Warm up: one download read whole.
    let r = request("GET", &served.url("/dl")).send().await;
    assert_eq!(r.body.len(), 32 << 20);
    let (base_rss, base_fds) = (rss(&served), served.proc.file_fds());
    let (send, conn) = h2(served.port, 0).await;
    let url = served.url("/dl");
    let streams = open_streams(&send, 200, || request("GET", &url).build()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let grown = rss(&served).saturating_sub(base_rss);
    eprintln!(
        "RSS grew by {} KiB with 200 stalled download streams",
        grown / 1024
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    let mut heads = Vec::new();
    for s in streams {
        if let Ok(Ok(Some(resp))) =
            tokio::time::timeout(std::time::Duration::from_secs(20), s).await
        {
            heads.push(resp);
        }
    }
    assert!(heads.len() >= 128, "{} heads", heads.len());
    // Each stream is reset once it made no progress for idle_timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut reset = 0;
    for h in &mut heads {
        while std::time::Instant::now() < deadline {
            match next_frame(h).await {
                Some(false) => {
                    reset += 1;
                    break;
                }
                Some(true) => panic!("a frame came through a shut window"),
                None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    assert_eq!(reset, heads.len(), "every stalled stream was reset");
    assert!(
        eventually(10, || served.proc.file_fds() <= base_fds + 4).await,
        "descriptors back to baseline: {} vs {base_fds}",
        served.proc.file_fds()
    );
    drop(send);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
    assert!(closed.is_ok(), "the idle connection was closed");
}

/// A passthrough app whose every answer is 4 MiB, behind porter (its own process).
async fn passthrough_pair() -> (Backend, Served) {
    let big = Bytes::from(data(4 << 20, 2));
    let backend = backend().reply(200, big).run().await;
    let config = Config::new()
        .set("server.idle_timeout", "4s")
        .set("server.keepalive_timeout", "4s")
        .set("limits.min_body_rate", "100KiB")
        .set("limits.min_body_rate_grace", "3s");
    let served = served(backend.addr, config);
    let r = request("GET", &served.url("/warm")).send().await;
    assert_eq!(r.body.len(), 4 << 20);
    (backend, served)
}

/// 100 HTTP/2 passthrough POSTs on one connection, each stalling one byte short of
/// `request_buffer`: together they hold at most the connection's buffer budget (plus
/// its flow-control window), not 100 × 1 MiB; the stalled bodies are cut (408), or
/// refused (503) when they never got room, and the app never saw any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_buffers_are_bounded_per_connection() {
    let (backend, served) = passthrough_pair().await;
    let before = backend.count();
    let base_rss = rss(&served);
    let (senders, replies) = stalled_posts(&served, 100, (1 << 20) - 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let grown = rss(&served).saturating_sub(base_rss);
    eprintln!(
        "RSS grew by {} KiB with 100 stalled POST streams",
        grown / 1024
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    let mut cut = 0;
    for r in replies {
        if let Ok(Ok(Some(status))) =
            tokio::time::timeout(std::time::Duration::from_secs(30), r).await
        {
            assert!(status == 408 || status == 503, "{status}");
            cut += 1;
        }
    }
    assert_eq!(cut, 100, "every stalled body was cut");
    drop(senders);
    assert_eq!(backend.count(), before, "the app never saw a partial body");
}

/// 100 HTTP/2 passthrough responses of 4 MiB on one connection whose windows stay
/// shut: porter reads ahead at most the connection's budget of them, resets the
/// streams after `idle_timeout`, and lets the app's connections go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_response_buffers_are_bounded_per_connection() {
    let (backend, served) = passthrough_pair().await;
    let base_rss = rss(&served);
    let (send_down, conn) = h2(served.port, 0).await;
    let down = served.url("/big");
    let unread = open_streams(&send_down, 100, || request("GET", &down).build()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let grown = rss(&served).saturating_sub(base_rss);
    eprintln!(
        "RSS grew by {} KiB with 100 unread response streams",
        grown / 1024
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    let mut heads = Vec::new();
    for s in unread {
        if let Ok(Ok(Some(h))) = tokio::time::timeout(std::time::Duration::from_secs(20), s).await {
            heads.push(h);
        }
    }
    assert_eq!(heads.len(), 100);
    let closed = || backend.connections_closed();
    assert!(
        eventually(20, || closed() >= 100).await,
        "the app's connections were let go: {} closed",
        closed()
    );
    drop(send_down);
    drop(heads);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
    assert!(ended.is_ok(), "the connection was closed");
}

/// Opens `n` HTTP/2 POST streams on one connection, each sending `len` bytes and then
/// stalling (its sender kept); returns the senders and the statuses to come.
async fn stalled_posts(
    served: &Served,
    n: usize,
    len: usize,
) -> (
    Vec<tokio::sync::mpsc::Sender<Bytes>>,
    Vec<tokio::task::JoinHandle<Option<u16>>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Fed>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut senders = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..n {
        let (tx, body) = fed();
        let mut s = send.clone();
        let req = http::Request::post(served.url("/form")).body(body).unwrap();
        replies.push(tokio::spawn(async move {
            s.ready().await.ok()?;
            let resp = s.send_request(req).await.ok()?;
            Some(resp.status().as_u16())
        }));
        let feeder = tx.clone();
        tokio::spawn(async move {
            let _ = feeder.send(Bytes::from(vec![b'x'; len])).await;
        });
        senders.push(tx);
    }
    (senders, replies)
}
