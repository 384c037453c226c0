//! Hostile clients: slowloris, request smuggling shapes, multipart bombs and connection
//! floods. Each must be refused within its limit, never reach the backend, leave no
//! file behind, and not stop porter serving everyone else.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::wire::{exchange, status};

fn upload() -> Upload {
    Upload::multipart("/upload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_stop_uploads_and_header_timeout_closes_it() {
    let backend = Backend::ok().await;
    let config = Config::from(upload())
        .set("server.header_timeout", "2s")
        .set("server.idle_timeout", "5s");
    let porter = Porter::start(backend.addr, config).await;
    let started = Instant::now();
    let mut trickling = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(porter.addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("first bytes");
        trickling.push(s);
    }
    // One more header byte each, every 300 ms: a head that never ends.
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut closed = 0;
            for s in &mut trickling {
                if s.write_all(b"X").await.is_err() {
                    closed += 1;
                }
            }
            if closed == trickling.len() {
                break;
            }
        }
        // A closed connection reads EOF (or a 408) at once.
        let mut ended = 0;
        for s in &mut trickling {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_millis(200), s.read_to_end(&mut buf));
            if read.await.is_ok() {
                ended += 1;
            }
        }
        ended
    });
    let form = Form::new().file("f", "ok.bin", "application/octet-stream", b"fine");
    let reply = request("POST", &porter.url("/upload"))
        .form(form)
        .send()
        .await;
    assert_eq!(reply.status, 200, "an upload during the slowloris");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the upload waited for the slowloris"
    );
    let ended = trickle.await.expect("trickle task");
    assert_eq!(ended, 1000, "connections closed by header_timeout");
    assert_eq!(
        backend.count(),
        1,
        "only the real upload reached the backend"
    );
}

#[tokio::test]
async fn smuggling_shapes_are_400_and_never_forwarded() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, upload()).await;
    let shapes: [(&str, &str); 6] = [
        (
            "two different Content-Lengths",
            "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "a Content-Length list",
            "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
        ),
        (
            "a signed Content-Length",
            "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        ),
        (
            "obs-fold",
            "POST /app HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "a bad chunk size",
            "POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
        ),
        (
            "chunked not last",
            "POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, raw) in shapes {
        let text = exchange(porter.addr, raw.as_bytes()).await;
        assert_eq!(status(&text), "400", "{what}: {text}");
        // The same shapes on an upload route.
        let text = exchange(porter.addr, raw.replace("/app", "/upload").as_bytes()).await;
        assert_eq!(status(&text), "400", "{what} on /upload: {text}");
    }
    assert_eq!(backend.count(), 0, "a smuggling shape reached the backend");
    assert!(porter.wait_empty().await.is_empty());
}

/// Content-Length with Transfer-Encoding: hyper reads such a request by
/// Transfer-Encoding alone and closes the connection after answering (RFC 9112 §6.3
/// allows this instead of a 400, and it drops the Content-Length before porter sees the
/// request, in either header order). Since porter re-frames everything it forwards,
/// what matters is that the request hidden behind the chunked body never runs.
#[tokio::test]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, upload()).await;
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for headers in [
        "Content-Length: 60\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 60",
    ] {
        let raw = format!("POST /app HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n0\r\n\r\n{hidden}");
        let mut s = wire::open(porter.addr, raw.as_bytes()).await;
        let text = wire::read_to_close(&mut s).await;
        let text = text.unwrap_or_else(|| panic!("{headers}: the connection stayed open"));
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{headers}: {text}");
    }
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        !targets.iter().any(|t| t.contains("smuggled")),
        "smuggled: {targets:?}"
    );
    for r in backend.requests() {
        assert!(
            r.body.is_empty(),
            "the chunked body was empty, the backend got {:?}",
            r.body
        );
    }
}

/// A multipart body `head` + `parts` + closing boundary, sent with Content-Length.
fn multipart_request(content_type: &str, body: &[u8]) -> Vec<u8> {
    let ct = format!("Content-Type: {content_type}");
    let mut out = wire::head("POST", "/upload", &[&ct], body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn multipart_bombs_get_clean_4xx() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, upload()).await;
    let tiny = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n".repeat(10_000);
    let huge_head = format!(
        "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\nX-Pad: {}\r\n\r\nx\r\n--B--\r\n",
        "p".repeat(1 << 20)
    );
    let cases: [(&str, &str, String, &str); 5] = [
        (
            "10 000 tiny parts",
            "multipart/form-data; boundary=B",
            tiny + "--B--\r\n",
            "413",
        ),
        (
            "a 1 MiB part header",
            "multipart/form-data; boundary=B",
            huge_head,
            "400",
        ),
        (
            "no boundary parameter",
            "multipart/form-data",
            "--B--\r\n".into(),
            "400",
        ),
        (
            "two boundary parameters",
            "multipart/form-data; boundary=B; boundary=C",
            "--B--\r\n".into(),
            "400",
        ),
        (
            "a boundary that never comes",
            "multipart/form-data; boundary=B",
            "n".repeat(4 << 20),
            "400",
        ),
    ];
    for (what, ct, body, want) in cases {
        let text = exchange(porter.addr, &multipart_request(ct, body.as_bytes())).await;
        assert_eq!(
            status(&text),
            want,
            "{what}: {}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.contains("\"accepted\":false"),
            "{what}: no JSON error: {text}"
        );
    }
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty(), "files left behind");
}

/// A never-ending preamble streamed to the real binary: answered 400 long before the
/// end of the body (the client, writing on, reads it while it sends), and porter's peak
/// memory stays far below what it was sent. (porter then reads and discards the rest
/// for up to 10 s, like nginx's lingering close, so the client sees the 400 instead of
/// a reset.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_preamble_is_refused_in_bounded_memory() {
    let backend = Backend::ok().await;
    let served = Served::start(backend.addr, upload());
    let s = TcpStream::connect(served.addr()).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let total: u64 = 256 << 20;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (sent, answered) = (sent.clone(), answered.clone());
        tokio::spawn(async move {
            let head = format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n\
                 Content-Length: {total}\r\n\r\n"
            );
            wr.write_all(head.as_bytes()).await.expect("head");
            let chunk = vec![b'n'; 64 << 10];
            while sent.load(std::sync::atomic::Ordering::SeqCst) < total
                && !answered.load(std::sync::atomic::Ordering::SeqCst)
            {
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
        .await
        .expect("an answer within 30 s")
        .expect("read the answer");
    let at = sent.load(std::sync::atomic::Ordering::SeqCst);
    answered.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = writer.await;
    let text = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status(&text), "400", "{text}");
    assert!(
        at < total / 4,
        "the 400 came only after {at} of {total} bytes"
    );
    let hwm = served.proc.memory_kib("VmHWM");
    assert!(
        hwm < 64 << 10,
        "porter peaked at {hwm} KiB for a bounded parse"
    );
    assert_eq!(backend.count(), 0);
}

/// A client that goes on sending after its upload was refused keeps a lingering close
/// busy (porter reads and drops its bytes so it sees the 413, not a reset), but not
/// the shutdown: on SIGTERM porter stops lingering and exits long before the 20 s its
/// grace would allow, although the client never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_does_not_hold_the_shutdown() {
    let backend = Backend::ok().await;
    let config =
        Config::from(Upload::raw("/raw").max_file_size("1KiB")).set("server.shutdown_grace", "20s");
    let mut served = Served::start(backend.addr, config);
    let mut s = TcpStream::connect(served.addr()).await.expect("connect");
    s.write_all(b"PUT /raw/f.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .expect("head");
    let head = wire::read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (_rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..300 {
            if wr.write_all(&[b'x'; 512]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !trickle.is_finished(),
        "porter lingers: the client can still send"
    );
    served.proc.signal(libc::SIGTERM);
    let exited = tokio::task::block_in_place(|| served.proc.wait_exit(10));
    trickle.abort();
    assert!(
        exited.is_some_and(|s| s.success()),
        "porter waited on a lingering client: {exited:?}"
    );
}

#[tokio::test]
async fn max_connections_holds() {
    let backend = Backend::ok().await;
    let config = Config::new().set("server.max_connections", 8);
    let porter = Porter::start(backend.addr, config).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(porter.addr).await.expect("connect");
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.expect("answer");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "a connection within the limit"
        );
        held.push(s);
    }
    // The ninth is not served while eight are open...
    let mut ninth = TcpStream::connect(porter.addr).await.expect("connect");
    ninth
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(700), ninth.read(&mut buf)).await;
    assert!(
        !matches!(early, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200")),
        "a ninth connection was served over max_connections = 8"
    );
    // ...and is once one of them leaves.
    drop(held.pop());
    let late = tokio::time::timeout(Duration::from_secs(5), ninth.read(&mut buf)).await;
    let n = late.expect("served after a slot freed").expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}
