//! The `[metrics]` listener: `/metrics` scraped and parsed after real traffic,
//! `/healthz`, and `/readyz` failing for a dead backend or low disk.

use crate::support::*;
use std::collections::HashMap;

/// `name{labels}` → value, from the Prometheus / OpenMetrics text.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(port: u16, path: &str) -> (u16, String) {
    // The in-process server binds the metrics listener as it starts, after the test
    // already holds the public one (starting the workers widened that window).
    wait_listening(port).await;
    let (code, body) = curl(&[&format!("http://127.0.0.1:{port}{path}")]).await;
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn metrics_count_requests_uploads_downloads_and_backend_answers() {
    let backend = backend()
        .route_fn("/dl", |_| accel("/protected/file.bin"))
        .run()
        .await;
    let mport = free_port();
    let files = tempfile::tempdir().expect("tempdir");
    let blob = data(50_000, 1);
    std::fs::write(files.path().join("file.bin"), &blob).expect("write");
    let config = Config::from(Upload::multipart("/upload").hashes(&["md5"]))
        .metrics(mport)
        .internal("/protected/", files.path().display().to_string());
    let porter = Porter::start(backend.addr, config).await;
    let form = Form::one_file("a.bin", &data(123_456, 2));
    let reply = request("POST", &porter.url("/upload"))
        .form(form)
        .send()
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(curl(&[&porter.url("/page")]).await.0, 200);
    let (code, got) = curl(&[&porter.url("/dl")]).await;
    assert_eq!((code, got.len()), (200, blob.len()));
    // Give the access-log guards (dropped when bodies finish) a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (code, text) = scrape(mport, "/metrics").await;
    assert_eq!(code, 200);
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(
        get(r#"porter_requests_total{route="/upload",status="200"}"#),
        1.0
    );
    assert_eq!(
        get(r#"porter_requests_total{route="passthrough",status="200"}"#),
        2.0
    );
    assert!(get(r#"porter_upload_bytes_total{kind="multipart"}"#) > 123_456.0);
    assert_eq!(
        get(r#"porter_uploads_total{kind="multipart",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        get(r#"porter_upload_duration_seconds_count{kind="multipart"}"#),
        1.0
    );
    assert_eq!(
        get(r#"porter_upload_duration_seconds_bucket{le="+Inf",kind="multipart"}"#),
        1.0
    );
    let buckets = m
        .keys()
        .filter(|k| k.starts_with("porter_upload_duration_seconds_bucket"))
        .count();
    assert_eq!(buckets, 21, "a fixed set of buckets");
    assert_eq!(get("porter_uploads_in_flight"), 0.0);
    assert_eq!(get("porter_download_bytes_total"), blob.len() as f64);
    assert_eq!(get(r#"porter_backend_requests_total{status="200"}"#), 3.0);
    assert!(get("porter_storage_free_bytes") > 0.0);
    assert_eq!(get("porter_resumable_uploads"), 0.0);
    assert_eq!(scrape(mport, "/healthz").await.0, 200);
    assert_eq!(scrape(mport, "/readyz").await.0, 200);
    // The metrics listener is not the public one.
    assert_eq!(
        curl(&[&porter.url("/metrics")]).await.0,
        200,
        "passed through to the app"
    );
    assert_eq!(
        backend.requests().last().expect("request").target,
        "/metrics"
    );
    porter.stop().await;
}

#[tokio::test]
async fn readyz_fails_for_a_dead_backend_and_for_low_disk() {
    let mport = free_port();
    let porter = Porter::start(dead_addr(), Config::new().metrics(mport)).await;
    let (code, why) = scrape(mport, "/readyz").await;
    assert_eq!(code, 503);
    assert!(why.contains("backend unreachable"), "{why}");
    assert_eq!(scrape(mport, "/healthz").await.0, 200);
    porter.stop().await;

    let backend = Backend::ok().await;
    let mport = free_port();
    let config = Config::new()
        .metrics(mport)
        .set("storage.min_free", "1000TiB");
    let porter = Porter::start(backend.addr, config).await;
    let (code, why) = scrape(mport, "/readyz").await;
    assert_eq!(code, 503);
    assert!(why.contains("below min_free"), "{why}");
    porter.stop().await;
}
