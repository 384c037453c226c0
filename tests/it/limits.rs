use crate::support::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn route() -> Upload {
    Upload::multipart("/upload")
}

async fn post(porter: &Porter, form: Form) -> Reply {
    request("POST", &porter.url("/upload"))
        .form(form)
        .send()
        .await
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

#[tokio::test]
async fn over_limits_are_413_and_never_reach_the_backend() {
    let backend = Backend::ok().await;
    let route = route().max_file_size("100KiB").set("max_files", 2);
    let config = Config::from(route)
        .set("limits.max_fields", 2)
        .set("limits.max_field_bytes", 100);
    let porter = Porter::start(backend.addr, config).await;
    let cases = [
        (
            "declared length",
            Form::new().file("f", "a.bin", "x/y", &vec![0u8; 20 << 20]),
        ),
        (
            "streamed file",
            Form::new().file("f", "a.bin", "x/y", &vec![0u8; 200 << 10]),
        ),
        (
            "files",
            Form::new()
                .file("f", "1", "x/y", b"1")
                .file("f", "2", "x/y", b"2")
                .file("f", "3", "x/y", b"3"),
        ),
        (
            "fields",
            Form::new().field("a", "1").field("b", "2").field("c", "3"),
        ),
        ("field bytes", Form::new().field("a", &"x".repeat(101))),
    ];
    for (what, form) in cases {
        let reply = post(&porter, form).await;
        assert_eq!(reply.status, 413, "{what}");
        assert_eq!(reply.json()["error"], "too_large", "{what}");
        assert_eq!(reply.json()["accepted"], false);
    }
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty());
}

#[tokio::test]
async fn accept_checks_extension_and_sniffed_type() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route().accept(&["image/*", ".csv"])).await;
    let reply = post(&porter, Form::new().file("f", "x.csv", "text/csv", PNG)).await;
    assert_eq!(reply.status, 415);
    assert_eq!(reply.json()["error"], "unsupported_type");
    assert_eq!(reply.json()["file"], "x.csv");
    let reply = post(&porter, Form::new().file("f", "x.exe", "image/png", b"MZ")).await;
    assert_eq!(reply.status, 415);
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty());
    let reply = post(
        &porter,
        Form::new()
            .file("f", "ok.png", "image/png", PNG)
            .file("g", "t.csv", "text/csv", b"a,b\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "f.detected_type"), "image/png");
    assert_eq!(one(&form, "g.detected_type"), "");
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let bad = [
        (
            "multipart/form-data; boundary=abc",
            "--abc\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\ntruncated",
        ),
        ("multipart/form-data", "--abc--"),
        ("application/json", "{}"),
        (
            "multipart/form-data; boundary=abc",
            "--abc\r\nno-colon-header\r\n\r\nx\r\n--abc--",
        ),
    ];
    for (ct, body) in bad {
        let reply = request("POST", &porter.url("/upload"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await;
        assert_eq!(reply.status, 400, "{ct} {body}");
        assert_eq!(reply.json()["error"], "bad_request");
    }
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty());
}

/// The head of a multipart request whose file part starts at once (named `name`),
/// announcing `len` bytes of file and closing boundary; then the part's head.
fn multipart_head(name: &str, len: usize) -> String {
    let part =
        format!("--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\n\r\n");
    let ct = "Content-Type: multipart/form-data; boundary=B";
    wire::head("POST", "/upload", &[ct], part.len() + len) + &part
}

/// Starts a multipart upload on a raw socket and sends `n` bytes of file data.
async fn start_upload(porter: &Porter, n: usize) -> tokio::net::TcpStream {
    let mut s = wire::open(
        porter.addr,
        multipart_head("big.bin", 10_000_000).as_bytes(),
    )
    .await;
    s.write_all(&data(n, 5)).await.unwrap();
    s
}

#[tokio::test]
async fn client_disconnect_mid_upload_leaves_nothing() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let s = start_upload(&porter, 3_000_000).await;
    // Wait until porter has written part of the file, then vanish.
    assert!(porter.wait_stored().await, "the upload had started");
    drop(s);
    assert_eq!(porter.wait_empty().await, Vec::<std::path::PathBuf>::new());
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn stalled_body_gets_408_and_cleanup() {
    let backend = Backend::ok().await;
    let config = Config::from(route()).set("server.idle_timeout", "1s");
    let porter = Porter::start(backend.addr, config).await;
    let mut s = start_upload(&porter, 100_000).await;
    let text = wire::read_to_close(&mut s).await;
    let text = text.expect("porter ended the stalled request");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
    assert!(porter.wait_empty().await.is_empty());
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn low_disk_space_is_507() {
    let backend = Backend::ok().await;
    let config = Config::from(route()).set("storage.min_free", "1000TiB");
    let porter = Porter::start(backend.addr, config).await;
    let reply = post(&porter, Form::new().file("f", "a", "x/y", b"1")).await;
    assert_eq!(reply.status, 507);
    assert_eq!(reply.json()["error"], "insufficient_storage");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn max_concurrent_uploads_is_503_with_retry_after() {
    let backend = Backend::ok().await;
    let config = Config::from(route()).set("limits.max_concurrent_uploads", 1);
    let porter = Porter::start(backend.addr, config).await;
    let first = start_upload(&porter, 1000).await;
    porter.wait_stored().await;
    let reply = post(&porter, Form::new().file("f", "a", "x/y", b"1")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"], "busy");
    assert!(reply.headers.contains_key("retry-after"));
    drop(first);
}

#[tokio::test]
async fn slow_request_head_is_cut_at_header_timeout() {
    let backend = Backend::ok().await;
    let config = Config::new().set("server.header_timeout", "1s");
    let porter = Porter::start(backend.addr, config).await;
    let mut s = wire::open(porter.addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let text = wire::read_to_close(&mut s).await;
    let text = text.expect("the connection was closed");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let backend = Backend::ok().await;
    let config = Config::new().set("limits.max_header_bytes", "16KiB");
    let porter = Porter::start(backend.addr, config).await;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let text = wire::exchange(porter.addr, head.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_finish() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let tail = "\r\n--B--\r\n";
    let payload = data(500_000, 1);
    let head = multipart_head("a.bin", payload.len() + tail.len());
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    s.write_all(&payload[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = porter.addr;
    let stopping = tokio::spawn(porter.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections while draining"
    );
    s.write_all(&payload[1000..]).await.unwrap();
    s.write_all(tail.as_bytes()).await.unwrap();
    let text = wire::read_to_close(&mut s)
        .await
        .expect("an answer in time");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(backend.count(), 1);
    stopping.await.unwrap();
}
