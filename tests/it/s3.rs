//! Uploads into, and downloads from, a real S3 store: a 3-node Garage cluster on
//! loopback (replication factor 3), started once by `scripts/garage-cluster` and shared
//! by these tests, each under its own key prefix. `.ci/run` installs Garage.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use porter::store::s3::client::{S3, Settings};
use std::sync::OnceLock;
use std::time::Duration;

/// A Garage cluster: its S3 endpoints and a key for its bucket.
pub struct Garage {
    pub endpoints: Vec<String>,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    pids: Vec<u32>,
    /// Key files for porter's `[storage.s3]`.
    keys: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub fn start(nodes: usize) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(format!(
            "{}/scripts/garage-cluster",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(dir.path())
        .arg(nodes.to_string())
        .arg(std::process::id().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/garage-cluster runs (it needs the garage binary: cargo install garage@2.5.0 --locked)");
        assert!(out.status.success(), "garage-cluster failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .trim_matches('\'')
                .to_string()
        };
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(keys.path().join("access"), var("GARAGE_KEY_ID")).unwrap();
        std::fs::write(keys.path().join("secret"), var("GARAGE_SECRET")).unwrap();
        Garage {
            endpoints: var("GARAGE_ENDPOINTS")
                .split(',')
                .map(str::to_string)
                .collect(),
            key_id: var("GARAGE_KEY_ID"),
            secret: var("GARAGE_SECRET"),
            bucket: var("GARAGE_BUCKET"),
            pids: var("GARAGE_PIDS")
                .split(' ')
                .filter_map(|p| p.parse().ok())
                .collect(),
            keys,
            _dir: dir,
        }
    }

    /// The cluster most tests share.
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(|| Garage::start(3))
    }

    pub fn client(&self) -> S3 {
        S3::new(&Settings {
            endpoints: self.endpoints.clone(),
            region: "garage".into(),
            bucket: self.bucket.clone(),
            access_key: self.key_id.clone(),
            secret_key: self.secret.clone(),
        })
        .unwrap()
    }

    /// porter's `[storage.s3]` table for this cluster, objects under `prefix`.
    pub fn table(&self, prefix: &str) -> String {
        let list: Vec<String> = self.endpoints.iter().map(|e| format!("{e:?}")).collect();
        format!(
            "[storage.s3]\nendpoint = [{}]\nregion = \"garage\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\naccess_key_file = {:?}\nsecret_key_file = {:?}\npart_size = \"5MiB\"\n",
            list.join(", "),
            self.bucket,
            self.keys.path().join("access"),
            self.keys.path().join("secret"),
        )
    }

    /// Stops node `i` (SIGKILL): the store must go on with the others.
    pub fn kill_node(&self, i: usize) {
        kill(self.pids[i]);
    }
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

impl Drop for Garage {
    fn drop(&mut self) {
        for pid in &self.pids {
            kill(*pid);
        }
    }
}

/// A fresh key prefix, so tests sharing the cluster never see each other's objects.
pub fn prefix() -> String {
    format!("t{}/", uuid::Uuid::new_v4().simple())
}

const ROUTES: &str = "[[upload]]\npath = \"/upload\"\nkind = \"multipart\"\nhashes = [\"md5\", \"sha256\"]\n[[upload]]\npath = \"/raw\"\nkind = \"raw\"\nhashes = [\"sha256\"]\n";

/// porter storing uploads in `garage` under `prefix`.
async fn porter_on(
    garage: &Garage,
    backend: std::net::SocketAddr,
    prefix: &str,
    extra: &str,
) -> Porter {
    Porter::start_with(
        &format!(
            "[backend]\nurl = \"http://{backend}\"\n[storage]\nbackend = \"s3\"\nmin_free = 0\n{}",
            garage.table(prefix)
        ),
        extra,
    )
    .await
}

pub async fn object(s3: &S3, key: &str) -> Vec<u8> {
    let body = s3.get(key, None).await.expect("the object exists");
    body.collect().await.unwrap().to_bytes().to_vec()
}

/// Waits (bounded) until nothing is stored or in progress under `prefix`.
pub async fn wait_clean(s3: &S3, prefix: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let objects = s3.list(prefix).await.unwrap();
        let uploads = s3.multipart_uploads(prefix).await.unwrap();
        if objects.is_empty() && uploads.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {objects:?} {uploads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until a multipart upload is in progress under `prefix`.
async fn wait_multipart_upload(s3: &S3, prefix: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s3.multipart_uploads(prefix).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no multipart upload began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_and_raw_uploads_become_objects_with_their_hashes() {
    let garage = Garage::shared();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let porter = porter_on(garage, backend.addr, &prefix, ROUTES).await;
    // 12 MiB: three 5 MiB parts (the last short); 1 KiB: one PUT.
    let big = data(12 << 20, 1);
    let small = data(1024, 2);
    let form = Form::new()
        .field("title", "holiday")
        .file("file", "big.bin", "application/octet-stream", &big)
        .file("other", "small.txt", "text/plain", &small);
    let (ct, body) = form.finish();
    let r = send(
        request("POST", &porter.url("/upload"))
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let raw = data(7 << 20, 3);
    let r = send(
        request("POST", &porter.url("/raw"))
            .header("content-disposition", "attachment; filename=\"r.bin\"")
            .body(Full::new(Bytes::from(raw.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s3 = garage.client();
    let seen = backend.requests();
    let form = parse_form(&seen[0]);
    for (field, content) in [("file", &big), ("other", &small)] {
        let key = one(&form, &format!("{field}.key"));
        assert!(key.starts_with(&prefix), "{key}");
        assert_eq!(one(&form, &format!("{field}.bucket")), garage.bucket);
        assert_eq!(one(&form, &format!("{field}.path")), "", "no local path");
        assert_eq!(one(&form, &format!("{field}.md5")), md5_hex(content));
        assert_eq!(one(&form, &format!("{field}.sha256")), sha256_hex(content));
        assert!(
            object(&s3, key).await == *content,
            "{field}: the object's bytes"
        );
    }
    let form = parse_form(&seen[1]);
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&raw));
    assert!(object(&s3, one(&form, "file.key")).await == raw);
    assert_eq!(s3.list(&prefix).await.unwrap().len(), 3);
    assert!(s3.multipart_uploads(&prefix).await.unwrap().is_empty());
    assert!(files_under(&porter.temp()).is_empty(), "no spool left");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_and_aborted_uploads_leave_no_objects_and_no_multipart_uploads() {
    use tokio::io::AsyncWriteExt;
    let garage = Garage::shared();
    let refusing = Backend::start(|_| answer(422, r#"{"bad":1}"#)).await;
    let prefix = prefix();
    let porter = porter_on(garage, refusing.addr, &prefix, ROUTES).await;
    let s3 = garage.client();
    // The app refuses: the object goes.
    let r = send(
        request("POST", &porter.url("/raw"))
            .body(Full::new(Bytes::from(data(11 << 20, 4))))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 422);
    wait_clean(&s3, &prefix).await;
    // The client goes away after two parts were shipped: the multipart upload is aborted.
    let mut c = tokio::net::TcpStream::connect(porter.addr).await.unwrap();
    c.write_all(b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        .await
        .unwrap();
    c.write_all(&data(12 << 20, 5)).await.unwrap();
    wait_multipart_upload(&s3, &prefix).await;
    drop(c);
    wait_clean(&s3, &prefix).await;
    assert!(porter.wait_empty().await.is_empty(), "no spool left");
}

/// A backend that answers `/dl/<key>` with `X-Accel-Redirect: /objects/<key>`.
async fn accel_backend() -> Backend {
    Backend::start(|r| {
        let mut resp = answer(200, "never sent");
        resp.headers_mut().remove("content-type");
        if let Some(rest) = r.target.strip_prefix("/dl/") {
            resp.headers_mut().insert(
                "x-accel-redirect",
                format!("/objects/{rest}").parse().unwrap(),
            );
        }
        resp
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn x_accel_redirect_serves_objects_with_ranges_and_conditionals() {
    let garage = Garage::shared();
    let backend = accel_backend().await;
    let prefix = prefix();
    let porter = porter_on(
        garage,
        backend.addr,
        &prefix,
        "[[internal]]\nprefix = \"/objects/\"\nstore = \"s3\"\n",
    )
    .await;
    let content = data(6 << 20, 6);
    let key = format!("{prefix}ab/cd/report.pdf");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &content).unwrap();
    let s3 = garage.client();
    s3.put_file(&key, file.path(), content.len() as u64, 1 << 20)
        .await
        .unwrap();
    let url = porter.url(&format!("/dl/{key}"));
    let whole = send(request("GET", &url).body(Full::default()).unwrap()).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == content);
    assert_eq!(whole.headers["content-type"], "application/pdf");
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    let etag = whole.headers["etag"].to_str().unwrap().to_string();
    let r = send(
        request("GET", &url)
            .header("range", "bytes=5000000-5000099")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 5000000-5000099/{}", content.len())
    );
    assert!(r.body[..] == content[5_000_000..5_000_100]);
    let r = send(
        request("GET", &url)
            .header("if-none-match", &etag)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 304);
    let r = send(
        request("GET", &porter.url(&format!("/dl/{prefix}no/such/key")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    // Keys outside storage.s3.prefix are not served.
    let r = send(
        request("GET", &porter.url("/dl/elsewhere/key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    s3.delete(&key).await.unwrap();
}

/// One node of the cluster dies mid-upload: the upload completes on the others.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_completes_when_a_garage_node_dies_mid_upload() {
    let garage = tokio::task::spawn_blocking(|| Garage::start(3))
        .await
        .unwrap();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let porter = porter_on(&garage, backend.addr, &prefix, ROUTES).await;
    let content = data(24 << 20, 7);
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, porter::http::BoxError>>(4);
    let url = porter.url("/raw");
    let len = content.len();
    let upload = tokio::spawn(async move {
        let body = http_body_util::StreamBody::new(porter::http::receiver::ReceiverStream(rx));
        let req = request("POST", &url)
            .header("content-length", len)
            .body(body)
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let resp = client.request(req).await.unwrap();
        resp.status().as_u16()
    });
    let (first, rest) = content.split_at(8 << 20);
    for chunk in first.chunks(1 << 20) {
        tx.send(Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
            .await
            .unwrap();
    }
    // The first endpoint porter talks to dies with a part shipped.
    garage.kill_node(0);
    for chunk in rest.chunks(1 << 20) {
        tx.send(Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
            .await
            .unwrap();
    }
    drop(tx);
    assert_eq!(upload.await.unwrap(), 200);
    let form = parse_form(&backend.requests()[0]);
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
    let s3 = garage.client();
    assert!(object(&s3, one(&form, "file.key")).await == content);
}

#[tokio::test]
async fn porter_check_validates_the_s3_keys_and_reaches_the_bucket() {
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let backend = Backend::ok().await;
    let base = format!("[backend]\nurl = \"http://{}\"\n[storage]", backend.addr);
    let base = base + "\nroot = \"r\"\ntemp = \"t\"\nmin_free = 0\n";
    let check = |conf: &std::path::Path, online: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_porter"));
        cmd.args(["check", "-c"]).arg(conf);
        if online {
            cmd.arg("--online");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // backend = "s3" without a table, and a resumable kind on S3.
    let bad = write(
        "bad.toml",
        format!(
            "{base}backend = \"s3\"\n[[upload]]\npath = \"/t\"\nkind = \"tus\"\nnotify = \"/n\"\n"
        ),
    );
    let (code, text) = check(&bad, false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("storage.backend"), "{text}");
    assert!(text.contains("upload[0].kind"), "{text}");
    let good = write(
        "good.toml",
        format!("{base}backend = \"s3\"\n{}{ROUTES}", garage.table("c/")),
    );
    let (code, text) = check(&good, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("part_size = \"5MiB\""), "{text}");
    assert!(
        !text.contains(&garage.secret),
        "the secret is never printed"
    );
    let wrong = write(
        "wrong.toml",
        format!(
            "{base}backend = \"s3\"\n{}{ROUTES}",
            garage
                .table("c/")
                .replace("bucket = \"uploads\"", "bucket = \"nope\"")
        ),
    );
    let (code, text) = check(&wrong, true);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("storage.s3"), "{text}");
}

/// An instance that died between completing an object and telling the app leaves a
/// marker naming it in `storage.temp`; `porter gc` (or the next start) deletes the
/// object, and a spool file no upload holds.
#[tokio::test(flavor = "multi_thread")]
async fn porter_gc_deletes_objects_the_app_was_never_told_of() {
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let porter = porter_on(garage, backend.addr, &prefix, ROUTES).await;
    let s3 = garage.client();
    let key = format!("{prefix}ab/cd/abcd0123456789abcdef0123456789ab");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"orphan").unwrap();
    s3.put_file(&key, file.path(), 6, 1 << 16).await.unwrap();
    let temp = porter.temp();
    std::fs::write(temp.join("abcd0123456789abcdef0123456789ab.s3unsent"), &key).unwrap();
    std::fs::write(
        temp.join("abcd0123456789abcdef0123456789ab.1.s3spool"),
        b"part",
    )
    .unwrap();
    porter_gc(&porter.dir.path().join("porter.toml"));
    // The listing may lag the delete on a loaded cluster: gone within a bound.
    wait_clean(&s3, &prefix).await;
    assert!(
        files_under(&temp).is_empty(),
        "markers and spool files are gone"
    );
}

/// porter killed (-9) in the middle of a large upload leaves an S3 multipart upload
/// and a marker naming it; `porter gc` aborts it.
#[tokio::test(flavor = "multi_thread")]
async fn porter_gc_aborts_the_multipart_upload_of_a_killed_instance() {
    use tokio::io::AsyncWriteExt;
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let backend = Backend::ok().await;
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("porter.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backend]\nurl = \"http://{}\"\n[storage]\nbackend = \"s3\"\nroot = \"root\"\ntemp = \"tmp\"\nmin_free = 0\n{}{ROUTES}",
            backend.addr,
            garage.table(&prefix)
        ),
    )
    .unwrap();
    let p = super::tus_clients::Process::spawn(conf.clone(), port);
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.write_all(b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        .await
        .unwrap();
    c.write_all(&data(12 << 20, 13)).await.unwrap();
    let s3 = garage.client();
    wait_multipart_upload(&s3, &prefix).await;
    p.kill9();
    drop(c);
    assert_eq!(s3.multipart_uploads(&prefix).await.unwrap().len(), 1);
    porter_gc(&conf);
    wait_clean(&s3, &prefix).await;
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}
