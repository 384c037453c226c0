//! The django-chunked-upload protocol, driven as jQuery-File-Upload drives it.

use crate::support::chunked::{route, send_chunk, send_complete};
use crate::support::*;

#[tokio::test]
async fn chunks_then_complete_with_md5() {
    let backend = backend()
        .route(
            "/api/chunked_upload_complete/",
            200,
            r#"{"message":"stored"}"#,
        )
        .reply(500, "never")
        .run()
        .await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(2_500_000, 9);
    let chunk = 1_000_000;
    let mut upload_id: Option<String> = None;
    for start in (0..content.len()).step_by(chunk) {
        let end = (start + chunk).min(content.len()) - 1;
        let r = send_chunk(
            &porter,
            &content[start..=end],
            Some((start, end, content.len())),
            upload_id.as_deref(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let v = r.json();
        assert_eq!(v["offset"], end + 1);
        let expires = v["expires"].as_str().unwrap();
        assert!(expires.ends_with('Z') && expires.len() == 24, "{expires}");
        let id = v["upload_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        upload_id.get_or_insert(id);
    }
    let id = upload_id.unwrap();
    // Offset mismatch: 400 with the server's offset.
    let r = send_chunk(&porter, b"zz", Some((5, 6, content.len())), Some(&id)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "Offsets do not match", "offset": 2_500_000})
    );
    // Bad md5: 400, nothing sent to the app.
    let r = send_complete(
        &porter,
        &format!("upload_id={id}&md5=00000000000000000000000000000000"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "md5 checksum does not match"})
    );
    assert_eq!(backend.count(), 0);
    // The right md5: the app gets the metadata plus every field, and its answer is relayed.
    let r = send_complete(
        &porter,
        &format!("upload_id={id}&md5={}&title=holiday", md5_hex(&content)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"message":"stored"}"#);
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/api/chunked_upload_complete/?next=1");
    assert_eq!(seen[0].header("cookie"), Some("sessionid=abc"));
    let form = parse_form(&seen[0]);
    assert_eq!(one(&form, "upload_id"), id);
    assert_eq!(one(&form, "title"), "holiday");
    assert_eq!(one(&form, "file.name"), "photo.jpg");
    assert_eq!(one(&form, "file.content_type"), "image/jpeg");
    assert_file(&form, "file", &content);
    // A repeated complete gets the first answer again, without a second request.
    let r = send_complete(
        &porter,
        &format!("upload_id={id}&md5={}", md5_hex(&content)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"message":"stored"}"#);
    assert_eq!(backend.count(), 1);
    // A chunk for a completed upload.
    let r = send_chunk(
        &porter,
        b"x",
        Some((2_500_000, 2_500_000, 2_500_001)),
        Some(&id),
    )
    .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "Upload has already been marked as \"complete\""})
    );
}

#[tokio::test]
async fn chunk_errors() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let r = request("POST", &porter.url("/api/chunked_upload/"))
        .form(Form::new().field("a", "b"))
        .send()
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "No chunk file was submitted"})
    );
    let r = send_chunk(&porter, b"abc", Some((0, 2, 9 << 20)), None).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": format!("Size of file exceeds the limit ({} bytes)", 8 << 20)})
    );
    let r = send_chunk(&porter, b"abc", Some((0, 5, 10)), None).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "File size doesn't match headers"})
    );
    let r = send_chunk(
        &porter,
        b"abc",
        None,
        Some("0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert_eq!(r.status, 404);
    // No Content-Range: the chunk is the whole file.
    let r = send_chunk(&porter, b"whole", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["offset"], 5);
    let r = send_complete(&porter, "md5=x").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "Both 'upload_id' and 'md5' are required"})
    );
    assert_eq!(backend.count(), 0);
}
