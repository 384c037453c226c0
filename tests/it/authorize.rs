use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTE: &str = "[[upload]]\npath = \"/upload\"\nkind = \"multipart\"\nauthorize = \"/auth/check\"\n[[upload]]\npath = \"/raw\"\nkind = \"raw\"\nauthorize = \"/auth/check\"\n";

async fn auth_backend() -> Backend {
    Backend::start(|r| {
        if r.target.starts_with("/auth") && r.header("cookie") != Some("user=ok") {
            let mut resp = answer(403, r#"{"detail":"not yours"}"#);
            resp.headers_mut()
                .insert("x-why", "cookie".parse().unwrap());
            return resp;
        }
        answer(
            if r.target.starts_with("/auth") {
                204
            } else {
                200
            },
            "{}",
        )
    })
    .await
}

#[tokio::test]
async fn allowed_uploads_proceed_after_a_signed_preflight() {
    let backend = auth_backend().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let (ct, body) = Form::new()
        .file("f", "a.txt", "text/plain", b"hello")
        .finish();
    let len = body.len().to_string();
    let reply = send(
        request("POST", &porter.url("/upload?x=1"))
            .header("content-type", ct)
            .header("cookie", "user=ok")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    let auth = &seen[0];
    assert_eq!(auth.method, "GET");
    assert_eq!(auth.target, "/auth/check");
    assert_eq!(auth.header("x-original-uri"), Some("/upload?x=1"));
    assert_eq!(auth.header("x-original-method"), Some("POST"));
    assert_eq!(auth.header("x-upload-length"), Some(len.as_str()));
    assert_eq!(auth.header("cookie"), Some("user=ok"));
    assert!(auth.header("content-type").is_none());
    assert!(auth.header("x-porter-signature").is_some());
    assert!(auth.body.is_empty());
    assert_eq!(seen[1].target, "/upload?x=1");
}

#[tokio::test]
async fn refusals_are_relayed_and_nothing_is_stored() {
    let backend = auth_backend().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let reply = send(
        request("PUT", &porter.url("/raw/x.bin"))
            .body(Full::new(Bytes::from(vec![7u8; 100_000])))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, r#"{"detail":"not yours"}"#);
    assert_eq!(reply.headers["x-why"], "cookie");
    assert_eq!(backend.count(), 1, "only the preflight");
    assert!(porter.wait_empty().await.is_empty());
}

#[tokio::test]
async fn expect_continue_is_refused_before_the_body() {
    let backend = auth_backend().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let mut s = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    s.write_all(b"PUT /raw/x.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(!text.contains("100 Continue"));
}
