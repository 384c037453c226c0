use crate::support::*;

fn route() -> Upload {
    Upload::multipart("/upload").hashes(&["md5", "sha256"])
}

/// Posts `form` to `path` from a browser session.
async fn post(porter: &Porter, path: &str, form: Form) -> Reply {
    request("POST", &porter.url(path))
        .header("cookie", "sessionid=s1")
        .form(form)
        .send()
        .await
}

#[tokio::test]
async fn two_files_in_one_field_plus_text_fields() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let (a, b) = (data(700_000, 1), data(1234, 2));
    let form = Form::new()
        .field("title", "holiday")
        .file("docs", "a.bin", "application/octet-stream", &a)
        .file("docs", "b.txt", "text/plain; charset=utf-8", &b)
        .field("tag", "x")
        .field("tag", "y");
    let reply = post(&porter, "/upload/photos?album=7", form).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/upload/photos?album=7");
    assert_eq!(r.header("cookie"), Some("sessionid=s1"));
    assert_signed(&porter, r);
    let form = parse_form(r);
    assert_eq!(one(&form, "title"), "holiday");
    assert_eq!(get(&form, "tag"), vec!["x", "y"]);
    assert_eq!(get(&form, "docs.name"), vec!["a.bin", "b.txt"]);
    assert_eq!(
        get(&form, "docs.content_type"),
        vec!["application/octet-stream", "text/plain"]
    );
    assert_eq!(get(&form, "docs.charset"), vec!["", "utf-8"]);
    assert_eq!(get(&form, "docs.size"), vec!["700000", "1234"]);
    assert_eq!(get(&form, "docs.md5"), vec![md5_hex(&a), md5_hex(&b)]);
    assert_eq!(
        get(&form, "docs.sha256"),
        vec![sha256_hex(&a), sha256_hex(&b)]
    );
    assert_eq!(get(&form, "docs.bucket"), vec!["", ""]);
    assert!(get(&form, "docs.sha1").is_empty(), "only configured hashes");
    let names: Vec<_> = form.iter().map(|(n, _)| n.as_str()).collect();
    let expected_attrs = [
        "name",
        "content_type",
        "charset",
        "detected_type",
        "path",
        "key",
        "bucket",
        "id",
        "size",
        "md5",
        "sha256",
    ];
    let first_file: Vec<String> = expected_attrs.iter().map(|a| format!("docs.{a}")).collect();
    assert_eq!(
        &names[1..12],
        first_file
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
    );
    for (i, content) in [&a, &b].into_iter().enumerate() {
        let path = get(&form, "docs.path")[i];
        let key = get(&form, "docs.key")[i];
        let id = get(&form, "docs.id")[i];
        assert_eq!(std::fs::read(path).unwrap(), *content);
        assert_eq!(porter.root().join(key), std::path::PathBuf::from(path));
        assert!(key.ends_with(&id.replace('-', "")), "{key} vs {id}");
        assert_eq!(key.len(), 2 + 1 + 2 + 1 + 32);
    }
    assert!(files_under(&porter.temp()).is_empty(), "temp is empty");
}

#[tokio::test]
async fn forged_metadata_and_hostile_names() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let form = Form::new()
        .field("file.path", "/etc/shadow")
        .field("other.size", "1")
        .field("file.owner", "kept")
        .file("file", "../../etc/passwd", "text/plain", b"root:x:0:0")
        .file("empty", "", "application/octet-stream", b"")
        .file("zero", "zero.txt", "text/plain", b"");
    let reply = post(&porter, "/upload", form).await;
    assert_eq!(reply.status, 200);
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.name"), "passwd");
    assert!(one(&form, "file.path").starts_with(porter.root().to_str().unwrap()));
    assert!(get(&form, "other.size").is_empty());
    assert_eq!(one(&form, "file.owner"), "kept");
    assert!(
        get(&form, "empty.name").is_empty(),
        "empty file inputs are skipped"
    );
    assert_eq!(one(&form, "zero.size"), "0");
    assert_eq!(one(&form, "zero.md5"), md5_hex(b""));
    assert_eq!(porter.stored_files().len(), 2);
}

#[tokio::test]
async fn urlencoded_and_json_forwarding() {
    let backend = Backend::ok().await;
    let routes = route().forward("urlencoded").and(
        Upload::multipart("/json")
            .forward("json")
            .hashes(&["crc32"]),
    );
    let porter = Porter::start(backend.addr, routes).await;
    let form = || {
        Form::new()
            .field("t", "a b")
            .file("f", "x.txt", "text/plain", b"abc")
    };
    assert_eq!(post(&porter, "/upload", form()).await.status, 200);
    assert_eq!(post(&porter, "/json", form()).await.status, 200);
    let seen = backend.requests();
    let url = String::from_utf8(seen[0].body.to_vec()).unwrap();
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        url.starts_with("t=a+b&f.name=x.txt&f.content_type=text%2Fplain&"),
        "{url}"
    );
    assert!(url.contains(&format!("&f.md5={}", md5_hex(b"abc"))));
    assert_signed(&porter, &seen[0]);
    let json: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(json["fields"]["t"], serde_json::json!(["a b"]));
    assert_eq!(json["files"][0]["field"], "f");
    assert_eq!(json["files"][0]["size"], 3);
    assert_eq!(json["files"][0]["crc32"], "352441c2");
    assert_signed(&porter, &seen[1]);
}

#[tokio::test]
async fn backend_refusal_deletes_files() {
    let backend = backend().reply(500, r#"{"error":"boom"}"#).run().await;
    let porter = Porter::start(backend.addr, route()).await;
    let reply = post(
        &porter,
        "/upload",
        Form::new().file("file", "a.txt", "text/plain", &data(50_000, 1)),
    )
    .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, r#"{"error":"boom"}"#);
    assert_eq!(backend.count(), 1);
    assert_eq!(porter.wait_empty().await, Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn backend_status_outside_cleanup_on_keeps_files() {
    let backend = backend().reply(409, "{}").run().await;
    let cleanup_on = vec!["5xx", "400"];
    let porter = Porter::start(backend.addr, route().set("cleanup_on", cleanup_on)).await;
    let reply = post(
        &porter,
        "/upload",
        Form::new().file("file", "a.txt", "text/plain", b"x"),
    )
    .await;
    assert_eq!(reply.status, 409);
    assert_eq!(porter.stored_files().len(), 1);
}

#[tokio::test]
async fn backend_down_deletes_files_and_answers_502() {
    let porter = Porter::start(dead_addr(), route()).await;
    let reply = post(
        &porter,
        "/upload",
        Form::new().file("file", "a.txt", "text/plain", b"x"),
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "backend_unavailable");
    assert!(porter.wait_empty().await.is_empty());
}

#[tokio::test]
async fn chunked_transfer_encoding_upload_with_curl() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(2_000_000, 9);
    let file = temp_file(&content);
    let (status, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-F",
        "note=hi",
        "-F",
        &format!("file=@{};filename=big.bin", file.path().display()),
        &porter.url("/upload"),
    ])
    .await;
    assert_eq!(status, 200);
    let form = backend.first_form();
    assert_eq!(one(&form, "note"), "hi");
    assert_file(&form, "file", &content);
}

#[tokio::test]
async fn h2c_upload_with_curl() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(3_000_000, 4);
    let file = temp_file(&content);
    let (status, _) = curl(&[
        "--http2-prior-knowledge",
        "-F",
        &format!("file=@{};filename=h2.bin", file.path().display()),
        &porter.url("/upload"),
    ])
    .await;
    assert_eq!(status, 200);
    let r = &backend.requests()[0];
    let form = parse_form(r);
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
    assert_eq!(std::fs::read(one(&form, "file.path")).unwrap(), content);
    assert_eq!(r.header("host"), Some(porter.addr.to_string().as_str()));
    assert_signed(&porter, r);
}

#[tokio::test]
async fn get_on_an_upload_route_passes_through() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let reply = request("GET", &porter.url("/upload")).send().await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.requests()[0].target, "/upload");
    let reply = request("POST", &porter.url("/uploads")).send().await;
    assert_eq!(reply.status, 200, "/uploads is not under /upload");
}

#[tokio::test]
async fn canonical_target_for_generated_requests() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let form = Form::new().file("f", "a.txt", "text/plain", b"x");
    let reply = post(&porter, "/upload/./a%20b/../f%C3%BCr/%7e?x=%2F", form).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.requests()[0].target, "/upload/f%C3%BCr/~?x=%2F");
}

#[tokio::test]
async fn empty_field_names_cannot_forge_metadata() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let reply = post(
        &porter,
        "/upload",
        Form::new()
            .field(".path", "/etc/shadow")
            .file("", "a.txt", "text/plain", b"x"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty());
    let reply = post(
        &porter,
        "/upload",
        Form::new()
            .field(".path", "/etc/shadow")
            .file("f", "a.txt", "text/plain", b"x"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let form = parse_form(&backend.requests()[0]);
    assert!(get(&form, ".path").is_empty());
}

#[tokio::test]
async fn chunked_upload_over_the_limit_is_413() {
    let backend = Backend::ok().await;
    let route = route().max_file_size("64KiB").set("max_files", 1);
    let porter = Porter::start(backend.addr, route).await;
    let file = temp_file(&vec![1u8; 4 << 20]);
    let (status, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-F",
        &format!("skipped=@{};filename=", file.path().display()),
        &porter.url("/upload"),
    ])
    .await;
    assert_eq!(status, 413, "bytes of a skipped part count too");
    assert_eq!(backend.count(), 0);
}
