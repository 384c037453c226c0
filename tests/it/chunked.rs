//! The django-chunked-upload protocol, driven as jQuery-File-Upload drives it.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

pub const ROUTE: &str = "[[upload]]\npath = \"/api/chunked_upload\"\nkind = \"chunked\"\ncomplete = \"/api/chunked_upload_complete/\"\nhashes = [\"sha256\"]\nmax_file_size = \"8MiB\"\n";

pub async fn send_chunk(
    porter: &Porter,
    data: &[u8],
    range: Option<(usize, usize, usize)>,
    upload_id: Option<&str>,
) -> Reply {
    let mut form = Form::new();
    if let Some(id) = upload_id {
        form = form.field("upload_id", id);
    }
    let (ct, body) = form.file("file", "photo.jpg", "image/jpeg", data).finish();
    let mut req = request("POST", &porter.url("/api/chunked_upload/"))
        .header("content-type", ct)
        .header("cookie", "sessionid=abc");
    if let Some((a, b, t)) = range {
        req = req.header("content-range", format!("bytes {a}-{b}/{t}"));
    }
    send(req.body(Full::new(Bytes::from(body))).unwrap()).await
}

pub async fn send_complete(porter: &Porter, fields: &str) -> Reply {
    send(
        request("POST", &porter.url("/api/chunked_upload_complete/?next=1"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", "sessionid=abc")
            .body(Full::new(Bytes::from(fields.to_string())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn chunks_then_complete_with_md5() {
    let backend = Backend::start(|r| {
        if r.target.starts_with("/api/chunked_upload_complete/") {
            answer(200, r#"{"message":"stored"}"#)
        } else {
            answer(500, "never")
        }
    })
    .await;
    let porter = Porter::start(backend.addr, ROUTE).await;
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
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
    assert!(std::fs::read(one(&form, "file.path")).unwrap() == content);
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
    let porter = Porter::start(backend.addr, ROUTE).await;
    let r = send(
        request("POST", &porter.url("/api/chunked_upload/"))
            .header("content-type", Form::new().content_type())
            .body(Full::new(Bytes::from(
                Form::new().field("a", "b").finish().1,
            )))
            .unwrap(),
    )
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
