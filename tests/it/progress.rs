use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONF: &str = "[progress]\npath = \"/progress\"\n[[upload]]\npath = \"/raw\"\nkind = \"raw\"\nmax_file_size = \"1MiB\"\n";

async fn probe(porter: &Porter, id: &str) -> serde_json::Value {
    let r = send(
        request("GET", &porter.url(&format!("/progress?X-Progress-ID={id}")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-cache");
    r.json()
}

#[tokio::test]
async fn states_during_and_after_an_upload() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, CONF).await;
    assert_eq!(
        probe(&porter, "unknown-id-1").await,
        serde_json::json!({"state": "starting"})
    );
    let mut s = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    s.write_all(b"PUT /raw/f.bin?X-Progress-ID=upload-0001 HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&vec![1u8; 100_000]).await.unwrap();
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = probe(&porter, "upload-0001").await;
        if seen["received"] == 100_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        serde_json::json!({"state": "uploading", "received": 100000, "size": 300000})
    );
    s.write_all(&vec![1u8; 200_000]).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(
        probe(&porter, "upload-0001").await,
        serde_json::json!({"state": "done"})
    );
    // The event stream of a finished upload: one event, then the end.
    let r = send(
        request("GET", &porter.url("/progress?X-Progress-ID=upload-0001"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap(),
    )
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
    let porter = Porter::start(backend.addr, CONF).await;
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
    assert_eq!(send_fed(req, body).await, 413);
    feed.abort();
    assert_eq!(
        probe(&porter, "too-big-0001").await,
        serde_json::json!({"state": "error", "status": 413})
    );
    for i in 0..50 {
        let r = send(
            request("PUT", &porter.url("/raw/big.bin"))
                .header("x-progress-id", format!("refused-early-{i:04}"))
                .body(Full::new(Bytes::from(vec![0u8; 2 << 20])))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 413);
    }
    assert_eq!(
        probe(&porter, "refused-early-0007").await,
        serde_json::json!({"state": "starting"}),
        "never listed"
    );
}

/// A live upload keeps its `X-Progress-ID`: another request naming it is 409, and the
/// first upload's progress is untouched.
#[tokio::test]
async fn a_live_progress_id_keeps_its_owner() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, CONF).await;
    let (tx, body) = fed();
    let url = porter.url("/raw/slow.bin");
    let first = tokio::spawn(async move {
        let req = request("PUT", &url).header("x-progress-id", "owned-id-0001");
        send_fed(req, body).await
    });
    tx.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = probe(&porter, "owned-id-0001").await;
        if seen["received"] == 1000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen["received"], 1000, "{seen}");
    let r = send(
        request("PUT", &porter.url("/raw/other.bin"))
            .header("x-progress-id", "owned-id-0001")
            .body(Full::new(Bytes::from(vec![2u8; 10])))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(probe(&porter, "owned-id-0001").await["received"], 1000);
    drop(tx);
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn bad_ids_and_methods() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, CONF).await;
    let r = send(
        request("GET", &porter.url("/progress?X-Progress-ID=a/b"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        request("POST", &porter.url("/progress?X-Progress-ID=abcdefgh"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
    let r = send(
        request("PUT", &porter.url("/raw/x?X-Progress-ID=short"))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(backend.count(), 0);
}
