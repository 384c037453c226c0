//! State an older porter wrote resumes on this one: upload state files and their data on
//! disk, the state and data records in Redis and the pending objects in S3, with the
//! saved hash states inside them.
//!
//! The fixtures in `tests/fixtures/old-state/` were written by porter at commit 3ec5ec2
//! (the last before the storage redesign of issue 20) with `capture_old_state` below:
//!
//!   PORTER_OLD_BIN=/path/to/old/porter cargo test --test it -- --ignored capture_old_state
//!
//! Each holds, for one file of `LEN` bytes (`data(LEN, SEED)`): a tus upload with its
//! first `TUS_DONE` bytes received, and an nginx-resumable session with its first and
//! last thirds received. A test copies a fixture into a fresh porter and finishes both
//! uploads there: the app must be told the whole file's hashes, which only holds if
//! the hash state the old build saved was read back as it wrote it.

use super::s3::{Garage, object, prefix};
use super::shared::RedisServer;
use crate::support::nginx::segment;
use crate::support::*;
use std::path::{Path, PathBuf};

const LEN: usize = 30_000;
const SEED: u8 = 7;
const TUS_DONE: usize = 10_000;
const THIRD: usize = LEN / 3;
const SESSION: &str = "old-state-session-0001";

/// The two routes, with an expiry far enough out that the fixtures never age.
fn routes() -> Config {
    let hashes = ["md5", "sha256"];
    Upload::tus("/files", "/uploads/done")
        .hashes(&hashes)
        .expire("3650d")
        .and(
            Upload::nginx_resumable("/resumable")
                .set("notify", "/uploads/done")
                .hashes(&hashes)
                .expire("3650d"),
        )
}

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/old-state/{kind}"))
}

async fn send_segment(base: &str, bytes: &[u8], start: usize) -> Reply {
    segment(&format!("{base}/resumable"), SESSION, bytes, start, LEN)
        .header("content-disposition", "attachment; filename=\"old.bin\"")
        .send()
        .await
}

/// The tus upload's id: the one upload in the fixture whose state says `tus`.
fn tus_id(states: &[(String, serde_json::Value)]) -> String {
    let ids: Vec<&String> = states
        .iter()
        .filter(|(_, s)| s["protocol"] == "tus")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 1, "one tus upload in the fixture");
    ids[0].clone()
}

/// Finishes both uploads of a fixture on `base` and checks what the app was told.
async fn finish_both(base: &str, backend: &Backend, tus_id: &str) -> Vec<Vec<(String, String)>> {
    let content = data(LEN, SEED);
    let url = format!("{base}/files/{tus_id}");
    let h = tus::head(&url).await;
    assert_eq!(h.status, 200, "{:?}", h.body);
    assert_eq!(h.header("upload-offset"), TUS_DONE.to_string());
    assert_eq!(h.header("upload-length"), LEN.to_string());
    let r = tus::patch(&url, TUS_DONE, &content[TUS_DONE..]).await;
    assert_eq!(r.status, 204, "{:?}", r.body);

    let r = send_segment(base, &content[THIRD..2 * THIRD], THIRD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let seen = backend.requests();
    assert_eq!(seen.len(), 2, "one metadata request per upload");
    let forms: Vec<_> = seen.iter().map(parse_form).collect();
    for form in &forms {
        assert_eq!(one(form, "file.size"), LEN.to_string());
        assert_eq!(one(form, "file.md5"), md5_hex(&content));
        assert_eq!(one(form, "file.sha256"), sha256_hex(&content));
    }
    forms
}

fn states_in(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let state = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            out.push((id, state));
        }
    }
    out
}

#[tokio::test]
async fn state_on_disk_from_the_old_build_resumes() {
    let backend = Backend::ok().await;
    let porter = Porter::start(backend.addr, routes()).await;
    let from = fixtures("local");
    let into = porter.temp().join("resumable");
    std::fs::create_dir_all(&into).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, into.join(path.file_name().unwrap())).unwrap();
    }
    let states = states_in(&from);
    assert_eq!(states.len(), 2, "the fixture holds two uploads");
    let forms = finish_both(&porter.url(""), &backend, &tus_id(&states)).await;
    let content = data(LEN, SEED);
    for form in &forms {
        let stored = std::fs::read(one(form, "file.path")).expect("the stored file");
        assert!(stored == content, "the stored file's bytes");
    }
    porter.stop().await;
}

/// Redis as the old build left it: `{key: {"string": text} | {"hash": {field: value}}}`.
fn restore_redis(redis: &RedisServer, dump: &serde_json::Value) {
    for (key, value) in dump.as_object().expect("a map of keys") {
        if let Some(text) = value["string"].as_str() {
            redis.cli(&["SET", key, text]);
        }
        for (field, v) in value["hash"].as_object().into_iter().flatten() {
            redis.cli(&["HSET", key, field, v.as_str().unwrap()]);
        }
    }
}

/// Every file under `dir`, as (path relative to `dir` with `/`, bytes).
fn objects_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// porter's `[storage]` in S3 under `prefix` with its state in `redis`.
fn shared(garage: &Garage, redis: &RedisServer, prefix: &str) -> Config {
    garage.storage(prefix).set("state.url", redis.url.as_str())
}

#[tokio::test]
async fn state_in_redis_and_s3_from_the_old_build_resumes() {
    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let redis = RedisServer::start();
    let prefix = prefix();
    let from = fixtures("s3");
    let dump: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("redis.json")).unwrap()).unwrap();
    restore_redis(&redis, &dump);
    let s3 = garage.client();
    let spool = tempfile::tempdir().unwrap();
    for (rel, bytes) in objects_in(&from.join("objects")) {
        let file = spool.path().join("object");
        std::fs::write(&file, &bytes).unwrap();
        s3.put_file(&format!("{prefix}{rel}"), &file, bytes.len() as u64, 65536)
            .await
            .expect("put a pending object");
    }
    let states: Vec<(String, serde_json::Value)> = dump
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("porter:up:")?;
            Some((
                id.to_string(),
                serde_json::from_str(v["string"].as_str()?).ok()?,
            ))
        })
        .collect();
    assert_eq!(states.len(), 2, "the fixture holds two uploads");

    let backend = Backend::ok().await;
    let config = routes().merge(shared(garage, &redis, &prefix));
    let porter = Porter::start(backend.addr, config).await;
    let forms = finish_both(&porter.url(""), &backend, &tus_id(&states)).await;
    let content = data(LEN, SEED);
    for form in &forms {
        assert!(
            object(&s3, one(form, "file.key")).await == content,
            "the object's bytes"
        );
    }
    porter.stop().await;
}

/// Writes the fixtures with an old porter binary (`PORTER_OLD_BIN`); see the module doc.
#[tokio::test]
#[ignore = "writes tests/fixtures/old-state with an old build: PORTER_OLD_BIN=..."]
async fn capture_old_state() {
    let old = std::env::var("PORTER_OLD_BIN").expect("PORTER_OLD_BIN names the old binary");
    let backend = Backend::ok().await;

    let dir = tempfile::tempdir().unwrap();
    capture(&old, dir.path(), &backend, Config::new()).await;
    let out = fixtures("local");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for p in files_under(&dir.path().join("tmp/resumable")) {
        std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
    }

    let garage = tokio::task::spawn_blocking(Garage::shared).await.unwrap();
    let redis = RedisServer::start();
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    capture(&old, dir.path(), &backend, shared(garage, &redis, &prefix)).await;
    let out = fixtures("s3");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("objects")).unwrap();
    std::fs::write(
        out.join("redis.json"),
        serde_json::to_vec_pretty(&dump_redis(&redis)).unwrap(),
    )
    .unwrap();
    let s3 = garage.client();
    for key in s3.list(&prefix).await.unwrap() {
        let rel = key.strip_prefix(&prefix).unwrap();
        let path = out.join("objects").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, object(&s3, &key).await).unwrap();
    }
}

/// porter's keys in `redis`, in the form `restore_redis` reads, leaving out lock leases
/// and progress (a live instance's, not state).
fn dump_redis(redis: &RedisServer) -> serde_json::Map<String, serde_json::Value> {
    let mut dump = serde_json::Map::new();
    for key in redis.keys("porter:*") {
        if key.starts_with("porter:lock:") || key.starts_with("porter:progress:") {
            continue;
        }
        let kind = redis.cli(&["TYPE", &key]).join("");
        let value = match kind.as_str() {
            "string" => serde_json::json!({ "string": redis.cli(&["GET", &key]).join("\n") }),
            "hash" => {
                let flat = redis.cli(&["HGETALL", &key]);
                let map: serde_json::Map<_, _> = flat
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), serde_json::Value::from(kv[1].clone())))
                    .collect();
                serde_json::json!({ "hash": map })
            }
            other => panic!("{key} is a {other}: the fixture format knows strings and hashes"),
        };
        dump.insert(key, value);
    }
    dump
}

/// Runs the old binary with `storage` and leaves both uploads partly received.
async fn capture(old: &str, dir: &Path, backend: &Backend, storage: Config) {
    let config = routes().merge(storage).backend(backend.addr).write(dir);
    let mut cmd = std::process::Command::new(old);
    cmd.args(["serve", "-c"]).arg(&config);
    let mut proc = Proc::spawn(cmd);
    let port = proc.port();
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let content = data(LEN, SEED);
    let r = tus::creation(&format!("{base}/files"), LEN)
        .header("upload-metadata", "filename b2xkLmJpbg==")
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.location();
    assert_eq!(tus::patch(&url, 0, &content[..TUS_DONE]).await.status, 204);
    let last = send_segment(&base, &content[2 * THIRD..], 2 * THIRD).await;
    assert_eq!(last.status, 201);
    assert_eq!(send_segment(&base, &content[..THIRD], 0).await.status, 201);
    proc.signal(libc::SIGTERM);
    assert!(proc.wait_exit(20).is_some(), "the old porter stops");
}
