//! Uploads into, and downloads from, a real S3 store: a 3-node Garage cluster on
//! loopback (replication factor 3), started once by `scripts/garage-cluster` and shared
//! by these tests, each under its own key prefix. `.ci/run` installs Garage.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
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

    /// porter's storage on this cluster, objects under `prefix`.
    pub fn storage(&self, prefix: &str) -> Config {
        let s3 = |key: &str, value: toml::Value| (format!("storage.s3.{key}"), value);
        let keys = self.keys.path();
        [
            s3("endpoint", self.endpoints.clone().into()),
            s3("region", "garage".into()),
            s3("bucket", self.bucket.as_str().into()),
            s3("prefix", prefix.into()),
            s3(
                "access_key_file",
                keys.join("access").display().to_string().into(),
            ),
            s3(
                "secret_key_file",
                keys.join("secret").display().to_string().into(),
            ),
            s3("part_size", "5MiB".into()),
        ]
        .into_iter()
        .fold(Config::new().set("storage.backend", "s3"), |c, (k, v)| {
            c.set(&k, v)
        })
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

/// A multipart and a raw route, hashing.
fn routes() -> Config {
    Upload::multipart("/upload")
        .hashes(&["md5", "sha256"])
        .and(Upload::raw("/raw").hashes(&["sha256"]))
}

/// porter storing uploads in `garage` under `prefix`.
async fn porter_on(
    garage: &Garage,
    backend: std::net::SocketAddr,
    prefix: &str,
    routes: Config,
) -> Porter {
    Porter::start(backend, garage.storage(prefix).merge(routes)).await
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
    let porter = porter_on(garage, backend.addr, &prefix, routes()).await;
    // 12 MiB: three 5 MiB parts (the last short); 1 KiB: one PUT.
    let big = data(12 << 20, 1);
    let small = data(1024, 2);
    let form = Form::new()
        .field("title", "holiday")
        .file("file", "big.bin", "application/octet-stream", &big)
        .file("other", "small.txt", "text/plain", &small);
    let r = request("POST", &porter.url("/upload"))
        .form(form)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let raw = data(7 << 20, 3);
    let r = request("POST", &porter.url("/raw"))
        .header("content-disposition", "attachment; filename=\"r.bin\"")
        .body(raw.clone())
        .send()
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

/// The head of a raw upload announcing 50 MB, for a connection that sends less.
const BIG_RAW: &[u8] = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn refused_and_aborted_uploads_leave_no_objects_and_no_multipart_uploads() {
    use tokio::io::AsyncWriteExt;
    let garage = Garage::shared();
    let refusing = backend().reply(422, r#"{"bad":1}"#).run().await;
    let prefix = prefix();
    let porter = porter_on(garage, refusing.addr, &prefix, routes()).await;
    let s3 = garage.client();
    // The app refuses: the object goes.
    let r = request("POST", &porter.url("/raw"))
        .body(data(11 << 20, 4))
        .send()
        .await;
    assert_eq!(r.status, 422);
    wait_clean(&s3, &prefix).await;
    // The client goes away after two parts were shipped: the multipart upload is aborted.
    let mut c = wire::open(porter.addr, BIG_RAW).await;
    c.write_all(&data(12 << 20, 5)).await.unwrap();
    wait_multipart_upload(&s3, &prefix).await;
    drop(c);
    wait_clean(&s3, &prefix).await;
    assert!(porter.wait_empty().await.is_empty(), "no spool left");
}

#[tokio::test(flavor = "multi_thread")]
async fn x_accel_redirect_serves_objects_with_ranges_and_conditionals() {
    let garage = Garage::shared();
    // `/dl/<key>` is answered with `X-Accel-Redirect: /objects/<key>`.
    let backend = backend().x_accel("/dl/", "/objects/").run().await;
    let prefix = prefix();
    let objects = [("prefix", "/objects/".into()), ("store", "s3".into())];
    let porter = porter_on(
        garage,
        backend.addr,
        &prefix,
        Config::new().table("internal", objects),
    )
    .await;
    let content = data(6 << 20, 6);
    let key = format!("{prefix}ab/cd/report.pdf");
    let file = temp_file(&content);
    let s3 = garage.client();
    s3.put_file(&key, file.path(), content.len() as u64, 1 << 20)
        .await
        .unwrap();
    let url = porter.url(&format!("/dl/{key}"));
    let whole = request("GET", &url).send().await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == content);
    assert_eq!(whole.headers["content-type"], "application/pdf");
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    let etag = whole.header("etag").to_string();
    let r = request("GET", &url)
        .header("range", "bytes=5000000-5000099")
        .send()
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 5000000-5000099/{}", content.len())
    );
    assert!(r.body[..] == content[5_000_000..5_000_100]);
    let r = request("GET", &url)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(r.status, 304);
    let missing = porter.url(&format!("/dl/{prefix}no/such/key"));
    assert_eq!(request("GET", &missing).send().await.status, 404);
    // Keys outside storage.s3.prefix are not served.
    let elsewhere = porter.url("/dl/elsewhere/key");
    assert_eq!(request("GET", &elsewhere).send().await.status, 404);
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
    let porter = porter_on(&garage, backend.addr, &prefix, routes()).await;
    let content = data(24 << 20, 7);
    let (tx, body) = fed();
    let upload = request("POST", &porter.url("/raw"))
        .header("content-length", content.len())
        .send_fed(body);
    let upload = tokio::spawn(upload);
    let (first, rest) = content.split_at(8 << 20);
    for chunk in first.chunks(1 << 20) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // The first endpoint porter talks to dies with a part shipped.
    garage.kill_node(0);
    for chunk in rest.chunks(1 << 20) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    assert_eq!(upload.await.unwrap(), 200);
    let form = backend.first_form();
    assert_eq!(one(&form, "file.sha256"), sha256_hex(&content));
    let s3 = garage.client();
    assert!(object(&s3, one(&form, "file.key")).await == content);
}

#[tokio::test]
async fn porter_check_validates_the_s3_keys_and_reaches_the_bucket() {
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, config: Config| {
        let p = dir.path().join(name);
        std::fs::write(&p, config.text()).unwrap();
        p
    };
    let backend = Backend::ok().await;
    let base = || {
        Config::new()
            .backend(backend.addr)
            .set("storage.root", "r")
            .set("storage.temp", "t")
            .set("storage.min_free", 0)
            .set("storage.backend", "s3")
    };
    // backend = "s3" without a table, and a resumable kind on S3.
    let bad = write("bad.toml", base().upload(Upload::tus("/t", "/n")));
    let (code, text) = porter_check(&bad, false).all();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("storage.backend"), "{text}");
    assert!(text.contains("upload[0].kind"), "{text}");
    let good = write(
        "good.toml",
        base().merge(garage.storage("c/")).merge(routes()),
    );
    let (code, text) = porter_check(&good, true).all();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("part_size = \"5MiB\""), "{text}");
    assert!(
        !text.contains(&garage.secret),
        "the secret is never printed"
    );
    let nope = garage.storage("c/").set("storage.s3.bucket", "nope");
    let wrong = write("wrong.toml", base().merge(nope).merge(routes()));
    let (code, text) = porter_check(&wrong, true).all();
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
    let porter = porter_on(garage, backend.addr, &prefix, routes()).await;
    let s3 = garage.client();
    let key = format!("{prefix}ab/cd/abcd0123456789abcdef0123456789ab");
    let file = temp_file(b"orphan");
    s3.put_file(&key, file.path(), 6, 1 << 16).await.unwrap();
    let temp = porter.temp();
    std::fs::write(temp.join("abcd0123456789abcdef0123456789ab.s3unsent"), &key).unwrap();
    std::fs::write(
        temp.join("abcd0123456789abcdef0123456789ab.1.s3spool"),
        b"part",
    )
    .unwrap();
    porter_gc(&porter.config());
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
    let mut p = Served::start(backend.addr, garage.storage(&prefix).merge(routes()));
    let mut c = wire::open(p.addr(), BIG_RAW).await;
    c.write_all(&data(12 << 20, 13)).await.unwrap();
    let s3 = garage.client();
    wait_multipart_upload(&s3, &prefix).await;
    p.proc.kill9();
    drop(c);
    assert_eq!(s3.multipart_uploads(&prefix).await.unwrap().len(), 1);
    porter_gc(&p.config);
    wait_clean(&s3, &prefix).await;
    assert!(files_under(&p.dir.path().join("tmp")).is_empty());
}
