use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

pub const ROUTE: &str = "[[upload]]\npath = \"/files\"\nkind = \"tus\"\nnotify = \"/uploads/done\"\nhashes = [\"md5\", \"sha256\"]\nmax_file_size = \"64MiB\"\ncors_origins = [\"https://app.example\"]\n";

fn tus(method: &str, url: &str) -> http::request::Builder {
    request(method, url).header("tus-resumable", "1.0.0")
}

async fn create(porter: &Porter, len: u64, meta: &str) -> String {
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", len)
            .header("upload-metadata", meta)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    assert!(r.headers.contains_key("upload-expires"));
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("http://{}/files/", porter.addr)),
        "{loc}"
    );
    loc
}

async fn patch(url: &str, offset: u64, data: &[u8], extra: &[(&str, &str)]) -> Reply {
    let mut req = tus("PATCH", url)
        .header("upload-offset", offset)
        .header("content-type", "application/offset+octet-stream");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    send(req.body(Full::new(Bytes::from(data.to_vec()))).unwrap()).await
}

async fn head(url: &str) -> Reply {
    send(tus("HEAD", url).body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn create_patch_head_and_notify() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let content = data(300_000, 5);
    // filename "report.pdf", filetype "application/pdf", plus an app field.
    let url = create(
        &porter,
        300_000,
        "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,album c3VtbWVy",
    )
    .await;
    let h = head(&url).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["upload-offset"], "0");
    assert_eq!(h.headers["upload-length"], "300000");
    assert_eq!(h.headers["cache-control"], "no-store");
    assert_eq!(
        h.headers["upload-metadata"],
        "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,album c3VtbWVy"
    );
    let r = patch(&url, 0, &content[..100_000], &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["upload-offset"], "100000");
    // Wrong offset: 409, saying where the upload is; wrong content type: 415.
    let r = patch(&url, 5, b"x", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.headers["upload-offset"], "100000");
    let r = send(
        tus("PATCH", &url)
            .header("upload-offset", 100000)
            .header("content-type", "text/plain")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(backend.count(), 0);
    let r = patch(&url, 100_000, &content[100_000..], &[]).await;
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
    assert_eq!(one(&form, "file.size"), "300000");
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
    assert_eq!(std::fs::read(one(&form, "file.path")).unwrap(), content);
    let h = head(&url).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["upload-offset"], "300000");
}

#[tokio::test]
async fn protocol_errors() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        request("POST", &porter.url("/files"))
            .header("upload-length", 5)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 412);
    assert_eq!(r.headers["tus-version"], "1.0.0");
    let r = send(
        request("OPTIONS", &porter.url("/files"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert!(r.status == 200 || r.status == 204);
    assert_eq!(r.headers["tus-version"], "1.0.0");
    assert!(
        r.headers["tus-extension"]
            .to_str()
            .unwrap()
            .contains("concatenation")
    );
    assert_eq!(r.headers["tus-checksum-algorithm"], "md5,sha1,sha256");
    assert_eq!(r.headers["tus-max-size"], (64u64 << 20).to_string());
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", 65u64 << 20)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = send(
        tus("POST", &porter.url("/files"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        head(&porter.url("/files/0123456789abcdef0123456789abcdef"))
            .await
            .status,
        404
    );
    let url = create(&porter, 10, "").await;
    // Past Upload-Length: 413, nothing kept.
    let r = patch(&url, 0, b"0123456789AB", &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(head(&url).await.headers["upload-offset"], "0");
    // Checksums: unknown algorithm 400, mismatch 460 and discarded, match accepted.
    assert_eq!(
        patch(&url, 0, b"01234", &[("upload-checksum", "crc99 AAAA")])
            .await
            .status,
        400
    );
    assert_eq!(
        patch(
            &url,
            0,
            b"01234",
            &[("upload-checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")]
        )
        .await
        .status,
        460
    );
    assert_eq!(head(&url).await.headers["upload-offset"], "0");
    // md5("01234") = 4100c4d44da9177247e44a5fc1546778
    let r = patch(
        &url,
        0,
        b"01234",
        &[("upload-checksum", "md5 QQDE1E2pF3JH5EpfwVRneA==")],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["upload-offset"], "5");
    // DELETE: gone.
    let r = send(tus("DELETE", &url).body(Full::default()).unwrap()).await;
    assert_eq!(r.status, 204);
    assert_eq!(head(&url).await.status, 404);
    assert_eq!(backend.count(), 0);
    assert!(
        porter.wait_empty().await.is_empty(),
        "DELETE leaves nothing"
    );
}

#[tokio::test]
async fn defer_length_and_method_override_and_cors() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-defer-length", "1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201);
    let url = r.headers["location"].to_str().unwrap().to_string();
    let h = head(&url).await;
    assert_eq!(h.headers["upload-defer-length"], "1");
    let r = send(
        tus("POST", &url)
            .header("x-http-method-override", "PATCH")
            .header("upload-offset", 0)
            .header("upload-length", 3)
            .header("content-type", "application/offset+octet-stream")
            .header("origin", "https://app.example")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Upload-Offset")
    );
    assert_eq!(
        backend.count(),
        1,
        "complete once the deferred length is reached"
    );
    let r = send(
        request("OPTIONS", &porter.url("/files"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn creation_with_upload_and_empty_uploads() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", 5)
            .header("content-type", "application/offset+octet-stream")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers["upload-offset"], "5");
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", 0)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(one(&parse_form(&seen[1]), "file.size"), "0");
}

#[tokio::test]
async fn concatenation() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let mut urls = Vec::new();
    for part in [&b"hello "[..], &b"world"[..]] {
        let r = send(
            tus("POST", &porter.url("/files"))
                .header("upload-length", part.len())
                .header("upload-concat", "partial")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        let url = r.headers["location"].to_str().unwrap().to_string();
        assert_eq!(patch(&url, 0, part, &[]).await.status, 204);
        assert_eq!(head(&url).await.headers["upload-concat"], "partial");
        urls.push(url);
    }
    assert_eq!(backend.count(), 0, "partial uploads never notify");
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-concat", format!("final;{} {}", urls[0], urls[1]))
            .header("upload-metadata", "filename aGVsbG8udHh0")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let final_url = r.headers["location"].to_str().unwrap().to_string();
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.size"), "11");
    assert_eq!(one(&form, "file.md5"), md5_hex(b"hello world"));
    assert_eq!(
        std::fs::read(one(&form, "file.path")).unwrap(),
        b"hello world"
    );
    assert_eq!(patch(&final_url, 11, b"", &[]).await.status, 403);
    assert!(
        head(&final_url).await.headers["upload-concat"]
            .to_str()
            .unwrap()
            .starts_with("final;")
    );
}

#[tokio::test]
async fn backend_failures_follow_spec_4_3() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // The app fails the first notify with 503, then accepts.
    let backend = Backend::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            answer(503, "{\"retry\":true}")
        } else {
            answer(200, "{}")
        }
    })
    .await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let url = create(&porter, 3, "").await;
    let r = patch(&url, 0, b"abc", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    // The retry (a HEAD) sends the metadata again; now accepted.
    let h = head(&url).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["upload-offset"], "3");
    assert_eq!(backend.count(), 2);
    // A 4xx is final: files gone, 410 from then on.
    let refusing = Backend::start(|_| answer(422, "{\"bad\":1}")).await;
    let porter2 = Porter::start(refusing.addr, ROUTE).await;
    let url = create(&porter2, 3, "").await;
    assert_eq!(patch(&url, 0, b"abc", &[]).await.status, 422);
    assert_eq!(head(&url).await.status, 410);
    assert!(tests_root_empty(&porter2));
}

fn tests_root_empty(p: &Porter) -> bool {
    files_under(&p.root()).is_empty()
}

#[tokio::test]
async fn expiry_then_porter_gc() {
    let backend = Backend::ok().await;
    let porter = Porter::start(
        backend.addr,
        &ROUTE.replace("max_file_size", "expire = \"1s\"\nmax_file_size"),
    )
    .await;
    let url = create(&porter, 10, "").await;
    assert_eq!(patch(&url, 0, b"01234", &[]).await.status, 204);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(head(&url).await.status, 410, "expired");
    let out = porter_gc(&porter.dir.path().join("porter.toml"));
    assert!(out.contains("1 expired resumable upload"), "{out}");
    assert_eq!(head(&url).await.status, 404, "collected");
    assert!(files_under(&porter.temp()).is_empty());
}

#[tokio::test]
async fn porter_gc_never_touches_an_upload_in_use() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::ok().await;
    let porter = Porter::start(
        backend.addr,
        &ROUTE.replace("max_file_size", "expire = \"1s\"\nmax_file_size"),
    )
    .await;
    let url = create(&porter, 10, "").await;
    let path = url
        .split_once(&porter.addr.to_string())
        .unwrap()
        .1
        .to_string();
    let mut s = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    let head_text = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 10\r\n\r\n01234"
    );
    s.write_all(head_text.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = porter_gc(&porter.dir.path().join("porter.toml"));
    assert!(out.contains("0 expired resumable upload"), "{out}");
    s.write_all(b"56789").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn authorize_is_asked_at_creation_and_at_completion() {
    let backend = Backend::start(
        |r| match (r.target.as_str(), r.header("x-original-method")) {
            ("/auth", Some("POST")) => answer(204, ""),
            ("/auth", _) => answer(403, "{\"detail\":\"no longer yours\"}"),
            _ => answer(200, "{}"),
        },
    )
    .await;
    let porter = Porter::start(backend.addr, &format!("{ROUTE}authorize = \"/auth\"\n")).await;
    let url = create(&porter, 3, "").await;
    let r = patch(&url, 0, b"abc", &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "{\"detail\":\"no longer yours\"}");
    assert_eq!(
        head(&url).await.status,
        410,
        "a refusal at completion is final"
    );
    let notified = backend
        .requests()
        .iter()
        .filter(|r| r.target == "/uploads/done")
        .count();
    assert_eq!(notified, 0);
    assert!(files_under(&porter.root()).is_empty());
}

#[tokio::test]
async fn checksum_as_a_trailer_of_a_chunked_patch() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let url = create(&porter, 10, "").await;
    let path = url
        .split_once(&porter.addr.to_string())
        .unwrap()
        .1
        .to_string();
    for (trailer, status, offset) in [
        ("md5 AAAAAAAAAAAAAAAAAAAAAA==", "460", "0"),
        ("md5 QQDE1E2pF3JH5EpfwVRneA==", "204", "5"),
    ] {
        let mut s = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
        let req = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n\r\n5\r\n01234\r\n0\r\nUpload-Checksum: {trailer}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert_eq!(head(&url).await.headers["upload-offset"], offset);
    }
}

#[tokio::test]
async fn location_honours_forwarded_headers_only_from_trusted_proxies() {
    let backend = Backend::ok().await;
    for (trusted, expect) in [
        (true, "https://uploads.example/files/"),
        (false, "http://127.0.0.1"),
    ] {
        let server = if trusted {
            "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n"
        } else {
            ""
        };
        let porter = Porter::start(backend.addr, &format!("{server}{ROUTE}")).await;
        let r = send(
            tus("POST", &porter.url("/files"))
                .header("upload-length", 1)
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "uploads.example")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert!(
            r.headers["location"].to_str().unwrap().starts_with(expect),
            "{:?}",
            r.headers["location"]
        );
    }
}

#[tokio::test]
async fn progress_under_the_upload_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::ok().await;
    let porter = Porter::start(
        backend.addr,
        &format!("[progress]\npath = \"/progress\"\n{ROUTE}"),
    )
    .await;
    let url = create(&porter, 200_000, "").await;
    assert_eq!(patch(&url, 0, &[1u8; 50_000], &[]).await.status, 204);
    let id = url.rsplit('/').next().unwrap().to_string();
    let path = url
        .split_once(&porter.addr.to_string())
        .unwrap()
        .1
        .to_string();
    let mut s = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    let req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 50000\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 150000\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&[2u8; 100_000]).await.unwrap();
    let probe = || async {
        send(
            request("GET", &porter.url(&format!("/progress?X-Progress-ID={id}")))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .json()
    };
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = probe().await;
        if seen["received"] == 150_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        serde_json::json!({"state": "uploading", "received": 150000, "size": 200000})
    );
    s.write_all(&[2u8; 50_000]).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(probe().await, serde_json::json!({"state": "done"}));
}

#[tokio::test]
async fn unfinished_concatenation_completes_with_its_last_partial() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let mut urls = Vec::new();
    for len in [6, 5] {
        let r = send(
            tus("POST", &porter.url("/files"))
                .header("upload-length", len)
                .header("upload-concat", "partial")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        urls.push(r.headers["location"].to_str().unwrap().to_string());
    }
    assert_eq!(patch(&urls[0], 0, b"hello ", &[]).await.status, 204);
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-concat", format!("final;{} {}", urls[0], urls[1]))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let final_url = r.headers["location"].to_str().unwrap().to_string();
    let h = head(&final_url).await;
    assert!(
        !h.headers.contains_key("upload-offset"),
        "no offset while partials are unfinished"
    );
    assert_eq!(backend.count(), 0);
    assert_eq!(patch(&urls[1], 0, b"world", &[]).await.status, 204);
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.md5"), md5_hex(b"hello world"));
    assert_eq!(head(&final_url).await.headers["upload-offset"], "11");
}

#[tokio::test]
async fn head_is_423_while_the_app_keeps_failing() {
    let backend = Backend::start(|_| answer(503, "{}")).await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let url = create(&porter, 3, "").await;
    assert_eq!(patch(&url, 0, b"abc", &[]).await.status, 503);
    let h = head(&url).await;
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let backend = Backend::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            answer(503, "{}")
        } else {
            answer(400, "{}")
        }
    })
    .await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let url = create(&porter, 3, "").await;
    assert_eq!(patch(&url, 0, b"abc", &[]).await.status, 503);
    assert_eq!(head(&url).await.status, 410, "the retry met a 4xx: final");
    assert!(files_under(&porter.root()).is_empty());
    // creation-with-upload whose checksum fails: no Location, so nothing may stay.
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", 5)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")
            .body(Full::new(Bytes::from_static(b"01234")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 460);
    let left: Vec<_> = files_under(&porter.temp())
        .into_iter()
        .filter(|p| {
            !p.to_string_lossy()
                .contains(&url.rsplit('/').next().unwrap().to_string())
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn early_refusals_still_speak_tus() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        tus("POST", &porter.url("/files?X-Progress-ID=bad"))
            .header("upload-length", 1)
            .body(Full::default())
            .unwrap(),
    )
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
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        tus("POST", &porter.url("/files"))
            .header("upload-length", 4)
            .header("upload-concat", "partial")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let part = r.headers["location"].to_str().unwrap().to_string();
    assert_eq!(patch(&part, 0, b"abcd", &[]).await.status, 204);
    let finals = |concat: String, extra: Option<(&'static str, &'static str)>| {
        let mut req = tus("POST", &porter.url("/files")).header("upload-concat", concat);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        send(req.body(Full::default()).unwrap())
    };
    let repeated = format!("final;{}", vec![part.as_str(); 1000].join(" "));
    assert_eq!(finals(repeated, None).await.status, 400);
    let twice = format!("final;{part} {part}");
    assert_eq!(finals(twice, None).await.status, 400);
    let with_length = finals(format!("final;{part}"), Some(("upload-length", "4")));
    assert_eq!(with_length.await.status, 400);
    let deferred = finals(format!("final;{part}"), Some(("upload-defer-length", "1")));
    assert_eq!(deferred.await.status, 400);
    assert_eq!(backend.count(), 0, "no final was made");
    assert_eq!(finals(format!("final;{part}"), None).await.status, 201);
    for ct in ["text/plain", "application/octet-stream"] {
        let r = send(
            tus("POST", &porter.url("/files"))
                .header("upload-length", 5)
                .header("content-type", ct)
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
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
    let accept = "accept = [\"image/png\"]\n";
    let porter = Porter::start(
        backend.addr,
        &format!(
            "{ROUTE}{accept}\
             [[upload]]\npath = \"/api/chunked_upload\"\nkind = \"chunked\"\ncomplete = \"/done/\"\n{accept}\
             [[upload]]\npath = \"/resumable\"\nkind = \"nginx-resumable\"\n{accept}"
        ),
    )
    .await;
    let html = b"<!doctype html><script>alert(1)</script>";
    for (name, body, ok) in [
        ("x.png", &html[..], false),
        ("page.html", &html[..], false),
        ("pic.png", PNG, true),
    ] {
        let meta = format!("filename {}", crate::trust::b64(name));
        let r = send(
            tus("POST", &porter.url("/files"))
                .header("upload-length", body.len())
                .header("upload-metadata", meta)
                .header("content-type", "application/offset+octet-stream")
                .body(Full::new(Bytes::from(body.to_vec())))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, if ok { 201 } else { 415 }, "tus {name}");
        // chunked, whole file in one chunk, then completion
        let form = Form::new().file("file", name, "image/png", body);
        let (ct, raw) = form.finish();
        let r = send(
            request("POST", &porter.url("/api/chunked_upload/"))
                .header("content-type", ct)
                .body(Full::new(Bytes::from(raw)))
                .unwrap(),
        )
        .await;
        let id = r.json()["upload_id"].as_str().expect("id").to_string();
        let r = send(
            request("POST", &porter.url("/done/"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(format!(
                    "upload_id={id}&md5={}",
                    md5_hex(body)
                ))))
                .unwrap(),
        )
        .await;
        assert_eq!(
            r.status,
            if ok { 200 } else { 415 },
            "chunked {name}: {:?}",
            r.body
        );
        let r = send(
            request("POST", &porter.url("/resumable"))
                .header(
                    "content-disposition",
                    format!("attachment; filename=\"{name}\""),
                )
                .header(
                    "x-content-range",
                    format!("bytes 0-{}/{}", body.len() - 1, body.len()),
                )
                .header(
                    "x-session-id",
                    format!("accept-session-{}", name.replace('.', "-")),
                )
                .body(Full::new(Bytes::from(body.to_vec())))
                .unwrap(),
        )
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
    let porter = Porter::start(backend.addr, ROUTE).await;
    let config = porter.dir.path().join("porter.toml");
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
            (patch(&url, 0, b"x", &[]).await.status, url)
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
