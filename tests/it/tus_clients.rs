//! Real tus clients against porter: tuspy (Python) and tus-js-client (Node), with a
//! connection cut mid-chunk and with porter killed (-9) and restarted mid-upload.
//! `scripts/test` installs both and sets the environment these tests read.

use crate::support::peers::{sample, tus_js, tuspy};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// tus-js-client speaking the IETF draft (interop version 6).
const DRAFT: (&str, &str) = ("TUS_PROTOCOL", "ietf-draft-05");

/// A TCP proxy in front of porter that cuts its first connection after `cut` bytes
/// from the client, mid-request; later connections pass untouched.
async fn cutting_proxy(target: std::net::SocketAddr, cut: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let limit = if first { Some(cut) } else { None };
            first = false;
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let n = limit.map_or(n, |l| n.min(l - sent));
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                        if limit == Some(sent) {
                            return;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

fn check_delivery(backend: &Backend, content: &[u8], album: &str) {
    let form = backend.only_form();
    assert_eq!(one(&form, "file.name"), "big.bin");
    assert_eq!(one(&form, "album"), album);
    assert_file(&form, "file", content);
}

/// porter and a proxy in front of it that cuts the first connection mid-request; the
/// tus endpoint through the proxy, and a file of 5 MiB.
async fn behind_a_cutting_proxy(
    backend: &Backend,
) -> (Porter, String, std::path::PathBuf, Vec<u8>) {
    let porter = Porter::start(backend.addr, tus::route()).await;
    let (file, content) = sample(porter.dir.path(), 5 << 20);
    let proxy = cutting_proxy(porter.addr, 1_300_000).await;
    (porter, format!("http://{proxy}/files"), file, content)
}

#[tokio::test]
async fn tuspy_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let (_porter, endpoint, file, content) = behind_a_cutting_proxy(&backend).await;
    let url = tuspy(&endpoint, &file, 512 << 10, "full").await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "tuspy");
}

#[tokio::test]
async fn tus_js_client_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let (_porter, endpoint, file, content) = behind_a_cutting_proxy(&backend).await;
    let url = tus_js(&endpoint, &file, 512 << 10, None, &[]).await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "js");
}

#[tokio::test]
async fn tus_js_client_on_the_ietf_draft_survives_a_cut_connection() {
    let backend = Backend::ok().await;
    let (porter, endpoint, file, content) = behind_a_cutting_proxy(&backend).await;
    let url = tus_js(&endpoint, &file, 256 << 10, None, &[DRAFT]).await;
    assert!(url.contains("/files/"), "{url}");
    check_delivery(&backend, &content, "js");
    assert_protocol(&porter.temp(), &url, "ietf-draft");
}

/// The protocol porter recorded for an upload (the client really spoke it).
fn assert_protocol(temp: &std::path::Path, url: &str, protocol: &str) {
    let id = tus::id(url);
    let state = std::fs::read_to_string(temp.join("resumable").join(format!("{id}.json")))
        .expect("the upload's state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["protocol"], protocol, "{state}");
}

/// porter as a process on a fixed port, so it can be killed (-9) and restarted while
/// clients keep its URLs.
fn restartable(backend: &Backend) -> Served {
    Served::start(backend.addr, Config::from(tus::route()).listen(free_port()))
}

#[tokio::test]
async fn uploads_resume_after_porter_is_killed() {
    let backend = Backend::ok().await;
    let mut p = restartable(&backend);
    let (file, content) = sample(p.dir.path(), 3 << 20);
    let endpoint = p.url("/files");
    // tuspy: three chunks, then porter dies, then the client resumes.
    let url = tuspy(&endpoint, &file, 256 << 10, "partial:3").await;
    p.restart();
    let offset = tus::offset(&url).await;
    assert_eq!(offset, 3 * (256 << 10), "the offset survived the restart");
    tuspy(&endpoint, &file, 256 << 10, &format!("resume:{url}")).await;
    check_delivery(&backend, &content, "tuspy");
    // A torn write: bytes past the saved offset are cut off on the next append.
    backend.seen.lock().unwrap().clear();
    p.restart();
    let url = tuspy(&endpoint, &file, 256 << 10, "partial:2").await;
    let data_file = p
        .dir
        .path()
        .join("tmp/resumable")
        .join(format!("{}.data", tus::id(&url)));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data_file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"garbage that was never acknowledged").unwrap();
    p.restart();
    assert_eq!(tus::offset(&url).await, 2 * (256 << 10));
    tus_js(&endpoint, &file, 256 << 10, Some(&url), &[]).await;
    let form = backend.first_form();
    assert_eq!(one(&form, "file.md5"), md5_hex(&content));
}

#[tokio::test]
async fn tus_js_client_on_the_ietf_draft_resumes_after_porter_is_killed() {
    let backend = Backend::ok().await;
    let mut p = restartable(&backend);
    let (file, content) = sample(p.dir.path(), 4 << 20);
    let endpoint = p.url("/files");
    let stop = ("STOP_AFTER", "1000000");
    let url = tus_js(&endpoint, &file, 128 << 10, None, &[DRAFT, stop]).await;
    p.restart();
    let offset = tus::offset(&url).await;
    assert!((1_000_000..4 << 20).contains(&offset), "{offset}");
    // The client resumes from its stored URL: HEAD, then appends from the offset.
    tus_js(&endpoint, &file, 128 << 10, Some(&url), &[DRAFT]).await;
    check_delivery(&backend, &content, "js");
    assert_protocol(&p.dir.path().join("tmp"), &url, "ietf-draft");
}
