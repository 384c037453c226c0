use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

#[tokio::test]
async fn bodies_stream_both_ways_byte_identical() {
    let backend = Backend::start(|r| {
        let mut resp = answer(200, "");
        *resp.body_mut() = Full::new(r.body.clone());
        resp.headers_mut()
            .insert("x-accel-limit-rate", "10".parse().unwrap());
        resp.headers_mut()
            .insert("x-accel-buffering", "no".parse().unwrap());
        resp.headers_mut().insert("x-app", "yes".parse().unwrap());
        resp
    })
    .await;
    let porter = Porter::start(backend.addr, "").await;
    let payload = data(3 << 20, 7);
    let reply = send(
        request("POST", &porter.url("/api/echo?x=1"))
            .header("x-porter-signature", "sha256=forged")
            .header("x-forwarded-for", "6.6.6.6")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .header("cookie", "session=abc")
            .body(Full::new(Bytes::from(payload.clone())))
            .unwrap(),
    )
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
    let porter = Porter::start(backend.addr, "").await;
    let reply = send(
        request("GET", &porter.url("/a/%7Euser/b%2Fc?q=%20x&y"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.requests()[0].target, "/a/%7Euser/b%2Fc?q=%20x&y");
}

#[tokio::test]
async fn h2c_prior_knowledge_passthrough() {
    let backend = Backend::start(|r| {
        let mut resp = answer(200, "");
        *resp.body_mut() = Full::new(r.body.clone());
        resp
    })
    .await;
    let porter = Porter::start(backend.addr, "").await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let payload = data(300_000, 3);
    std::fs::write(file.path(), &payload).unwrap();
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
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let porter = Porter::start(dead, "").await;
    let reply = send(
        request("GET", &porter.url("/anything"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "backend_unavailable");
    assert_eq!(reply.json()["accepted"], false);
}

#[tokio::test]
async fn internal_prefix_is_404_and_never_forwarded() {
    let backend = Backend::ok().await;
    let porter = Porter::start(
        backend.addr,
        "[[internal]]\nprefix = \"/protected/\"\nroot = \"root\"\n",
    )
    .await;
    for path in [
        "/protected/x",
        "/protected",
        "/a/../protected/x",
        "/%70rotected/x",
    ] {
        let reply = send(
            request("GET", &porter.url(path))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 404, "{path}");
    }
    assert_eq!(backend.count(), 0);
    let reply = send(
        request("GET", &porter.url("/protectedness"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn oversized_passthrough_body_is_413_before_forwarding() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, "[limits]\nmax_body_size = \"1KiB\"\n").await;
    let reply = send(
        request("POST", &porter.url("/form"))
            .body(Full::new(Bytes::from(vec![1u8; 4096])))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"], "too_large");
    assert_eq!(backend.count(), 0);
}
