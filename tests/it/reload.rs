//! SIGHUP reload on the real binary: new routes and certificates for new requests,
//! old ones for requests in flight, a broken config refused, listeners rebound; and
//! the access log as the binary writes it.

use crate::support::*;
use std::path::Path;
use std::time::Duration;

/// Writes `config` for porter in front of `backend` as `dir/porter.toml`.
fn write_config(dir: &Path, backend: &Backend, config: Config) -> std::path::PathBuf {
    let config = config
        .backend(backend.addr)
        .set("server.idle_timeout", "10s");
    config.write(dir)
}

async fn curl_tls(ca: &Path, port: u16, args: &[&str]) -> (u16, Vec<u8>) {
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut all = vec![
        "--cacert",
        ca.to_str().expect("path"),
        "--resolve",
        &resolve,
    ];
    all.extend_from_slice(args);
    curl(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_routes_and_certificates_while_an_upload_in_flight_finishes() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ca1, ca2) = (Pki::new(d, "ca1"), Pki::new(d, "ca2"));
    let (cert1, cert2) = (
        ca1.leaf("one", &["localhost"]),
        ca2.leaf("two", &["localhost"]),
    );
    let port = free_port();
    let upload = |path: &str| Config::from(Upload::multipart(path).hashes(&["md5"])).listen(port);
    let config = write_config(d, &backend, upload("/upload").tls(&cert1));
    let mut porter = Proc::serve(&config);
    porter.port();
    let big = data(1 << 20, 3);
    std::fs::write(d.join("big.bin"), &big).expect("write");
    let url = |path: &str| format!("https://localhost:{port}{path}");
    // An upload that takes about four seconds, started under the old config.
    let in_flight = {
        let (ca, form, url) = (
            ca1.ca_path("ca1"),
            format!("file=@{}", d.join("big.bin").display()),
            url("/upload"),
        );
        tokio::spawn(async move {
            curl_tls(&ca, port, &["--limit-rate", "256K", "-F", &form, &url]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    write_config(d, &backend, upload("/files").tls(&cert2));
    porter.signal(libc::SIGHUP);
    assert!(
        porter.wait_for("config reloaded", 10).is_some(),
        "{:?}",
        porter.seen
    );
    assert!(!in_flight.is_finished(), "the slow upload is still going");
    // New connections get the new certificate: the old CA no longer verifies it.
    let (code, _) = curl_tls(&ca1.ca_path("ca1"), port, &[&url("/")]).await;
    assert_eq!(code, 0, "the old certificate is gone");
    let ca2_path = ca2.ca_path("ca2");
    let (code, _) = curl_tls(&ca2_path, port, &[&url("/")]).await;
    assert_eq!(code, 200);
    // The new route offloads; the old path is now passed through as it came.
    std::fs::write(d.join("small.txt"), "small").expect("write");
    let form = format!("file=@{}", d.join("small.txt").display());
    let (code, _) = curl_tls(&ca2_path, port, &["-F", &form, &url("/files")]).await;
    assert_eq!(code, 200);
    let (code, _) = curl_tls(&ca2_path, port, &["-F", &form, &url("/upload")]).await;
    assert_eq!(code, 200);
    let (code, out) = in_flight.await.expect("join");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
    let files = backend.at("/files");
    assert_eq!(one(&parse_form(&files[0]), "file.size"), "5");
    let upload = backend.at("/upload");
    assert_eq!(
        upload.len(),
        2,
        "the in-flight upload and the passthrough one"
    );
    let offloaded = upload
        .iter()
        .find(|r| r.header("x-porter-signature").is_some())
        .expect("the in-flight upload was offloaded under the old config");
    assert_eq!(one(&parse_form(offloaded), "file.md5"), md5_hex(&big));
    let passed = upload
        .iter()
        .find(|r| r.header("x-porter-signature").is_none())
        .expect("the new request to /upload was passed through");
    assert!(passed.body.windows(5).any(|w| w == b"small"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (a, b) = (free_port(), free_port());
    let config = write_config(d, &backend, Config::new().listen(a));
    let mut porter = Proc::serve(&config);
    porter.port();
    let get = |port: u16| async move { curl(&[&format!("http://127.0.0.1:{port}/x")]).await.0 };
    assert_eq!(get(a).await, 200);
    let missing = (Path::new("none.crt").into(), Path::new("none.key").into());
    for broken in [
        "[server\n".to_string(),
        Config::new()
            .listen(a)
            .backend(backend.addr)
            .tls(&missing)
            .text(),
    ] {
        std::fs::write(&config, broken).expect("write");
        let before = porter.seen.len();
        porter.signal(libc::SIGHUP);
        let line = porter
            .wait_for("reload refused", 10)
            .expect("refusal logged");
        assert!(porter.seen.len() > before, "{line}");
        porter.seen.clear();
        assert_eq!(get(a).await, 200, "the old config still serves");
    }
    // A changed listen address is bound, and the old one closed.
    write_config(d, &backend, Config::new().listen(b));
    porter.signal(libc::SIGHUP);
    assert!(
        porter.wait_for("config reloaded", 10).is_some(),
        "{:?}",
        porter.seen
    );
    assert_eq!(get(b).await, 200);
    assert_eq!(get(a).await, 0, "nothing listens on the old address");
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_exit(20).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_access_log_line_per_request() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = Config::from(Upload::raw("/upload")).set("log.format", "json");
    let mut porter = Proc::serve(&write_config(d, &backend, config));
    let port = porter.port();
    let (code, _) = curl(&[
        "--data-binary",
        "0123456789",
        &format!("http://127.0.0.1:{port}/upload?x=1"),
    ])
    .await;
    assert_eq!(code, 200);
    let line = porter
        .wait_for("porter::access", 10)
        .expect("an access line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let f = &v["fields"];
    assert_eq!(f["method"], "POST", "{line}");
    assert_eq!(f["target"], "/upload?x=1");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes_in"], 10);
    assert_eq!(f["bytes_out"], 11, "the backend's {{\"ok\":true}}");
    assert!(
        f["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(f["ms"].is_u64());
    let id = f["upload"].as_str().expect("upload id");
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.id"), id);
}

/// stderr is a pipe here, as under systemd or `2>porter.log`: plain text, no colour
/// codes, so the fields read as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_is_plain_when_not_a_terminal() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut porter = Proc::serve(&write_config(dir.path(), &backend, Config::new()));
    let port = porter.port();
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/x?y=1")]).await.0,
        200
    );
    let line = porter
        .wait_for("porter::access", 10)
        .expect("an access line");
    for field in ["method=GET", "target=/x?y=1", "status=200"] {
        assert!(line.contains(field), "{field} in {line:?}");
    }
    assert!(
        !porter.seen.iter().any(|l| l.contains('\x1b')),
        "no escape codes: {:?}",
        porter.seen
    );
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_exit(20).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_filters_the_access_log() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &backend, Config::new());
    let mut cmd = Proc::command();
    cmd.args(["serve", "-c"])
        .arg(config)
        .env("RUST_LOG", "info,porter::access=off");
    let mut porter = Proc::spawn(cmd);
    let port = porter.port();
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/")]).await.0, 200);
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_for("stopped", 10).is_some());
    assert!(
        !porter.seen.iter().any(|l| l.contains("porter::access")),
        "{:?}",
        porter.seen
    );
}
