//! The IETF resumable-upload draft (interop version 6) on a tus route: every status
//! and header docs/guides/resumable-clients.md names, the 104 over HTTP/1.1 (plain and TLS) read off the wire,
//! a takeover of an upload still busy in a stalled request, and tus beside it.

use crate::support::draft::{append, head, request as draft};
use crate::support::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const MAX: u64 = 1 << 20;

fn route(expire: &str) -> Upload {
    tus::route().max_file_size(MAX as i64).expire(expire)
}

/// A creation at `porter`'s tus route.
async fn create(porter: &Porter, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    draft::create(&porter.url("/files"), headers, body).await
}

fn problem(r: &Reply, status: u16, kind: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("content-type"), "application/problem+json");
    let p = r.json();
    assert_eq!(p["type"], kind, "{p}");
    assert_eq!(p["status"], status);
    p
}

const IANA: &str = "https://iana.org/assignments/http-problem-types#";

fn check_notify(backend: &Backend, content: &[u8], name: &str, ctype: &str) {
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "one notify");
    assert_eq!(seen[0].target, "/uploads/done");
    let form = parse_form(&seen[0]);
    assert_eq!(one(&form, "file.name"), name);
    assert_eq!(one(&form, "file.content_type"), ctype);
    assert_file(&form, "file", content);
}

#[tokio::test]
async fn create_then_append_in_parts_and_notify() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let content = data(300_000, 3);
    // tus-js-client's creation: Upload-Length, Upload-Metadata, Upload-Complete: ?0.
    let r = create(
        &porter,
        &[
            ("upload-complete", "?0"),
            ("upload-length", "300000"),
            (
                "upload-metadata",
                "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.location();
    assert!(
        url.starts_with(&format!("http://{}/files/", porter.addr)),
        "{url}"
    );
    assert_eq!(r.header("upload-offset"), "0");
    assert_eq!(r.header("upload-complete"), "?0");
    assert_eq!(
        r.header("upload-limit"),
        format!("max-size={MAX}, expires=3600")
    );
    assert!(
        r.headers.get("tus-resumable").is_none(),
        "a draft answer is not tus"
    );
    let h = head(&url).await;
    assert_eq!(h.status, 204);
    assert_eq!(h.header("upload-offset"), "0");
    assert_eq!(h.header("upload-complete"), "?0");
    assert_eq!(h.header("upload-length"), "300000");
    assert_eq!(h.header("cache-control"), "no-store");
    assert!(
        h.header("upload-limit")
            .starts_with(&format!("max-size={MAX}, expires="))
    );
    let r = append(&url, 0, false, &content[..100_000], &[]).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(r.header("upload-offset"), "100000");
    assert_eq!(r.header("upload-complete"), "?0");
    assert_eq!(backend.count(), 0);
    // The completing append's answer is the app's, with the draft's headers.
    let r = append(&url, 100_000, true, &content[100_000..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, r#"{"ok":true}"#);
    assert_eq!(r.header("upload-offset"), "300000");
    assert_eq!(r.header("upload-complete"), "?1");
    check_notify(&backend, &content, "report.pdf", "application/pdf");
    let h = head(&url).await;
    assert_eq!(h.status, 204);
    assert_eq!(h.header("upload-complete"), "?1");
    assert_eq!(h.header("upload-offset"), "300000");
    // An append to it now is the draft's completed-upload problem.
    let r = append(&url, 300_000, true, b"more", &[]).await;
    problem(&r, 400, &format!("{IANA}completed-upload"));
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_creation_with_the_whole_file_answers_with_the_apps_response() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let content = data(200_000, 4);
    let r = create(
        &porter,
        &[
            ("upload-complete", "?1"),
            ("content-type", "text/csv"),
            ("content-disposition", "attachment; filename=\"sales.csv\""),
        ],
        &content,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, r#"{"ok":true}"#);
    assert_eq!(r.header("upload-complete"), "?1");
    assert_eq!(r.header("upload-offset"), "200000");
    assert!(r.header("location").contains("/files/"));
    check_notify(&backend, &content, "sales.csv", "text/csv");
    // A creation with no body and ?1 is an empty file, complete at once.
    let r = create(&porter, &[("upload-complete", "?1")], b"").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("upload-offset"), "0");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn a_creation_with_part_of_the_file_and_no_length_resumes_by_patch() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let content = data(150_000, 5);
    let r = create(
        &porter,
        &[
            ("upload-complete", "?0"),
            ("content-disposition", "attachment; filename=\"a.bin\""),
        ],
        &content[..50_000],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("upload-offset"), "50000");
    let url = r.location();
    let h = head(&url).await;
    assert!(
        h.headers.get("upload-length").is_none(),
        "the length is not known yet"
    );
    // The completing append tells the length by its size.
    let r = append(&url, 50_000, true, &content[50_000..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    check_notify(&backend, &content, "a.bin", "");
}

#[tokio::test]
async fn offset_length_and_request_errors_are_problems() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let r = create(
        &porter,
        &[("upload-complete", "?0"), ("upload-length", "1000")],
        b"",
    )
    .await;
    let url = r.location();
    append(&url, 0, false, &[1; 100], &[]).await;
    // A wrong offset: 409, the server's offset, Upload-Complete: ?0, and the draft's body.
    let r = append(&url, 40, false, &[1; 10], &[]).await;
    let p = problem(&r, 409, &format!("{IANA}mismatching-upload-offset"));
    assert_eq!(p["expected-offset"], 100);
    assert_eq!(p["provided-offset"], 40);
    assert!(p["title"].is_string());
    assert_eq!(r.header("upload-offset"), "100");
    assert_eq!(r.header("upload-complete"), "?0");
    // A length contradicting the one given at creation.
    let r = append(&url, 100, false, &[1; 10], &[("upload-length", "999")]).await;
    problem(&r, 400, &format!("{IANA}inconsistent-upload-length"));
    // A "complete" append that ends short of the length.
    let r = append(&url, 100, true, &[1; 10], &[]).await;
    problem(&r, 400, &format!("{IANA}inconsistent-upload-length"));
    assert_eq!(
        head(&url).await.header("upload-offset"),
        "100",
        "nothing was taken"
    );
    // An append without the draft's media type.
    let r = draft("PATCH", &url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "100")
        .header("upload-complete", "?0")
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 415);
    // Missing or malformed Upload-Complete.
    let r = draft("PATCH", &url)
        .header("content-type", "application/partial-upload")
        .header("upload-offset", "100")
        .header("upload-complete", "yes")
        .send()
        .await;
    problem(&r, 400, "about:blank");
    let r = create(&porter, &[], b"").await;
    problem(&r, 400, "about:blank");
    // An offset retrieval may not carry Upload-Offset or Upload-Complete.
    let r = draft("HEAD", &url)
        .header("upload-offset", "0")
        .send()
        .await;
    assert_eq!(r.status, 400);
    // Unknown upload.
    let r = head(&porter.url("/files/0123456789abcdef0123456789abcdef")).await;
    assert_eq!(r.status, 404);
    // Another interop version: 400 listing the supported ones.
    let r = request("POST", &porter.url("/files"))
        .header("upload-draft-interop-version", "3")
        .header("upload-complete", "?0")
        .send()
        .await;
    let p = problem(&r, 400, "about:blank");
    assert_eq!(p["supported-versions"], serde_json::json!([6]));
    // Both protocols in one request.
    let r = create(
        &porter,
        &[("upload-complete", "?0"), ("tus-resumable", "1.0.0")],
        b"",
    )
    .await;
    problem(&r, 400, "about:blank");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn limits_answer_413_with_upload_limit_and_keep_nothing_past_them() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let big = (MAX + 1).to_string();
    let r = create(
        &porter,
        &[("upload-complete", "?0"), ("upload-length", &big)],
        b"",
    )
    .await;
    problem(&r, 413, "about:blank");
    assert!(
        r.header("upload-limit")
            .starts_with(&format!("max-size={MAX},"))
    );
    // No length: the append that would pass max-size is refused whole.
    let r = create(&porter, &[("upload-complete", "?0")], b"").await;
    let url = r.location();
    append(&url, 0, false, &vec![1; 1000], &[]).await;
    let r = append(&url, 1000, false, &vec![2; MAX as usize], &[]).await;
    problem(&r, 413, "about:blank");
    assert!(
        r.header("upload-limit")
            .starts_with(&format!("max-size={MAX},"))
    );
    assert_eq!(head(&url).await.header("upload-offset"), "1000");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn cancellation_and_expiry() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1s")).await;
    let r = create(&porter, &[("upload-complete", "?0")], &[7; 500]).await;
    let url = r.location();
    let id = url.rsplit('/').next().unwrap().to_string();
    let r = draft("DELETE", &url).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(head(&url).await.status, 404);
    let leftovers: Vec<_> = files_under(porter.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&id))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Expiry: 410 once `expire` has passed.
    let r = create(&porter, &[("upload-complete", "?0")], &[7; 500]).await;
    let url = r.location();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = head(&url).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.header("content-type"), "application/problem+json");
    // `porter gc` collects it, as it does tus uploads.
    let stdout = porter_gc(&porter.config());
    assert!(stdout.contains("1 expired resumable upload"), "{stdout}");
    assert_eq!(head(&url).await.status, 404, "collected");
    assert!(files_under(&porter.temp()).is_empty());
}

/// docs/reference/metadata.md through the draft: a 5xx keeps the upload for a retry (HEAD sends the
/// metadata again); a 4xx is final and relayed, and the upload is gone (410).
#[tokio::test]
async fn the_apps_refusals_follow_the_completion_rules() {
    let backend = backend()
        .once(503, r#"{"later":1}"#)
        .once(201, r#"{"id":7}"#)
        .reply(422, r#"{"bad":1}"#)
        .run()
        .await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let r = create(&porter, &[("upload-complete", "?1")], &[1; 1000]).await;
    assert_eq!(r.status, 503, "the app's answer is relayed");
    assert_eq!(r.body, r#"{"later":1}"#);
    let url = r.location();
    // The retry (a HEAD) sends the metadata again; now the app accepts.
    let h = head(&url).await;
    assert_eq!(h.status, 204, "{:?}", h.body);
    assert_eq!(h.header("upload-complete"), "?1");
    assert_eq!(backend.count(), 2);
    // A 4xx is final.
    let r = create(&porter, &[("upload-complete", "?1")], &[2; 1000]).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body, r#"{"bad":1}"#);
    let url = r.location();
    assert_eq!(head(&url).await.status, 410);
    let stored = files_under(&porter.root());
    assert_eq!(stored.len(), 1, "only the accepted file stays: {stored:?}");
}

fn with_progress() -> Config {
    Config::from(route("1h")).progress("/progress")
}

/// URLSession's flow: the whole file in the creation request; the 104 tells the
/// Location before the body is read, so after a cut the client resumes from HEAD.
#[tokio::test(flavor = "multi_thread")]
async fn the_104_comes_before_the_body_and_lets_a_cut_creation_resume() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, with_progress()).await;
    let content = data(400_000, 9);
    let head_text = format!(
        "POST /files HTTP/1.1\r\nHost: {}\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"photo.heic\"\r\nContent-Length: {}\r\n\r\n",
        porter.addr,
        content.len()
    );
    let mut s = wire::open(porter.addr, head_text.as_bytes()).await;
    // Not one body byte sent yet: the 104 must arrive on its own.
    let interim = wire::read_until(&mut s, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 104 Upload Resumption Supported\r\n"),
        "{interim}"
    );
    assert!(
        interim.contains("upload-draft-interop-version: 6\r\n"),
        "{interim}"
    );
    let url = interim
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a Location in the 104")
        .to_string();
    s.write_all(&content[..150_000]).await.unwrap();
    // Once porter has the bytes, the connection is cut; the client asks where it stands.
    wait_received(&porter, tus::id(&url), 150_000).await;
    drop(s);
    let offset: u64 = head(&url).await.header("upload-offset").parse().unwrap();
    assert_eq!(offset, 150_000);
    let r = append(&url, offset, true, &content[150_000..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    check_notify(&backend, &content, "photo.heic", "application/octet-stream");
}

/// A request that finds the upload busy in an older one (porter has not noticed that
/// client is gone) takes it over: the older stops and keeps what it wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_request_takes_over_an_upload_busy_in_a_stalled_one() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, with_progress()).await;
    let content = data(100_000, 11);
    let r = create(
        &porter,
        &[("upload-complete", "?0"), ("upload-length", "100000")],
        b"",
    )
    .await;
    let url = r.location();
    let req = draft::append_head(tus::path(&url), 100_000);
    let mut s = wire::open(porter.addr, req.as_bytes()).await;
    s.write_all(&content[..30_000]).await.unwrap();
    wait_received(&porter, tus::id(&url), 30_000).await;
    // The stalled request holds the upload; the HEAD stops it rather than wait for it.
    let r = head(&url).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let offset: u64 = r.header("upload-offset").parse().unwrap();
    assert_eq!(offset, 30_000, "the older request kept what it wrote");
    // The older request was told it lost the upload (not timed out: that would be 408).
    let answer = wire::read_until(&mut s, "\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let r = append(&url, offset, true, &content[30_000..], &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(backend.count(), 1);
    let form = backend.first_form();
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
}

/// A tus upload and a draft upload on one route at the same time, interleaved.
#[tokio::test(flavor = "multi_thread")]
async fn tus_and_draft_uploads_share_a_route() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("1h")).await;
    let (a, b) = (data(256_000, 1), data(256_000, 2));
    let r = tus::creation(&porter.url("/files"), a.len())
        .header("upload-metadata", "filename dHVzLmJpbg==")
        .send()
        .await;
    assert_eq!(r.status, 201);
    let tus_url = r.location();
    let r = create(
        &porter,
        &[
            ("upload-complete", "?0"),
            ("upload-metadata", "filename ZHJhZnQuYmlu"),
        ],
        b"",
    )
    .await;
    let draft_url = r.location();
    let tus_side = async {
        for (i, chunk) in a.chunks(32_000).enumerate() {
            let r = tus::patch(&tus_url, i * 32_000, chunk).await;
            assert_eq!(r.status, 204, "{:?}", r.body);
        }
    };
    let draft_side = async {
        let n = b.len() / 32_000;
        for (i, chunk) in b.chunks(32_000).enumerate() {
            let r = append(&draft_url, (i * 32_000) as u64, i + 1 == n, chunk, &[]).await;
            assert!(r.status == 204 || r.status == 200, "{:?}", r.body);
        }
    };
    tokio::join!(tus_side, draft_side);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    let mut got: Vec<(String, String)> = seen
        .iter()
        .map(|r| {
            let f = parse_form(r);
            (
                one(&f, "file.name").to_string(),
                one(&f, "file.sha256").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("draft.bin".to_string(), sha256_hex(&b)),
            ("tus.bin".to_string(), sha256_hex(&a)),
        ]
    );
    // Each protocol can read the other's upload state.
    assert_eq!(
        tus::head(&draft_url).await.header("upload-offset"),
        b.len().to_string()
    );
}

/// curl prints the interim responses it gets: over HTTP/1.1 (TLS too) there is a 104;
/// over HTTP/2 hyper cannot send one, and the upload works without it.
#[tokio::test(flavor = "multi_thread")]
async fn curl_sees_the_104_on_http1_and_tls_and_none_on_h2() {
    let backend = Backend::ok().await;
    let (porter, pki) = crate::tls::https_porter(backend.addr, route("1h")).await;
    let ca = pki.path().join("ca.pem");
    let file = pki.path().join("body.bin");
    std::fs::write(&file, data(100_000, 6)).unwrap();
    for (flag, expect_104) in [("--http1.1", true), ("--http2", false)] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-v", "--max-time", "30", flag, "--cacert"])
            .arg(&ca)
            .args(["--resolve", &crate::tls::resolve(&porter, "localhost")])
            .args([
                "-H",
                "Upload-Draft-Interop-Version: 6",
                "-H",
                "Upload-Complete: ?1",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(crate::tls::https_url(&porter, "localhost", "/files"))
            .output()
            .await
            .unwrap();
        let verbose = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{verbose}");
        assert_eq!(
            verbose.contains("< HTTP/1.1 104"),
            expect_104,
            "{flag}: {verbose}"
        );
        assert!(verbose.contains("upload-complete: ?1"), "{flag}: {verbose}");
    }
    assert_eq!(backend.count(), 2);
    porter.stop().await;
}
