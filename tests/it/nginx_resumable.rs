//! The nginx-upload-module resumable protocol: segments out of order and in parallel,
//! overlaps, and a retry after the app was down.

use crate::support::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn route() -> Upload {
    Upload::nginx_resumable("/resumable")
        .set("notify", "/uploads/done")
        .hashes(&["md5", "sha256"])
}

/// A segment of `movie.mp4`.
async fn segment(porter: &Porter, session: &str, data: &[u8], start: usize, total: usize) -> Reply {
    nginx::segment(&porter.url("/resumable"), session, data, start, total)
        .header("content-disposition", "attachment; filename=\"movie.mp4\"")
        .header("content-type", "video/mp4")
        .send()
        .await
}

#[tokio::test]
async fn segments_out_of_order_and_in_parallel() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(512_000, 3);
    let seg = 102_400;
    // The last segment first, then two in parallel, then the rest.
    let r = segment(
        &porter,
        "session-one-0001",
        &content[4 * seg..],
        4 * seg,
        content.len(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, "409600-511999/512000");
    assert_eq!(r.headers["range"], "409600-511999/512000");
    let (a, b) = tokio::join!(
        segment(
            &porter,
            "session-one-0001",
            &content[..seg],
            0,
            content.len()
        ),
        segment(
            &porter,
            "session-one-0001",
            &content[2 * seg..3 * seg],
            2 * seg,
            content.len()
        ),
    );
    assert_eq!((a.status, b.status), (201, 201));
    // An overlapping resend of stored bytes rewrites them.
    let r = segment(
        &porter,
        "session-one-0001",
        &content[..seg],
        0,
        content.len(),
    )
    .await;
    assert_eq!(
        r.body,
        "0-102399/512000,204800-307199/512000,409600-511999/512000"
    );
    assert_eq!(backend.count(), 0);
    let r = segment(
        &porter,
        "session-one-0001",
        &content[3 * seg..4 * seg],
        3 * seg,
        content.len(),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = segment(
        &porter,
        "session-one-0001",
        &content[seg..2 * seg],
        seg,
        content.len(),
    )
    .await;
    assert_eq!(r.status, 200, "the app's answer to the completing segment");
    let form = backend.first_form();
    assert_eq!(one(&form, "file.name"), "movie.mp4");
    assert_eq!(one(&form, "file.content_type"), "video/mp4");
    assert_file(&form, "file", &content);
}

#[tokio::test]
async fn overlap_in_flight_is_409_and_bad_lengths_416() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    // A segment that stays in flight: headers and half its body, then a pause.
    let head = wire::head(
        "POST",
        "/resumable",
        &[
            "X-Content-Range: bytes 0-999/2000",
            "X-Session-ID: session-two-0002",
        ],
        1000,
    );
    let mut s = wire::open(porter.addr, head.as_bytes()).await;
    s.write_all(&[1u8; 500]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = segment(&porter, "session-two-0002", &[2u8; 100], 900, 2000).await;
    assert_eq!(r.status, 409);
    s.write_all(&[1u8; 500]).await.unwrap();
    assert!(wire::answer(&mut s).await.starts_with("HTTP/1.1 201"));
    let r = request("POST", &porter.url("/resumable"))
        .header("x-content-range", "bytes 0-9/2000")
        .header("x-session-id", "session-two-0002")
        .body("short")
        .send()
        .await;
    assert_eq!(r.status, 416);
    let r = segment(&porter, "session-three-03", b"x", 0, 6 << 30).await;
    assert_eq!(r.status, 413);
    let r = segment(&porter, "bad/session", b"x", 0, 1).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_retry_after_the_app_failed_sends_the_metadata_again() {
    let backend = backend()
        .once(502, "down")
        .reply(200, "{\"ok\":1}")
        .run()
        .await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = segment(&porter, "session-four-004", b"hello", 0, 5).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        porter
            .stored_files()
            .iter()
            .filter(|p| p.starts_with(porter.root()))
            .count(),
        1,
        "kept for a retry"
    );
    let r = segment(&porter, "session-four-004", b"hello", 0, 5).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"ok\":1}");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn parallel_first_segments_of_a_new_session() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(70_000, 8);
    let seg = 10_000;
    let sends = (0..7).map(|i| {
        segment(
            &porter,
            "session-parallel",
            &content[i * seg..(i + 1) * seg],
            i * seg,
            content.len(),
        )
    });
    let replies = join_all(sends).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    let form = backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
}

/// A session belongs to the credentials of its first segment: another client that
/// learns (or guesses) the id can neither add to it nor complete it; and short ids,
/// easy to guess, are refused unless the route allows them.
#[tokio::test]
async fn a_session_belongs_to_its_first_client() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(20_000, 5);
    let send_as =
        |cookie: Option<&'static str>, auth: Option<&'static str>, at: usize, sid: &'static str| {
            let part = &content[at..at + 10_000];
            let mut req = nginx::segment(&porter.url("/resumable"), sid, part, at, 20_000)
                .header("content-disposition", "attachment; filename=\"a.bin\"");
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
    let sid = "owned-session-00001";
    let r = send_as(Some("sessionid=alice"), None, 0, sid).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for (cookie, auth) in [
        (Some("sessionid=mallory"), None),
        (None, None),
        (Some("sessionid=alice"), Some("Bearer x")),
        (None, Some("sessionid=alice")),
    ] {
        let r = send_as(cookie, auth, 10_000, sid).await;
        assert_eq!(r.status, 403, "{cookie:?} {auth:?}");
    }
    assert_eq!(backend.count(), 0, "nobody else completed it");
    let r = send_as(Some("sessionid=alice"), None, 10_000, sid).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let form = backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    // A session without credentials binds nothing; a short id is refused.
    assert_eq!(send_as(None, None, 0, "1").await.status, 400);
    assert_eq!(send_as(None, None, 0, "fifteen-chars-x").await.status, 400);
    let short = Porter::start(backend.addr, route().set("session_id_min", 1)).await;
    let r = segment(&short, "1", b"hi", 0, 2).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}
