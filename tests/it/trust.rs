//! The trust boundary, tried as an attacker would (SECURITY.md): client field names
//! that some framework reads as porter's metadata, in every forward format and every
//! front-end; control characters in names; fields porter vouches for; headers that
//! CGI/WSGI fold into porter's; `Host` ambiguity; and the signature's key id and
//! canonical target. The same shapes run through real Django in `django.rs`.

use crate::support::*;

/// Client field names that are `file.path` to some framework, none with a control
/// character (those are refused, below).
pub const FORGED: [&str; 20] = [
    "file.path ",
    " file.path",
    "file.path\u{a0}",
    "\u{200b}file.path",
    "file.path\u{feff}",
    "file_path",
    "file path",
    "file[path",
    "file[path]",
    "FILE.PATH",
    "File.Size",
    "file.\u{212a}ey",
    "file.\u{17f}ize",
    "file.\u{131}d",
    "\u{ff46}\u{ff49}\u{ff4c}\u{ff45}\u{ff0e}\u{ff50}\u{ff41}\u{ff54}\u{ff48}",
    "file.pa\u{200b}th",
    "file.p\u{e1}th",
    "file.pat\\h",
    "\u{fb01}le.path",
    "x.sha256",
];

/// The value every forged field carries: it must never reach the app.
pub const MARK: &str = "FORGED-/etc/passwd";

fn route(forward: &str) -> Config {
    Upload::multipart("/upload")
        .forward(forward)
        .hashes(&["md5"])
        .and(Upload::multipart("/other").set("field_names", "porter.{field}.{attr}"))
}

fn forged_form(names: &[&str]) -> Form {
    let mut form = Form::new().field("title", "t");
    for n in names {
        form = form.field(n, MARK);
    }
    form.file("file", "a.txt", "text/plain", b"the real bytes")
}

async fn post_form(porter: &Porter, path: &str, form: Form) -> Reply {
    request("POST", &porter.url(path)).form(form).send().await
}

#[tokio::test]
async fn forged_names_never_reach_the_app_in_any_forward_format() {
    for forward in ["multipart", "urlencoded", "json"] {
        let backend = Backend::ok().await;
        let porter = Porter::start(backend.addr, route(forward)).await;
        for (path, names) in [
            ("/upload", &FORGED[..]),
            // A route with a namespaced template still drops names that are metadata
            // under another route's template: the app reads one template.
            (
                "/other",
                &["file.path", "porter.file.path ", "Porter_File_Id"][..],
            ),
        ] {
            let reply = post_form(&porter, path, forged_form(names)).await;
            assert_eq!(reply.status, 200, "{forward} {path}: {:?}", reply.body);
            let seen = backend.requests();
            let r = seen.last().expect("the metadata request");
            let body = String::from_utf8_lossy(&r.body);
            assert!(!body.contains(MARK), "{forward} {path}: {body}");
            assert!(
                body.contains("the real") || body.contains("a.txt"),
                "{body}"
            );
            assert!(body.contains("title"), "{body}");
        }
        porter.stop().await;
    }
}

#[tokio::test]
async fn control_characters_in_field_names_are_refused() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("multipart")).await;
    for name in [
        "file.path\t",
        "file.path\x0b",
        "\x0cfile.path",
        "title\x7f",
        "ti\u{85}tle",
        "\x00",
        "file.path%0A",
        "file.path%0d",
    ] {
        let reply = post_form(&porter, "/upload", forged_form(&[name])).await;
        assert_eq!(reply.status, 400, "{name:?}");
        // A file part under such a name, too.
        let form = Form::new().file(name, "a.txt", "text/plain", b"x");
        let reply = post_form(&porter, "/upload", form).await;
        assert_eq!(reply.status, 400, "file part {name:?}");
    }
    // Two file fields whose names read alike: the app would get two files' metadata
    // under one name, and the client would choose which one wins.
    for (a, b) in [
        ("file", "FILE"),
        ("file", " file"),
        ("doc", "doc\u{a0}"),
        ("a.b", "a_b"),
    ] {
        let form =
            Form::new()
                .file(a, "a.txt", "text/plain", b"x")
                .file(b, "b.txt", "text/plain", b"y");
        let reply = post_form(&porter, "/upload", form).await;
        assert_eq!(reply.status, 400, "{a:?} and {b:?}");
    }
    assert_eq!(backend.count(), 0, "nothing reached the app");
    assert!(porter.wait_empty().await.is_empty(), "nothing stored");
    // Several files in one field are still one field.
    let form = Form::new().file("docs", "a.txt", "text/plain", b"x").file(
        "docs",
        "b.txt",
        "text/plain",
        b"y",
    );
    assert_eq!(post_form(&porter, "/upload", form).await.status, 200);
    porter.stop().await;
}

#[tokio::test]
async fn the_chunked_completion_sends_porters_upload_id_and_md5_only() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, chunked::route()).await;
    let body = data(10_000, 3);
    let r = chunked::send_chunk(&porter, &body, None, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = chunked::upload_id(&r);
    let md5 = md5_hex(&body);
    // Two different upload_ids: porter and the app could each act on another one.
    let r = chunked::send_complete(
        &porter,
        &format!("upload_id={id}&upload_id=0123456789abcdef0123456789abcdef&md5={md5}"),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // A control character in a name: refused.
    let r = chunked::send_complete(&porter, &format!("upload_id={id}&md5={md5}&a%0B=1")).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(backend.count(), 0);
    let rivals = [
        "Upload_ID=..%2Fother",
        "upload_id+=..%2Fother",
        "UPLOAD.ID=..%2Fother",
        "md5%C2%A0=forged",
        "MD5=forged",
        "file.path+=FORGED",
        "file_path=FORGED",
        "note=kept",
    ];
    let fields = format!(
        "{}&upload_id={id}&md5={}&{}",
        rivals[..4].join("&"),
        md5.to_uppercase(),
        rivals[4..].join("&")
    );
    let r = chunked::send_complete(&porter, &fields).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = backend.requests();
    let form = parse_form(&seen[0]);
    assert_eq!(one(&form, "upload_id"), id);
    assert_eq!(one(&form, "md5"), md5, "porter's md5, lowercase, once");
    assert_eq!(one(&form, "note"), "kept");
    let text = String::from_utf8_lossy(&seen[0].body);
    assert!(!text.contains("other") && !text.contains("forged") && !text.contains("FORGED"));
    porter.stop().await;
}

#[tokio::test]
async fn tus_metadata_keys_that_could_pass_for_metadata_are_dropped() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, tus::route()).await;
    let url = porter.url("/files");
    let create = |meta: String| {
        tus::creation(&url, 5)
            .header("upload-metadata", meta)
            .header("content-type", "application/offset+octet-stream")
            .body("hello")
            .send()
    };
    let keys = ["file_path", "FILE.PATH", "file[path", "File.Md5", "x.id"];
    let mut meta = vec![format!("filename {}", b64("a.txt"))];
    meta.extend(keys.iter().map(|k| format!("{k} {}", b64(MARK))));
    let r = create(meta.join(",")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let seen = backend.requests();
    let body = String::from_utf8_lossy(&seen[0].body);
    assert!(!body.contains(MARK), "{body}");
    assert!(body.contains("a.txt"));
    // A key given twice: porter and the app could each take another.
    let dup = format!("filename {},filename {}", b64("a.txt"), b64("b.txt"));
    assert_eq!(create(dup).await.status, 400);
    // A key with a control character, even as bytes the header cannot show as text:
    // refused, not silently ignored.
    let key_with_nel = http::HeaderValue::from_bytes(b"file\xc2\x85path YQ==").expect("obs-text");
    let r = tus::creation(&url, 5)
        .header("upload-metadata", key_with_nel)
        .send()
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(create(format!("a{}b YQ==", '\t')).await.status, 400);
    porter.stop().await;
}

#[tokio::test]
async fn client_headers_with_underscores_never_reach_the_app() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("multipart")).await;
    let with_underscores = |method: &str, path: &str| {
        request(method, &porter.url(path)).headers(&[
            ("x_porter_signature", "sha256=forged"),
            ("X_Porter_Key_Id", "0000000000000000"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-real_ip", "6.6.6.6"),
            ("x-porter.signature", "sha256=forged"),
            ("x.forwarded.for", "6.6.6.6"),
            ("x-ok", "kept"),
        ])
    };
    let r = with_underscores("GET", "/page").send().await;
    assert_eq!(r.status, 200);
    let r = with_underscores("POST", "/upload")
        .form(forged_form(&[]))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");
        assert_eq!(r.header("x-ok"), Some("kept"));
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    }
    porter.stop().await;
}

#[tokio::test]
async fn one_host_that_agrees_with_the_target() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, Config::new()).await;
    let refused = [
        "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.0\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        "GET http://a.example/a HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ];
    for head in refused {
        let answer = wire::exchange(porter.addr, head.as_bytes()).await;
        assert!(answer.contains(" 400 "), "{head:?}: {answer}");
    }
    assert_eq!(backend.count(), 0);
    let allowed = [
        "GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.0\r\n\r\n",
        "GET http://a.example/a HTTP/1.1\r\nHost: A.example\r\nConnection: close\r\n\r\n",
    ];
    for head in allowed {
        let answer = wire::exchange(porter.addr, head.as_bytes()).await;
        assert!(answer.contains(" 200 "), "{head:?}: {answer}");
    }
    assert_eq!(backend.count(), 3);
    porter.stop().await;
}

#[tokio::test]
async fn generated_requests_name_their_key_and_sign_a_canonical_query() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route("multipart")).await;
    let (ct, body) = forged_form(&[]).finish();
    let head = format!(
        "POST /upload?q=a|b{{}}^`\\\u{e9}%7c&x=1 HTTP/1.1\r\nHost: h.example\r\nContent-Type: {ct}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&body);
    let answer = wire::exchange(porter.addr, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.requests();
    let r = &seen[0];
    // Every byte Django's iri_to_uri would re-encode is encoded; escapes stay as sent.
    assert_eq!(r.target, "/upload?q=a%7Cb%7B%7D%5E%60%5C%C3%A9%7c&x=1");
    // Signed for the Host the client sent, under the key it names.
    assert_eq!(r.header("host"), Some("h.example"));
    assert_signed(&porter, r);
    porter.stop().await;
}
