//! Hostile load (SECURITY.md, "Bounds per stream and per client"): clients that open
//! resumable uploads they never finish, or announce more than the disk holds, trickle
//! bodies a byte at a time, or open HTTP/2 streams they never read.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

const TUS: &str = "[[upload]]\npath = \"/files\"\nkind = \"tus\"\nnotify = \"/done\"\nmax_file_size = \"100GiB\"\n";

async fn tus_create(porter: &Porter, len: u64, headers: &[(&str, &str)]) -> Reply {
    let mut req = request("POST", &porter.url("/files"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await
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
    let porter = Porter::start_with(
        &format!(
            "[backend]\nurl = \"http://{}\"\n[storage]\nmin_free = {min_free}\n",
            backend.addr
        ),
        &format!(
            "{TUS}[[upload]]\npath = \"/c\"\nkind = \"chunked\"\ncomplete = \"/cd/\"\nmax_file_size = \"100GiB\"\n\
             [[upload]]\npath = \"/r\"\nkind = \"nginx-resumable\"\nmax_file_size = \"100GiB\"\n"
        ),
    )
    .await;
    let big = 50u64 << 30;
    assert_eq!(tus_create(&porter, big, &[]).await.status, 507);
    let draft = send(
        request("POST", &porter.url("/files"))
            .header("upload-draft-interop-version", "6")
            .header("upload-complete", "?0")
            .header("upload-length", big)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(draft.status, 507);
    let (ct, body) = Form::new()
        .file("file", "a.bin", "application/octet-stream", b"abc")
        .finish();
    let chunked = send(
        request("POST", &porter.url("/c"))
            .header("content-type", ct)
            .header("content-range", format!("bytes 0-2/{big}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(chunked.status, 507);
    let nginx = send(
        request("POST", &porter.url("/r"))
            .header("x-content-range", format!("bytes 0-2/{big}"))
            .header("x-session-id", "a-session-of-16-chars")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap(),
    )
    .await;
    assert_eq!(nginx.status, 507);
    assert!(files_under(&porter.temp()).is_empty(), "nothing stored");
    assert_eq!(tus_create(&porter, 1 << 20, &[]).await.status, 201);
}

/// One client may hold `max_incomplete_per_client` unfinished uploads (429 beyond,
/// with Retry-After), across protocols; finishing or cancelling one frees its place,
/// and the clients `authorize` names are counted apart.
#[tokio::test]
async fn unfinished_uploads_are_capped_per_client() {
    let backend = Backend::start(|r| {
        let mut resp = answer(200, "{}");
        if r.target.starts_with("/auth")
            && let Some(who) = r.header("authorization")
        {
            resp.headers_mut()
                .insert("x-porter-client-id", who.parse().unwrap());
        }
        resp
    })
    .await;
    let porter = Porter::start(
        backend.addr,
        &format!(
            "[limits]\nmax_incomplete_per_client = 3\n{TUS}\
             [[upload]]\npath = \"/resumable\"\nkind = \"nginx-resumable\"\n\
             [[upload]]\npath = \"/a\"\nkind = \"tus\"\nnotify = \"/done\"\nauthorize = \"/auth\"\n"
        ),
    )
    .await;
    let mut urls = Vec::new();
    for _ in 0..2 {
        let r = tus_create(&porter, 10, &[]).await;
        assert_eq!(r.status, 201);
        urls.push(r.headers["location"].to_str().unwrap().to_string());
    }
    let seg = crate::nginx_resumable::segment(&porter, "capped-session-0001", b"abc", 0, 10);
    assert_eq!(seg.await.status, 201, "the third, another protocol");
    let r = tus_create(&porter, 10, &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // Finish one: a place is free.
    let r = send(
        request("PATCH", &urls[0])
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(Full::new(Bytes::from_static(b"0123456789")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(tus_create(&porter, 10, &[]).await.status, 201);
    assert_eq!(tus_create(&porter, 10, &[]).await.status, 429);
    // Cancel one: a place is free.
    let r = send(
        request("DELETE", &urls[1])
            .header("tus-resumable", "1.0.0")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(tus_create(&porter, 10, &[]).await.status, 201);
    // Clients the app names through authorize are counted apart from the address.
    for user in ["alice", "bob"] {
        for i in 0..4 {
            let r = send(
                request("POST", &porter.url("/a"))
                    .header("tus-resumable", "1.0.0")
                    .header("upload-length", 10)
                    .header("authorization", user)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, if i < 3 { 201 } else { 429 }, "{user} #{i}");
        }
    }
}

/// Sends `n` bytes one at a time, `every` apart, then ends the body; returns the
/// status porter answered (0: none).
async fn trickle(porter: &Porter, path: &str, n: usize, every: std::time::Duration) -> u16 {
    trickle_url(&porter.url(path), n, every).await
}

/// Bodies trickled a byte at a time no longer hold upload slots for `idle_timeout` per
/// byte: they are cut once the grace is spent (408), on upload routes and passthrough,
/// and the slots they held take real uploads again; a fast body may still pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_at_the_minimum_rate() {
    let backend = Backend::ok().await;
    let porter = Porter::start(
        backend.addr,
        "[server]\nidle_timeout = \"30s\"\n\
         [limits]\nmin_body_rate = \"100B\"\nmin_body_rate_grace = \"2s\"\nmax_concurrent_uploads = 2\nrequest_buffer = \"4KiB\"\n\
         [[upload]]\npath = \"/raw\"\nkind = \"raw\"\n",
    )
    .await;
    let started = std::time::Instant::now();
    let every = std::time::Duration::from_millis(400);
    let slow = [
        tokio::spawn({
            let url = porter.url("/raw/a.bin");
            async move { trickle_url(&url, 100, every).await }
        }),
        tokio::spawn({
            let url = porter.url("/raw/b.bin");
            async move { trickle_url(&url, 100, every).await }
        }),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = send(
        request("PUT", &porter.url("/raw/c.bin"))
            .body(Full::new(Bytes::from_static(b"now")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503, "both slots held by the trickles");
    for t in slow {
        assert_eq!(t.await.unwrap(), 408);
    }
    let cut = started.elapsed();
    assert!(
        cut < std::time::Duration::from_secs(10),
        "cut after {cut:?}"
    );
    let r = send(
        request("PUT", &porter.url("/raw/c.bin"))
            .body(Full::new(Bytes::from_static(b"now")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "the slots are free again");
    // Passthrough bodies too (beyond request_buffer they stream).
    assert_eq!(trickle(&porter, "/app/form", 100, every).await, 408);
    // A body that sends fast and then pauses a little has credit for it.
    let (tx, body) = fed();
    let feed = tokio::spawn(async move {
        tx.send(Bytes::from(vec![7u8; 10_000])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tx.send(Bytes::from_static(b"end")).await.unwrap();
    });
    assert_eq!(
        send_fed(request("PUT", &porter.url("/raw/d.bin")), body).await,
        200
    );
    feed.await.unwrap();
}

async fn trickle_url(url: &str, n: usize, every: std::time::Duration) -> u16 {
    let (tx, body) = fed();
    let feed = tokio::spawn(async move {
        for _ in 0..n {
            if tx.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let status = send_fed(request("PUT", url), body).await;
    feed.abort();
    status
}

/// porter as its own process, so its memory and descriptors can be read.
struct Served {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(backend: std::net::SocketAddr, extra: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("porter.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n[backend]\nurl = \"http://{backend}\"\n\
                 [storage]\nroot = \"root\"\ntemp = \"tmp\"\nmin_free = 0\n\
                 [[internal]]\nprefix = \"/protected/\"\nroot = \"files\"\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        let mut proc = Proc::serve(&config);
        let port = proc.port();
        Served { proc, port, dir }
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Open descriptors that are not sockets (files, pipes).
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.child.id()))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| !t.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
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

/// Waits (at most `secs`) until `f` holds; returns whether it did.
async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    f()
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
    let backend = Backend::start(|_| {
        let mut r = answer(200, "");
        r.headers_mut()
            .insert("x-accel-redirect", "/protected/big.bin".parse().unwrap());
        r
    })
    .await;
    let served = Served::start(
        backend.addr,
        "idle_timeout = \"3s\"\nkeepalive_timeout = \"3s\"\n",
    );
    std::fs::write(served.dir.path().join("files/big.bin"), data(32 << 20, 1)).unwrap();
    // Warm up: one download read whole.
    let r = send(
        request("GET", &served.url("/dl"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.body.len(), 32 << 20);
    let (base_rss, base_fds) = (served.rss(), served.fds());
    let (send, conn) = h2(served.port, 0).await;
    let url = served.url("/dl");
    let streams = open_streams(&send, 200, || {
        request("GET", &url).body(Full::default()).unwrap()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let grown = served.rss().saturating_sub(base_rss);
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
        eventually(10, || served.fds() <= base_fds + 4).await,
        "descriptors back to baseline: {} vs {base_fds}",
        served.fds()
    );
    drop(send);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
    assert!(closed.is_ok(), "the idle connection was closed");
}

/// A passthrough app whose every answer is 4 MiB, behind porter (its own process).
async fn passthrough_pair() -> (Backend, Served) {
    let big = Bytes::from(data(4 << 20, 2));
    let backend = Backend::start(move |_| http::Response::new(Full::new(big.clone()))).await;
    let served = Served::start(
        backend.addr,
        "idle_timeout = \"4s\"\nkeepalive_timeout = \"4s\"\n\
         [limits]\nmin_body_rate = \"100KiB\"\nmin_body_rate_grace = \"3s\"\n",
    );
    let r = send(
        request("GET", &served.url("/warm"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
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
    let base_rss = served.rss();
    let (senders, replies) = stalled_posts(&served, 100, (1 << 20) - 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let grown = served.rss().saturating_sub(base_rss);
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
    let base_rss = served.rss();
    let (send_down, conn) = h2(served.port, 0).await;
    let down = served.url("/big");
    let unread = open_streams(&send_down, 100, || {
        request("GET", &down).body(Full::default()).unwrap()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let grown = served.rss().saturating_sub(base_rss);
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
    let closed = || backend.closed.load(std::sync::atomic::Ordering::SeqCst);
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
        let req = request("POST", &served.url("/form")).body(body).unwrap();
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
