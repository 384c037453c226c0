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
