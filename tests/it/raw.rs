use crate::support::*;

fn route() -> Upload {
    Upload::raw("/raw")
        .set("field", "doc")
        .hashes(&["md5", "sha1"])
        .max_file_size("1MiB")
}

#[tokio::test]
async fn raw_body_is_the_file_named_by_header_or_path() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let content = data(300_000, 8);
    let cases = [
        (
            "/raw/x",
            Some((
                "content-disposition",
                "attachment; filename=\"../report.pdf\"",
            )),
            "report.pdf",
        ),
        ("/raw/x", Some(("x-file-name", "caf%C3%A9.txt")), "café.txt"),
        ("/raw/from%20path.bin", None, "from path.bin"),
    ];
    for (i, (path, header, name)) in cases.into_iter().enumerate() {
        let mut req = request("PUT", &porter.url(path)).header("content-type", "application/pdf");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let reply = req.body(content.clone()).send().await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let r = &backend.requests()[i];
        assert_eq!(r.method, "PUT");
        let form = parse_form(r);
        assert_eq!(one(&form, "doc.name"), name);
        assert_eq!(one(&form, "doc.content_type"), "application/pdf");
        assert_eq!(one(&form, "doc.size"), "300000");
        assert_eq!(one(&form, "doc.md5"), md5_hex(&content));
        assert_eq!(one(&form, "doc.sha1").len(), 40);
        assert_eq!(std::fs::read(one(&form, "doc.path")).unwrap(), content);
        assert!(r.header("x-porter-signature").is_some());
    }
}

#[tokio::test]
async fn raw_over_max_file_size_is_413_before_reading() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, route()).await;
    let reply = request("POST", &porter.url("/raw"))
        .body(vec![0u8; 2 << 20])
        .send()
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"], "too_large");
    assert_eq!(backend.count(), 0);
    assert!(porter.wait_empty().await.is_empty());
}
