//! Each protocol, end to end, over the memory store.

use super::harness::{Porter, data, md5, route, sha256};
use http::StatusCode;

fn tus_route() -> String {
    route(
        "/files/",
        "tus",
        "notify = \"/done\"\nhashes = [\"sha256\"]",
    )
}

/// The path of a `Location`.
fn path_of(location: &str) -> String {
    let rest = location.split_once("://").map_or(location, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_string())
}

async fn tus_create(porter: &Porter, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("tus-resumable", "1.0.0")];
    all.extend_from_slice(headers);
    let (status, h, _) = porter.send("POST", "/files/", &all, "").await;
    assert_eq!(status, StatusCode::CREATED);
    path_of(h["location"].to_str().expect("location"))
}

async fn tus_patch(porter: &Porter, url: &str, offset: usize, bytes: &[u8]) -> StatusCode {
    let offset = offset.to_string();
    let headers = [
        ("tus-resumable", "1.0.0"),
        ("content-type", "application/offset+octet-stream"),
        ("upload-offset", offset.as_str()),
    ];
    porter.send("PATCH", url, &headers, bytes.to_vec()).await.0
}

#[tokio::test]
async fn tus_upload_lands_in_the_store_and_the_app_is_told() {
    let porter = Porter::start(&tus_route()).await;
    let content = data(300_000);
    let url = tus_create(&porter, &[("upload-length", "300000")]).await;
    assert_eq!(
        tus_patch(&porter, &url, 0, &content[..100_000]).await,
        StatusCode::NO_CONTENT
    );
    let (status, h, _) = porter
        .send("HEAD", &url, &[("tus-resumable", "1.0.0")], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["upload-offset"], "100000");
    assert_eq!(
        tus_patch(&porter, &url, 100_000, &content[100_000..]).await,
        StatusCode::NO_CONTENT
    );
    let told = porter.told_the_file(&content);
    assert_eq!(told.target, "/done");
    assert_eq!(told.field("file.size"), "300000");
    assert_eq!(told.field("file.sha256"), sha256(&content));
    assert_eq!(told.field("file.path"), "", "a memory store has no paths");
}

#[tokio::test]
async fn tus_offers_and_does_concatenation_where_the_store_reads_back() {
    let porter = Porter::start(&tus_route()).await;
    let (_, h, _) = porter
        .send("OPTIONS", "/files/", &[("tus-resumable", "1.0.0")], "")
        .await;
    let extensions = h["tus-extension"].to_str().expect("extensions");
    assert!(extensions.contains("concatenation"), "{extensions}");
    let content = data(5000);
    let mut parts = Vec::new();
    for piece in [&content[..2000], &content[2000..]] {
        let len = piece.len().to_string();
        let url = tus_create(
            &porter,
            &[
                ("upload-length", len.as_str()),
                ("upload-concat", "partial"),
            ],
        )
        .await;
        assert_eq!(
            tus_patch(&porter, &url, 0, piece).await,
            StatusCode::NO_CONTENT
        );
        parts.push(url);
    }
    assert!(
        porter.app.told().is_empty(),
        "partial uploads are never announced"
    );
    let concat = format!("final;{} {}", parts[0], parts[1]);
    tus_create(&porter, &[("upload-concat", concat.as_str())]).await;
    let told = porter.told_the_file(&content);
    assert_eq!(told.field("file.sha256"), sha256(&content));
}

#[tokio::test]
async fn draft_upload_in_one_request() {
    let porter = Porter::start(&tus_route()).await;
    let content = data(70_000);
    let headers = [
        ("upload-draft-interop-version", "6"),
        ("upload-complete", "?1"),
    ];
    let (status, _, _) = porter
        .send("POST", "/files/", &headers, content.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    porter.told_the_file(&content);
}

#[tokio::test]
async fn nginx_resumable_segments_out_of_order() {
    let hashes = "notify = \"/done\"\nhashes = [\"md5\", \"sha256\"]";
    let porter = Porter::start(&route("/resumable", "nginx-resumable", hashes)).await;
    let content = data(30_000);
    let mut last = StatusCode::OK;
    for (a, b) in [(20_000, 29_999), (0, 9_999), (10_000, 19_999)] {
        let range = format!("bytes {a}-{b}/30000");
        let headers = [
            ("x-content-range", range.as_str()),
            ("x-session-id", "session-memory-0001"),
            ("content-disposition", "attachment; filename=\"a.bin\""),
        ];
        last = porter
            .send("POST", "/resumable", &headers, content[a..=b].to_vec())
            .await
            .0;
    }
    assert_eq!(last, StatusCode::OK);
    let told = porter.told_the_file(&content);
    assert_eq!(told.field("file.md5"), md5(&content));
    assert_eq!(told.field("file.sha256"), sha256(&content));
}

/// A multipart form with one file field.
fn form(name: &str, bytes: &[u8], extra: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "memoryboundary42";
    let mut body = Vec::new();
    for (k, v) in extra {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn chunked_upload_then_completion() {
    let completion = "complete = \"/chunks/done\"";
    let porter = Porter::start(&route("/chunks", "chunked", completion)).await;
    let content = data(50_000);
    let mut id = String::new();
    for (a, b) in [(0, 24_999), (25_000, 49_999)] {
        let extra: Vec<(&str, &str)> = if id.is_empty() {
            Vec::new()
        } else {
            vec![("upload_id", id.as_str())]
        };
        let (ct, body) = form("file", &content[a..=b], &extra);
        let range = format!("bytes {a}-{b}/50000");
        let headers = [
            ("content-type", ct.as_str()),
            ("content-range", range.as_str()),
        ];
        let (status, _, body) = porter.send("POST", "/chunks", &headers, body).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
        id = answer["upload_id"].as_str().expect("upload_id").to_string();
    }
    let fields = format!("upload_id={id}&md5={}", md5(&content));
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, _) = porter.send("POST", "/chunks/done", &headers, fields).await;
    assert_eq!(status, StatusCode::OK);
    let told = porter.told_the_file(&content);
    assert_eq!(told.field("upload_id"), id);
}

#[tokio::test]
async fn multipart_file_lands_in_the_store() {
    let hashes = "hashes = [\"sha256\"]";
    let porter = Porter::start(&route("/form", "multipart", hashes)).await;
    let content = data(10_000);
    let (ct, body) = form("file", &content, &[("title", "memory")]);
    let (status, _, _) = porter
        .send("POST", "/form", &[("content-type", ct.as_str())], body)
        .await;
    assert_eq!(status, StatusCode::OK);
    let told = porter.told_the_file(&content);
    assert_eq!(told.field("title"), "memory");
    assert_eq!(told.field("file.sha256"), sha256(&content));
}
