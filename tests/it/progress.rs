use crate::support::*;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

/// Progress at `/progress`, and a raw route of at most 1 MiB.
fn config() -> Config {
    Config::from(Upload::raw("/raw").max_file_size("1MiB")).progress("/progress")
}

#[tokio::test]
async fn states_during_and_after_an_upload() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, config()).await;
    assert_eq!(
        progress(&porter, "unknown-id-1").await,
        serde_json::json!({"state": "starting"})
    );
    let head = wire::head("PUT", "/raw/f.bin?X-Progress-ID=upload-0001", &[], 300_000);
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    s.write_all(&vec![1u8; 100_000]).await.unwrap();
    assert_eq!(
        wait_received(&porter, "upload-0001", 100_000).await,
        serde_json::json!({"state": "uploading", "received": 100000, "size": 300000})
    );
    s.write_all(&vec![1u8; 200_000]).await.unwrap();
    assert!(wire::answer(&mut s).await.starts_with("HTTP/1.1 200"));
    assert_eq!(
        progress(&porter, "upload-0001").await,
        serde_json::json!({"state": "done"})
    );
    // The event stream of a finished upload: one event, then the end.
    let r = request("GET", &porter.url("/progress?X-Progress-ID=upload-0001"))
        .header("accept", "text/event-stream")
        .send()
        .await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.body, "data: {\"state\":\"done\"}\n\n");
}

/// An upload refused once its bytes flow reports its status; one refused before a
/// byte was read (a declared length over the limit) takes no place in the registry,
/// so refusals cannot fill it.
#[tokio::test]
async fn a_refused_upload_reports_its_status() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, config()).await;
    // No declared length: refused only once more than the limit has flowed.
    let (tx, body) = fed();
    let feed = tokio::spawn(async move {
        for _ in 0..3 {
            if tx.send(Bytes::from(vec![0u8; 1 << 20])).await.is_err() {
                return;
            }
        }
    });
    let req = request("PUT", &porter.url("/raw/big.bin")).header("x-progress-id", "too-big-0001");
    assert_eq!(req.send_fed(body).await, 413);
    feed.abort();
    assert_eq!(
        progress(&porter, "too-big-0001").await,
        serde_json::json!({"state": "error", "status": 413})
    );
    for i in 0..50 {
        let r = request("PUT", &porter.url("/raw/big.bin"))
            .header("x-progress-id", format!("refused-early-{i:04}"))
            .body(vec![0u8; 2 << 20])
            .send()
            .await;
        assert_eq!(r.status, 413);
    }
    assert_eq!(
        progress(&porter, "refused-early-0007").await,
        serde_json::json!({"state": "starting"}),
        "never listed"
    );
}

/// A live upload keeps its `X-Progress-ID`: another request naming it is 409, and the
/// first upload's progress is untouched.
#[tokio::test]
async fn a_live_progress_id_keeps_its_owner() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, config()).await;
    let (tx, body) = fed();
    let first = request("PUT", &porter.url("/raw/slow.bin"))
        .header("x-progress-id", "owned-id-0001")
        .send_fed(body);
    let first = tokio::spawn(first);
    tx.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    let seen = wait_received(&porter, "owned-id-0001", 1000).await;
    assert_eq!(seen["received"], 1000, "{seen}");
    let r = request("PUT", &porter.url("/raw/other.bin"))
        .header("x-progress-id", "owned-id-0001")
        .body(vec![2u8; 10])
        .send()
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(progress(&porter, "owned-id-0001").await["received"], 1000);
    drop(tx);
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn bad_ids_and_methods() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, config()).await;
    let r = request("GET", &porter.url("/progress?X-Progress-ID=a/b"))
        .send()
        .await;
    assert_eq!(r.status, 400);
    let r = request("POST", &porter.url("/progress?X-Progress-ID=abcdefgh"))
        .send()
        .await;
    assert_eq!(r.status, 405);
    let r = request("PUT", &porter.url("/raw/x?X-Progress-ID=short"))
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(backend.count(), 0);
}
