use crate::support::*;
use std::time::{Duration, Instant};

/// A backend that answers `/dl/<rest>` with `X-Accel-Redirect: /protected/<rest>` and
/// `/sf/<abs path>` with `X-Sendfile`, plus whatever `?h=` asks for.
async fn accel_backend() -> Backend {
    backend()
        .respond(|r| {
            let mut resp = answer(200, "the app's body, never sent");
            let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
            let h = resp.headers_mut();
            h.remove("content-type");
            if let Some(rest) = path.strip_prefix("/dl") {
                h.insert(
                    "x-accel-redirect",
                    format!("/protected{rest}").parse().unwrap(),
                );
            } else if let Some(abs) = path.strip_prefix("/sf") {
                h.insert("x-sendfile", abs.parse().unwrap());
            }
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap();
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.replace("%20", " ").parse().unwrap(),
                );
            }
            h.insert("x-app-internal", "dropped".parse().unwrap());
            h.insert("cache-control", "private".parse().unwrap());
            resp
        })
        .run()
        .await
}

async fn setup() -> (Backend, Porter, Vec<u8>) {
    let backend = accel_backend().await;
    let csp = toml::Table::from_iter([("Content-Security-Policy".into(), "sandbox".into())]);
    let files = [
        ("prefix", "/protected/".into()),
        ("root", "files".into()),
        ("headers", csp.into()),
    ];
    let porter = Porter::start(backend.addr, Config::new().table("internal", files)).await;
    let files = porter.dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    let content = data(10_000, 3);
    std::fs::write(files.join("sub/a.txt"), &content).unwrap();
    std::fs::write(porter.dir.path().join("secret.txt"), b"top secret").unwrap();
    std::os::unix::fs::symlink(porter.dir.path().join("secret.txt"), files.join("escape")).unwrap();
    (backend, porter, content)
}

async fn get(porter: &Porter, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_m(porter, "GET", path, headers).await
}

async fn get_m(porter: &Porter, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(method, &porter.url(path))
        .headers(headers)
        .send()
        .await
}

#[tokio::test]
async fn accel_redirect_serves_the_file_with_validators() {
    let (_backend, porter, content) = setup().await;
    let r = get(&porter, "/dl/sub/a.txt", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == content);
    let h = &r.headers;
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["content-length"], "10000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "sandbox");
    assert_eq!(h["cache-control"], "private");
    assert!(!h.contains_key("x-accel-redirect") && !h.contains_key("x-app-internal"));
    let etag = h["etag"].to_str().unwrap();
    let meta = std::fs::metadata(porter.dir.path().join("files/sub/a.txt")).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(etag, format!("\"{mtime:x}-{:x}\"", 10_000));
    assert!(h.contains_key("last-modified"));
    // HEAD: headers, no body.
    let r = get_m(&porter, "HEAD", "/dl/sub/a.txt", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-length"], "10000");
    assert!(r.body.is_empty());
    // A POST answered by X-Accel-Redirect is served as GET.
    let r = request("POST", &porter.url("/dl/sub/a.txt"))
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10_000);
}

#[tokio::test]
async fn ranges() {
    let (_backend, porter, content) = setup().await;
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], "bytes 10-19/10000");
    assert!(r.body == content[10..20]);
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=-5")]).await;
    assert_eq!(r.headers["content-range"], "bytes 9995-9999/10000");
    assert!(r.body == content[9995..]);
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=9990-")]).await;
    assert!(r.body == content[9990..]);
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=20000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.headers["content-range"], "bytes */10000");
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=0-1,100-102")]).await;
    assert_eq!(r.status, 206);
    let ct = r.headers["content-type"].to_str().unwrap().to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("byteranges");
    let mut expected = Vec::new();
    for (a, b) in [(0usize, 1usize), (100, 102)] {
        expected.extend(format!("\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes {a}-{b}/10000\r\n\r\n").bytes());
        expected.extend(&content[a..=b]);
    }
    expected.extend(format!("\r\n--{boundary}--\r\n").bytes());
    assert!(r.body == expected, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-length"], expected.len().to_string());
    let many = (0..40)
        .map(|i| format!("{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = get(
        &porter,
        "/dl/sub/a.txt",
        &[("range", &format!("bytes={many}"))],
    )
    .await;
    assert_eq!(r.status, 200, "too many ranges: whole file");
}

#[tokio::test]
async fn conditionals() {
    let (_backend, porter, _) = setup().await;
    let first = get(&porter, "/dl/sub/a.txt", &[]).await;
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let lm = first.headers["last-modified"].to_str().unwrap().to_string();
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("if-none-match", &etag)], 304),
        (&[("if-modified-since", &lm)], 304),
        (&[("if-modified-since", old)], 200),
        (&[("if-match", "\"nope\"")], 412),
        (&[("if-match", &etag)], 200),
        (&[("if-unmodified-since", old)], 412),
        (&[("if-range", &etag), ("range", "bytes=0-0")], 206),
        (&[("if-range", "\"stale\""), ("range", "bytes=0-0")], 200),
        (&[("if-range", &lm), ("range", "bytes=0-0")], 206),
    ];
    for (headers, status) in cases {
        let r = get(&porter, "/dl/sub/a.txt", headers).await;
        assert_eq!(r.status, *status, "{headers:?}");
        if *status == 304 {
            assert!(r.body.is_empty());
            assert_eq!(r.headers["etag"], etag.as_str());
        }
    }
}

#[tokio::test]
async fn charset_and_sendfile() {
    let (_backend, porter, content) = setup().await;
    let r = get(&porter, "/dl/sub/a.txt?x-accel-charset=utf-8", &[]).await;
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    let abs = porter.dir.path().join("files/sub/a.txt");
    let r = get(&porter, &format!("/sf{}", abs.display()), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == content);
}

#[tokio::test]
async fn escapes_are_refused() {
    let (backend, porter, _) = setup().await;
    let secret = porter.dir.path().join("secret.txt");
    for path in [
        "/dl/../secret.txt".to_string(),
        "/dl/%2e%2e/secret.txt".to_string(),
        "/dl/sub/%2e%2e/%2e%2e/secret.txt".to_string(),
        "/dl/escape".to_string(),
        "/q?x-accel-redirect=/protected/sub/a.txt%00.png".to_string(),
        "/q?x-accel-redirect=/elsewhere/sub/a.txt".to_string(),
        "/dl/missing".to_string(),
        "/dl/sub".to_string(),
        format!("/sf{}", secret.display()),
        format!("/sf{}/files/../secret.txt", porter.dir.path().display()),
    ] {
        let r = get(&porter, &path, &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.body.windows(10).any(|w| w == b"top secret"));
    }
    let before = backend.count();
    let r = get(&porter, "/protected/sub/a.txt", &[]).await;
    assert_eq!(r.status, 404, "direct requests to internal locations");
    assert_eq!(backend.count(), before, "never forwarded");
}

#[tokio::test]
async fn rate_limit_is_a_lower_bound_on_time() {
    let (_backend, porter, _) = setup().await;
    let big = data(3 << 20, 1);
    std::fs::write(porter.dir.path().join("files/big.bin"), &big).unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        get(
            &porter,
            &format!("/dl/big.bin?x-accel-limit-rate={}", 1 << 20),
            &[],
        ),
    )
    .await
    .expect("finished within 20 s");
    assert_eq!(r.status, 200);
    assert!(r.body == big);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "3 MiB at 1 MiB/s took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn static_locations() {
    let backend = Backend::ok().await;
    let public = [
        ("prefix", "/static/".into()),
        ("root", "pub".into()),
        ("max_age", "1h".into()),
    ];
    let porter = Porter::start(backend.addr, Config::new().table("static", public)).await;
    std::fs::create_dir_all(porter.dir.path().join("pub/css")).unwrap();
    std::fs::write(porter.dir.path().join("pub/css/site.css"), b"body{}").unwrap();
    let r = get(&porter, "/static/css/site.css", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "body{}");
    assert_eq!(r.headers["content-type"], "text/css");
    assert_eq!(r.headers["cache-control"], "max-age=3600");
    assert_eq!(
        get(&porter, "/static/x/../css/site.css", &[]).await.status,
        200,
        "normalised first"
    );
    assert_eq!(get(&porter, "/static/nope.css", &[]).await.status, 404);
    // Decoded once, by routing: `%2541` is the name `%41`, never `A`.
    std::fs::write(porter.dir.path().join("pub/aA.txt"), b"wrong").unwrap();
    std::fs::write(porter.dir.path().join("pub/a%41.txt"), b"right").unwrap();
    let r = get(&porter, "/static/a%2541.txt", &[]).await;
    assert_eq!((r.status, r.body.as_ref()), (200, &b"right"[..]));
    assert_eq!(get(&porter, "/static/a%41.txt", &[]).await.body, "wrong");
    assert_eq!(get(&porter, "/static/%252e%252e/x", &[]).await.status, 404);
    assert_eq!(backend.count(), 0);
}

/// Ranges that together ask for more than the file (32 times `0-`) are answered with
/// the whole file once, as nginx does, never with a response larger than the file.
#[tokio::test]
async fn overlapping_ranges_never_amplify() {
    let (_backend, porter, content) = setup().await;
    let all = vec!["0-"; 32].join(",");
    for spec in [all.as_str(), "0-9999,0-9999", "-6000,0-5000", "0-,5000-"] {
        let r = get(
            &porter,
            "/dl/sub/a.txt",
            &[("range", &format!("bytes={spec}"))],
        )
        .await;
        assert_eq!(r.status, 200, "{spec}");
        assert_eq!(r.body.len(), content.len(), "{spec}");
    }
    let r = get(&porter, "/dl/sub/a.txt", &[("range", "bytes=0-99,100-199")]).await;
    assert_eq!(r.status, 206);
    assert!(r.body.len() < 1000);
}

/// A FIFO under the root (or anything but a regular file) is 404, at once: opening it
/// must not wait for a writer, which would stall the worker and every connection on it.
#[tokio::test]
async fn a_fifo_under_the_root_is_404_without_waiting() {
    let (_backend, porter, content) = setup().await;
    let fifo = porter.dir.path().join("files/sub/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    for _ in 0..4 {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            get(&porter, "/dl/sub/pipe", &[]),
        )
        .await
        .expect("answered without waiting on the FIFO");
        assert_eq!(r.status, 404);
    }
    let r = get(&porter, "/dl/sub/a.txt", &[]).await;
    assert!(r.status == 200 && r.body == content);
}
