use crate::support::*;
use std::time::Duration;

/// The tus route, allowing one CORS origin.
fn route() -> Upload {
    tus::route().set("cors_origins", vec!["https://app.example"])
}

/// A creation with `meta`, checked as tus.io's clients read it; the upload's URL.
async fn create(porter: &Porter, len: u64, meta: &str) -> String {
    let r = tus::creation(&porter.url("/files"), len)
        .header("upload-metadata", meta)
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    assert!(r.headers.contains_key("upload-expires"));
    let loc = r.location();
    assert!(
        loc.starts_with(&format!("http://{}/files/", porter.addr)),
        "{loc}"
    );
    loc
}

/// A PATCH with `extra` headers.
async fn patch_with(url: &str, offset: u64, data: &[u8], extra: &[(&str, &str)]) -> Reply {
    tus::append(url, offset)
        .headers(extra)
        .body(data.to_vec())
        .send()
        .await
}

/// A partial upload of `len` bytes (concatenation); its URL.
async fn partial(porter: &Porter, len: usize) -> String {
    let r = tus::creation(&porter.url("/files"), len)
        .header("upload-concat", "partial")
        .send()
        .await;
    r.location()
}

/// A final upload concatenating `urls`.
async fn concat_final(porter: &Porter, urls: &[String]) -> Reply {
    tus::request("POST", &porter.url("/files"))
        .header("upload-concat", format!("final;{}", urls.join(" ")))
        .send()
        .await
}

#[tokio::test]
async fn create_patch_head_and_notify() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(300_000, 5);
    // filename "report.pdf", filetype "application/pdf", plus an app field.
    let url = create(
        &porter,
        300_000,
        "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,album c3VtbWVy",
    )
    .await;
    let h = tus::head(&url).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["upload-offset"], "0");
    assert_eq!(h.headers["upload-length"], "300000");
    assert_eq!(h.headers["cache-control"], "no-store");
    assert_eq!(
        h.headers["upload-metadata"],
        "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,album c3VtbWVy"
    );
    let r = tus::patch(&url, 0, &content[..100_000]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["upload-offset"], "100000");
    // Wrong offset: 409, saying where the upload is; wrong content type: 415.
    let r = tus::patch(&url, 5, b"x").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.headers["upload-offset"], "100000");
    let r = tus::request("PATCH", &url)
        .header("upload-offset", 100000)
        .header("content-type", "text/plain")
        .send()
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(backend.count(), 0);
    let r = tus::patch(&url, 100_000, &content[100_000..]).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(r.headers["upload-offset"], "300000");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    let n = &seen[0];
    assert_eq!(n.method, "POST");
    assert_eq!(n.target, "/uploads/done");
    assert!(n.header("x-porter-signature").is_some());
    let form = parse_form(n);
    assert_eq!(one(&form, "file.name"), "report.pdf");
    assert_eq!(one(&form, "file.content_type"), "application/pdf");
    assert_eq!(one(&form, "album"), "summer");
    assert_file(&form, "file", &content);
    let h = tus::head(&url).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["upload-offset"], "300000");
}

#[tokio::test]
async fn protocol_errors() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = request("POST", &porter.url("/files"))
        .header("upload-length", 5)
        .send()
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(r.headers["tus-version"], "1.0.0");
    let r = request("OPTIONS", &porter.url("/files")).send().await;
    assert!(r.status == 200 || r.status == 204);
    assert_eq!(r.headers["tus-version"], "1.0.0");
    assert!(r.header("tus-extension").contains("concatenation"));
    assert_eq!(r.headers["tus-checksum-algorithm"], "md5,sha1,sha256");
    assert_eq!(r.headers["tus-max-size"], (64u64 << 20).to_string());
    let r = tus::creation(&porter.url("/files"), 65u64 << 20)
        .send()
        .await;
    assert_eq!(r.status, 413);
    let r = tus::request("POST", &porter.url("/files")).send().await;
    assert_eq!(r.status, 400);
    let unknown = porter.url("/files/0123456789abcdef0123456789abcdef");
    assert_eq!(tus::head(&unknown).await.status, 404);
    let url = create(&porter, 10, "").await;
    // Past Upload-Length: 413, nothing kept.
    let r = tus::patch(&url, 0, b"0123456789AB").await;
    assert_eq!(r.status, 413);
    assert_eq!(tus::offset(&url).await, 0);
    // Checksums: unknown algorithm 400, mismatch 460 and discarded, match accepted.
    let checksum = |c: &'static str| {
        let url = &url;
        async move { patch_with(url, 0, b"01234", &[("upload-checksum", c)]).await }
    };
    assert_eq!(checksum("crc99 AAAA").await.status, 400);
    assert_eq!(checksum("md5 AAAAAAAAAAAAAAAAAAAAAA==").await.status, 460);
    assert_eq!(tus::offset(&url).await, 0);
    // md5("01234") = 4100c4d44da9177247e44a5fc1546778
    let r = checksum("md5 QQDE1E2pF3JH5EpfwVRneA==").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["upload-offset"], "5");
    // DELETE: gone.
    assert_eq!(tus::delete(&url).await.status, 204);
    assert_eq!(tus::head(&url).await.status, 404);
    assert_eq!(backend.count(), 0);
    assert!(
        porter.wait_empty().await.is_empty(),
        "DELETE leaves nothing"
    );
}

#[tokio::test]
async fn defer_length_and_method_override_and_cors() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = tus::request("POST", &porter.url("/files"))
        .header("upload-defer-length", "1")
        .send()
        .await;
    assert_eq!(r.status, 201);
    let url = r.location();
    let h = tus::head(&url).await;
    assert_eq!(h.headers["upload-defer-length"], "1");
    let r = tus::request("POST", &url)
        .header("x-http-method-override", "PATCH")
        .header("upload-offset", 0)
        .header("upload-length", 3)
        .header("content-type", "application/offset+octet-stream")
        .header("origin", "https://app.example")
        .body("abc")
        .send()
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.header("access-control-expose-headers")
            .contains("Upload-Offset")
    );
    assert_eq!(
        backend.count(),
        1,
        "complete once the deferred length is reached"
    );
    let r = request("OPTIONS", &porter.url("/files"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn creation_with_upload_and_empty_uploads() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = tus::creation(&porter.url("/files"), 5)
        .header("content-type", "application/offset+octet-stream")
        .body("hello")
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers["upload-offset"], "5");
    let r = tus::creation(&porter.url("/files"), 0).send().await;
    assert_eq!(r.status, 201);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(one(&parse_form(&seen[1]), "file.size"), "0");
}

#[tokio::test]
async fn concatenation() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let mut urls = Vec::new();
    for part in [&b"hello "[..], &b"world"[..]] {
        let url = partial(&porter, part.len()).await;
        assert_eq!(tus::patch(&url, 0, part).await.status, 204);
        assert_eq!(tus::head(&url).await.headers["upload-concat"], "partial");
        urls.push(url);
    }
    assert_eq!(backend.count(), 0, "partial uploads never notify");
    let r = tus::request("POST", &porter.url("/files"))
        .header("upload-concat", format!("final;{} {}", urls[0], urls[1]))
        .header("upload-metadata", "filename aGVsbG8udHh0")
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let final_url = r.location();
    let form = backend.first_form();
    assert_eq!(one(&form, "file.size"), "11");
    assert_eq!(one(&form, "file.md5"), md5_hex(b"hello world"));
    assert_eq!(
        std::fs::read(one(&form, "file.path")).unwrap(),
        b"hello world"
    );
    assert_eq!(tus::patch(&final_url, 11, b"").await.status, 403);
    assert!(
        tus::head(&final_url)
            .await
            .header("upload-concat")
            .starts_with("final;")
    );
}

#[tokio::test]
async fn backend_failures_follow_spec_4_3() {
    // The app fails the first notify with 503, then accepts.
    let backend = backend()
        .once(503, "{\"retry\":true}")
        .reply(200, "{}")
        .run()
        .await;
    let porter = Porter::start(backend.addr, route()).await;
    let url = create(&porter, 3, "").await;
    let r = tus::patch(&url, 0, b"abc").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    // The retry (a HEAD) sends the metadata again; now accepted.
    assert_eq!(tus::offset(&url).await, 3);
    assert_eq!(backend.count(), 2);
    // A 4xx is final: files gone, 410 from then on.
    let refusing = crate::support::backend()
        .reply(422, "{\"bad\":1}")
        .run()
        .await;
    let porter2 = Porter::start(refusing.addr, route()).await;
    let url = create(&porter2, 3, "").await;
    assert_eq!(tus::patch(&url, 0, b"abc").await.status, 422);
    assert_eq!(tus::head(&url).await.status, 410);
    assert!(files_under(&porter2.root()).is_empty());
}

/// The route with uploads that expire after a second.
fn expiring() -> Upload {
    route().expire("1s")
}

#[tokio::test]
async fn expiry_then_porter_gc() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, expiring()).await;
    let url = create(&porter, 10, "").await;
    assert_eq!(tus::patch(&url, 0, b"01234").await.status, 204);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(tus::head(&url).await.status, 410, "expired");
    let out = porter_gc(&porter.config());
    assert!(out.contains("1 expired resumable upload"), "{out}");
    assert_eq!(tus::head(&url).await.status, 404, "collected");
    assert!(files_under(&porter.temp()).is_empty());
}

#[tokio::test]
async fn porter_gc_never_touches_an_upload_in_use() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, expiring()).await;
    let url = create(&porter, 10, "").await;
    let head = tus::patch_head(tus::path(&url), 0, 10) + "01234";
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = porter_gc(&porter.config());
    assert!(out.contains("0 expired resumable upload"), "{out}");
    s.write_all(b"56789").await.unwrap();
    let answer = wire::answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn authorize_is_asked_at_creation_and_at_completion() {
    let backend = backend()
        .route_fn("/auth", |r| match r.header("x-original-method") {
            Some("POST") => answer(204, ""),
            _ => answer(403, "{\"detail\":\"no longer yours\"}"),
        })
        .reply(200, "{}")
        .run()
        .await;
    let porter = Porter::start(backend.addr, route().authorize("/auth")).await;
    let url = create(&porter, 3, "").await;
    let r = tus::patch(&url, 0, b"abc").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "{\"detail\":\"no longer yours\"}");
    assert_eq!(
        tus::head(&url).await.status,
        410,
        "a refusal at completion is final"
    );
    assert!(backend.at("/uploads/done").is_empty());
    assert!(files_under(&porter.root()).is_empty());
}

#[tokio::test]
async fn checksum_as_a_trailer_of_a_chunked_patch() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let url = create(&porter, 10, "").await;
    let path = tus::path(&url);
    for (trailer, status, offset) in [
        ("md5 AAAAAAAAAAAAAAAAAAAAAA==", "460", 0),
        ("md5 QQDE1E2pF3JH5EpfwVRneA==", "204", 5),
    ] {
        let req = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n\r\n5\r\n01234\r\n0\r\nUpload-Checksum: {trailer}\r\n\r\n"
        );
        let mut s = wire::open(porter.addr, req.as_bytes()).await;
        let text = wire::answer(&mut s).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert_eq!(tus::offset(&url).await, offset);
    }
}

#[tokio::test]
async fn location_honours_forwarded_headers_only_from_trusted_proxies() {
    let backend = Backend::ok().await;
    for (trusted, expect) in [
        (true, "https://uploads.example/files/"),
        (false, "http://127.0.0.1"),
    ] {
        let config = if trusted {
            Config::from(route()).set("server.trusted_proxies", vec!["127.0.0.1"])
        } else {
            route().into()
        };
        let porter = Porter::start(backend.addr, config).await;
        let r = tus::creation(&porter.url("/files"), 1)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "uploads.example")
            .send()
            .await;
        assert!(r.location().starts_with(expect), "{:?}", r.location());
    }
}

#[tokio::test]
async fn progress_under_the_upload_id() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, Config::from(route()).progress("/progress")).await;
    let url = create(&porter, 200_000, "").await;
    assert_eq!(tus::patch(&url, 0, &[1u8; 50_000]).await.status, 204);
    let id = tus::id(&url);
    let head = tus::patch_head(tus::path(&url), 50_000, 150_000);
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    s.write_all(&[2u8; 100_000]).await.unwrap();
    assert_eq!(
        wait_received(&porter, id, 150_000).await,
        serde_json::json!({"state": "uploading", "received": 150000, "size": 200000})
    );
    s.write_all(&[2u8; 50_000]).await.unwrap();
    wire::answer(&mut s).await;
    assert_eq!(
        progress(&porter, id).await,
        serde_json::json!({"state": "done"})
    );
}

#[tokio::test]
async fn unfinished_concatenation_completes_with_its_last_partial() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let urls = vec![partial(&porter, 6).await, partial(&porter, 5).await];
    assert_eq!(tus::patch(&urls[0], 0, b"hello ").await.status, 204);
    let r = concat_final(&porter, &urls).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let final_url = r.location();
    let h = tus::head(&final_url).await;
    assert!(
        !h.headers.contains_key("upload-offset"),
        "no offset while partials are unfinished"
    );
    assert_eq!(backend.count(), 0);
    assert_eq!(tus::patch(&urls[1], 0, b"world").await.status, 204);
    let form = backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(b"hello world"));
    assert_eq!(tus::offset(&final_url).await, 11);
}

#[tokio::test]
async fn head_is_423_while_the_app_keeps_failing() {
    let backend = backend().reply(503, "{}").run().await;
    let porter = Porter::start(backend.addr, route()).await;
    let url = create(&porter, 3, "").await;
    assert_eq!(tus::patch(&url, 0, b"abc").await.status, 503);
    let h = tus::head(&url).await;
    assert_eq!(
        h.status, 423,
        "never Upload-Offset == Upload-Length before the app accepts"
    );
    assert_eq!(h.headers["tus-resumable"], "1.0.0");
    assert_eq!(backend.count(), 2, "the HEAD re-sent the metadata");
    assert_eq!(
        files_under(&porter.root()).len(),
        1,
        "kept for retry_window"
    );
}

#[tokio::test]
async fn a_refusal_on_retry_is_final_and_failed_creations_leave_nothing() {
    let backend = backend().once(503, "{}").reply(400, "{}").run().await;
    let porter = Porter::start(backend.addr, route()).await;
    let url = create(&porter, 3, "").await;
    assert_eq!(tus::patch(&url, 0, b"abc").await.status, 503);
    assert_eq!(
        tus::head(&url).await.status,
        410,
        "the retry met a 4xx: final"
    );
    assert!(files_under(&porter.root()).is_empty());
    // creation-with-upload whose checksum fails: no Location, so nothing may stay.
    let r = tus::creation(&porter.url("/files"), 5)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")
        .body("01234")
        .send()
        .await;
    assert_eq!(r.status, 460);
    let left: Vec<_> = files_under(&porter.temp())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(tus::id(&url)))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn early_refusals_still_speak_tus() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = tus::creation(&porter.url("/files?X-Progress-ID=bad"), 1)
        .send()
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
}

/// tus 1.0 details: a final concatenation takes no `Upload-Length`, names each partial
/// once (a partial listed a thousand times would be written a thousand times), and a
/// creation-with-upload body must be `application/offset+octet-stream`.
#[tokio::test]
async fn concatenation_and_creation_rules() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let part = partial(&porter, 4).await;
    assert_eq!(tus::patch(&part, 0, b"abcd").await.status, 204);
    let finals = |concat: String, extra: &'static [(&'static str, &'static str)]| {
        tus::request("POST", &porter.url("/files"))
            .header("upload-concat", concat)
            .headers(extra)
            .send()
    };
    let repeated = format!("final;{}", vec![part.as_str(); 1000].join(" "));
    assert_eq!(finals(repeated, &[]).await.status, 400);
    let twice = format!("final;{part} {part}");
    assert_eq!(finals(twice, &[]).await.status, 400);
    let with_length = finals(format!("final;{part}"), &[("upload-length", "4")]);
    assert_eq!(with_length.await.status, 400);
    let deferred = finals(format!("final;{part}"), &[("upload-defer-length", "1")]);
    assert_eq!(deferred.await.status, 400);
    assert_eq!(backend.count(), 0, "no final was made");
    assert_eq!(finals(format!("final;{part}"), &[]).await.status, 201);
    for ct in ["text/plain", "application/octet-stream"] {
        let r = tus::creation(&porter.url("/files"), 5)
            .header("content-type", ct)
            .body("hello")
            .send()
            .await;
        assert_eq!(r.status, 415, "{ct}");
    }
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// `accept` holds on resumable routes as on multipart ones, checked when the last byte
/// is in: an HTML page named `.png`, or a file of no accepted type, is refused with a
/// final 415, its bytes deleted and the app never told; a real PNG completes.
#[tokio::test]
async fn accept_is_enforced_at_completion() {
    let backend = Backend::ok().await;
    let png = ["image/png"];
    let porter = Porter::start(
        backend.addr,
        route()
            .accept(&png)
            .and(Upload::chunked("/api/chunked_upload", "/done/").accept(&png))
            .upload(Upload::nginx_resumable("/resumable").accept(&png)),
    )
    .await;
    let html = b"<!doctype html><script>alert(1)</script>";
    for (name, body, ok) in [
        ("x.png", &html[..], false),
        ("page.html", &html[..], false),
        ("pic.png", PNG, true),
    ] {
        let r = tus::creation(&porter.url("/files"), body.len())
            .header("upload-metadata", format!("filename {}", b64(name)))
            .header("content-type", "application/offset+octet-stream")
            .body(body.to_vec())
            .send()
            .await;
        assert_eq!(r.status, if ok { 201 } else { 415 }, "tus {name}");
        // chunked, whole file in one chunk, then completion
        let url = porter.url("/api/chunked_upload/");
        let r = chunked::chunk(&url, (name, "image/png"), body, None, None)
            .send()
            .await;
        let id = chunked::upload_id(&r);
        let r = chunked::completion(&porter.url("/done/"), &id, body)
            .send()
            .await;
        assert_eq!(
            r.status,
            if ok { 200 } else { 415 },
            "chunked {name}: {:?}",
            r.body
        );
        let session = format!("accept-session-{}", name.replace('.', "-"));
        let r = nginx::segment(&porter.url("/resumable"), &session, body, 0, body.len())
            .header(
                "content-disposition",
                format!("attachment; filename=\"{name}\""),
            )
            .send()
            .await;
        assert_eq!(
            r.status,
            if ok { 200 } else { 415 },
            "nginx {name}: {:?}",
            r.body
        );
    }
    assert_eq!(backend.count(), 3, "the app heard of the PNGs only");
    assert!(
        files_under(&porter.root()).len() == 3,
        "refused bytes are gone: {:?}",
        files_under(&porter.root())
    );
}

/// No window in which a live upload looks orphaned: uploads created while `porter gc`
/// (another process) and a collection pass (another engine) run in a loop all keep
/// their data, and every one takes its PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collecting_while_creating_loses_nothing() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let config = porter.config();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s1, s2) = (stop.clone(), stop.clone());
    let conf = config.clone();
    let gc_process = tokio::task::spawn_blocking(move || {
        let mut passes = 0;
        while !s1.load(std::sync::atomic::Ordering::Relaxed) && passes < 2000 {
            porter_gc(&conf);
            passes += 1;
        }
        passes
    });
    let text = std::fs::read_to_string(&config).unwrap();
    let cfg = porter::config::parse(&text, &config).unwrap();
    let gc_pass = tokio::spawn(async move {
        let mut passes = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && passes < 100_000 {
            porter::collect_garbage(&cfg)
                .await
                .expect("a collection pass");
            passes += 1;
        }
        passes
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut lost = Vec::new();
    let mut made = 0;
    while made < 600 && std::time::Instant::now() < deadline {
        let batch = (0..8).map(|_| async {
            let url = create(&porter, 1, "").await;
            (tus::patch(&url, 0, b"x").await.status, url)
        });
        for (status, url) in join_all(batch).await {
            made += 1;
            if status != 204 {
                lost.push((status, url));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (a, b) = (gc_process.await.unwrap(), gc_pass.await.unwrap());
    assert!(a > 0 && b > 0, "both collectors ran ({a}, {b})");
    assert!(made >= 100, "only {made} uploads in time");
    assert!(
        lost.is_empty(),
        "{} of {made} uploads lost: {lost:?}",
        lost.len()
    );
}
