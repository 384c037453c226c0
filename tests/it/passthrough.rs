use crate::support::*;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn bodies_stream_both_ways_byte_identical() {
    let backend = backend()
        .respond(|r| {
            let mut resp = answer(200, r.body.clone());
            let h = resp.headers_mut();
            h.insert("x-accel-limit-rate", "10".parse().unwrap());
            h.insert("x-accel-buffering", "no".parse().unwrap());
            h.insert("x-app", "yes".parse().unwrap());
            resp
        })
        .run()
        .await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let payload = data(3 << 20, 7);
    let reply = request("POST", &porter.url("/api/echo?x=1"))
        .header("x-porter-signature", "sha256=forged")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("cookie", "session=abc")
        .body(payload.clone())
        .send()
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), payload.len());
    assert!(reply.body == payload, "response body differs");
    assert_eq!(reply.headers["x-app"], "yes");
    assert!(!reply.headers.contains_key("x-accel-limit-rate"));
    assert!(!reply.headers.contains_key("x-accel-buffering"));
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.target, "/api/echo?x=1");
    assert!(r.body == payload, "backend got different bytes");
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(porter.addr.to_string().as_str())
    );
    assert_eq!(r.header("host"), Some(porter.addr.to_string().as_str()));
    assert_eq!(r.header("cookie"), Some("session=abc"));
    assert!(r.header("x-porter-signature").is_none());
    assert!(r.header("x-hop").is_none());
    porter.stop().await;
}

#[tokio::test]
async fn request_target_passes_exactly_as_sent() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let reply = request("GET", &porter.url("/a/%7Euser/b%2Fc?q=%20x&y"))
        .send()
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.requests()[0].target, "/a/%7Euser/b%2Fc?q=%20x&y");
}

#[tokio::test]
async fn h2c_prior_knowledge_passthrough() {
    let backend = backend().echo().run().await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let payload = data(300_000, 3);
    let file = temp_file(&payload);
    let (status, body) = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &porter.url("/echo"),
    ])
    .await;
    assert_eq!(status, 200);
    assert!(body == payload, "h2c response body differs");
    let r = &backend.requests()[0];
    assert!(r.body == payload);
    assert_eq!(r.header("host"), Some(porter.addr.to_string().as_str()));
}

#[tokio::test]
async fn backend_down_is_502_json() {
    let porter = Porter::start(dead_addr(), Config::new()).await;
    let reply = request("GET", &porter.url("/anything")).send().await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "backend_unavailable");
    assert_eq!(reply.json()["accepted"], false);
}

#[tokio::test]
async fn internal_prefix_is_404_and_never_forwarded() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, Config::new().internal("/protected/", "root")).await;
    for path in [
        "/protected/x",
        "/protected",
        "/a/../protected/x",
        "/%70rotected/x",
    ] {
        let reply = request("GET", &porter.url(path)).send().await;
        assert_eq!(reply.status, 404, "{path}");
    }
    assert_eq!(backend.count(), 0);
    let reply = request("GET", &porter.url("/protectedness")).send().await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn oversized_passthrough_body_is_413_before_forwarding() {
    let backend = Backend::ok().await;
    let limited = Config::new().set("limits.max_body_size", "1KiB");
    let porter = Porter::start(backend.addr, limited).await;
    let reply = request("POST", &porter.url("/form"))
        .body(vec![1u8; 4096])
        .send()
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"], "too_large");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    // A raw backend that insists on `Connection: upgrade`, answers 101, then echoes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).await.is_ok() {
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if !(text.contains("connection: upgrade") && text.contains("upgrade: websocket")) {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let porter = Porter::start(addr, Config::new()).await;
    let mut c = wire::open(porter.addr, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await;
    let head = wire::read_until(&mut c, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn keepalive_outlives_header_timeout() {
    let backend = Backend::ok().await;
    let server = Config::new()
        .set("server.header_timeout", "1s")
        .set("server.keepalive_timeout", "10s");
    let porter = Porter::start(backend.addr, server).await;
    let mut c = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(wire::answer(&mut c).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    }
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn chunked_passthrough_over_max_body_size_is_413() {
    let backend = Backend::ok().await;
    let limits = Config::new()
        .set("limits.max_body_size", "1KiB")
        .set("limits.request_buffer", 0);
    let porter = Porter::start(backend.addr, limits).await;
    let file = temp_file(&vec![b'x'; 64 << 10]);
    let (status, body) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &porter.url("/form"),
    ])
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn slow_passthrough_upload_is_not_a_backend_timeout() {
    let backend = Backend::ok().await;
    let config = Config::new()
        .set("backend.response_timeout", "1s")
        .set("limits.request_buffer", 0);
    let porter = Porter::start(backend.addr, config).await;
    let mut c = wire::open(
        porter.addr,
        &wire::head("POST", "/slow", &[], 5).into_bytes(),
    )
    .await;
    for b in b"hello" {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        c.write_all(&[*b]).await.unwrap();
    }
    let answer = wire::answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.requests()[0].body, "hello");
}

#[tokio::test]
async fn a_client_that_leaves_mid_response_frees_the_backend() {
    let big = Bytes::from(vec![b'z'; 64 << 20]);
    let backend = backend().reply(200, big).run().await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let mut c = wire::open(porter.addr, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0u8; 100_000];
    c.read_exact(&mut buf).await.unwrap();
    drop(c);
    let freed = eventually(5, || backend.connections_closed() > 0).await;
    assert!(freed, "porter let go of the backend connection");
}

/// The smallest `connection_buffer` the config allows must still relay an answer: the
/// read-ahead takes room for a whole frame before it reads one (64 KiB was allowed and
/// hung every answer with a body until the idle timeout).
#[tokio::test]
async fn the_smallest_connection_buffer_still_relays_answers() {
    let backend = backend()
        .respond(|_| answer(200, Bytes::from(vec![b'x'; 300 << 10])))
        .run()
        .await;
    let config = Config::new().set("limits.connection_buffer", "256KiB");
    let porter = Porter::start(backend.addr, config).await;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        request("GET", &porter.url("/big")).send(),
    )
    .await
    .expect("the answer within 10 s");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 300 << 10);
    porter.stop().await;
}

/// `server.workers`: that many event-loop threads, each accepting from the listener
/// and each with its own app connections; every request is answered whichever worker
/// takes its connection, before and after a reload.
#[tokio::test]
async fn every_worker_accepts_and_serves() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .backend(backend.addr)
        .set("server.workers", 3)
        .listen(0)
        .write(dir.path());
    let mut p = Proc::serve(&config);
    let port = p.port();
    // The port is known once bound; the workers start a moment later.
    let mut workers = Vec::new();
    for _ in 0..50 {
        workers = p.threads();
        workers.retain(|t| t.starts_with("porter-w"));
        if workers.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    workers.sort();
    assert_eq!(workers, ["porter-w0", "porter-w1", "porter-w2"]);
    for round in 0..2 {
        let answers = (0..40).map(|i| {
            let url = format!("http://127.0.0.1:{port}/w/{round}/{i}");
            tokio::spawn(async move { request("GET", &url).send().await.status })
        });
        for a in answers {
            assert_eq!(a.await.unwrap(), 200);
        }
        p.signal(libc::SIGHUP);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(backend.requests().len(), 80);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(10).is_some_and(|s| s.success()));
}

/// The asterisk form is for OPTIONS only (RFC 9112 §3.2.4): `OPTIONS *` goes to the
/// app, `GET *` is 400 and never reaches it.
#[tokio::test]
async fn the_asterisk_target_is_for_options_only() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let head = |m: &str| format!("{m} * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let options = wire::exchange(porter.addr, head("OPTIONS").as_bytes()).await;
    assert!(options.starts_with("HTTP/1.1 200"), "{options}");
    let get = wire::exchange(porter.addr, head("GET").as_bytes()).await;
    assert!(get.starts_with("HTTP/1.1 400"), "{get}");
    let seen: Vec<_> = backend.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(seen, ["OPTIONS"]);
    porter.stop().await;
}
