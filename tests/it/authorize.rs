use crate::support::*;

/// A multipart and a raw route, both asking `/auth/check` first.
fn routes() -> Config {
    Upload::multipart("/upload")
        .authorize("/auth/check")
        .and(Upload::raw("/raw").authorize("/auth/check"))
}

/// The app allows the user whose cookie is `user=ok`, and says why it refuses others.
async fn auth_backend() -> Backend {
    backend()
        .route_fn("/auth", |r| match r.header("cookie") {
            Some("user=ok") => answer(204, "{}"),
            _ => answer_with(403, r#"{"detail":"not yours"}"#, "x-why", "cookie"),
        })
        .reply(200, "{}")
        .run()
        .await
}

#[tokio::test]
async fn allowed_uploads_proceed_after_a_signed_preflight() {
    let backend = auth_backend().await;
    let porter = Porter::start(backend.addr, routes()).await;
    let (ct, body) = Form::new()
        .file("f", "a.txt", "text/plain", b"hello")
        .finish();
    let len = body.len().to_string();
    let reply = request("POST", &porter.url("/upload?x=1"))
        .header("content-type", ct)
        .header("cookie", "user=ok")
        .body(body)
        .send()
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
    let porter = Porter::start(backend.addr, routes()).await;
    let reply = request("PUT", &porter.url("/raw/x.bin"))
        .body(vec![7u8; 100_000])
        .send()
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
    let porter = Porter::start(backend.addr, routes()).await;
    let head = wire::head("PUT", "/raw/x.bin", &["Expect: 100-continue"], 1_000_000);
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    let text = wire::answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(!text.contains("100 Continue"));
}
