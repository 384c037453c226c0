//! The chaos run: many mixed uploads (multipart, raw, tus, chunked) against the real
//! binary, with random client aborts, backend 5xx answers and two `kill -9`/restarts of
//! porter, then the invariants:
//! * every upload the client saw succeed is a file with its bytes and sha256,
//! * after `porter gc`, nothing else is left: no file under `storage.root` the backend
//!   did not accept, nothing in `storage.temp`,
//! * porter's open file descriptors are back to their baseline.
//!
//! `CHAOS_UPLOADS` sets the count (default 1000, as `scripts/chaos` runs it) and
//! `CHAOS_SEED` the seed; the run prints its counts.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

fn routes() -> Config {
    let sha256 = ["sha256"];
    let resumable = |u: Upload| u.hashes(&sha256).expire("2s").set("retry_window", "1s");
    Upload::multipart("/upload")
        .hashes(&sha256)
        .and(Upload::raw("/raw").hashes(&sha256))
        .upload(resumable(Upload::tus("/files", "/done")))
        .upload(resumable(Upload::chunked("/chunked", "/chunked-complete")))
}

/// xorshift64*: a small, seeded, reproducible source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Multipart,
    Raw,
    Tus,
    Chunked,
}

/// One planned upload.
struct Plan {
    name: String,
    kind: Kind,
    data: Vec<u8>,
    /// Cut the connection mid-body.
    abort: bool,
    /// Ask the backend to answer 503 to its metadata request.
    fail: bool,
}

#[derive(Default, Debug)]
struct Counts {
    succeeded: usize,
    aborted: usize,
    refused_by_backend: usize,
    failed_otherwise: usize,
    /// Files the app refused whose deletion a `kill -9` cut off (see `check_invariants`).
    refused_then_killed: usize,
    /// Files of a killed batch whose metadata request a `kill -9` cut off before the
    /// app read it (see `check_invariants`).
    told_then_killed: usize,
}

/// The batches (of 8 plans) during which porter is killed: a third and two thirds of
/// the way.
fn killed_batches(plans: usize) -> [usize; 2] {
    let batches = plans.div_ceil(8);
    [batches / 3, 2 * batches / 3]
}

/// Where porter listens now; swapped by the killer.
type Base = Arc<Mutex<String>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_keeps_every_invariant() {
    let count: usize = std::env::var("CHAOS_UPLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let backend = backend()
        .respond(|r| match r.header("x-chaos-fail") {
            Some(_) => answer(503, r#"{"error":"chaos"}"#),
            None => answer(200, r#"{"ok":true}"#),
        })
        .run()
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = routes()
        .backend(backend.addr)
        .listen(port)
        .set("server.idle_timeout", "3s")
        .set("server.shutdown_grace", "1s");
    let cfg = config.write(dir.path());
    let porter = Arc::new(Mutex::new(Proc::serve(&cfg)));
    porter.lock().await.port();
    let base: Base = Arc::new(Mutex::new(format!("http://127.0.0.1:{port}")));

    let mut rng = Rng(seed | 1);
    let plans: Vec<Plan> = (0..count)
        .map(|i| {
            let kind =
                [Kind::Multipart, Kind::Raw, Kind::Tus, Kind::Chunked][rng.below(4) as usize];
            let size = 1 + rng.below(200_000) as usize;
            Plan {
                name: format!("c{i}.bin"),
                kind,
                data: data(size, (i % 251) as u8),
                abort: rng.below(10) == 0,
                fail: rng.below(10) == 0,
            }
        })
        .collect();

    // Two kill -9 + restart cycles, a third and two thirds of the way, with uploads in flight.
    let (outcomes, kills) = run_all(&plans, &base, &porter, &cfg).await;
    assert_eq!(kills, 2, "porter was killed and restarted twice");

    // A client that gave up (its 20 s timeout, on a loaded machine) may leave porter
    // finishing that upload and telling the backend afterwards: wait until the backend
    // has been quiet for 2 s (at most a minute), so the check sees every notify.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut seen, mut since) = (backend.count(), tokio::time::Instant::now());
    while since.elapsed() < Duration::from_secs(2) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if backend.count() != seen {
            (seen, since) = (backend.count(), tokio::time::Instant::now());
        }
    }
    // Let expire and retry_window pass, then one gc pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    porter_gc(&cfg);

    let killed: HashSet<String> = killed_batches(plans.len())
        .iter()
        .flat_map(|b| plans.iter().skip(b * 8).take(8))
        .map(|p| p.name.clone())
        .collect();
    let counts = check_invariants(&plans, &outcomes, &backend, dir.path(), &killed);
    eprintln!("chaos: {count} uploads, seed {seed}, 2 kill -9 restarts: {counts:?}");
    assert!(
        counts.succeeded > count / 2,
        "too few successes to mean anything: {counts:?}"
    );

    // File descriptors: back to a fresh instance's baseline once the work is over,
    // but for the app connections each worker keeps alive for the next requests.
    let p = porter.lock().await;
    let (fds, kept) = (p.open_fds(), p.connections_to(backend.addr));
    assert!(
        fds - kept <= baseline_fds(config).await + 8,
        "porter holds {fds} descriptors after the run, {kept} of them kept-alive app connections"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Aborted,
    RefusedByBackend,
    Failed,
}

/// Runs the plans 8 at a time; in the batches a third and two thirds of the way, porter
/// is killed with SIGKILL a moment after they start, and restarted on the same port.
async fn run_all(
    plans: &[Plan],
    base: &Base,
    porter: &Arc<Mutex<Proc>>,
    cfg: &Path,
) -> (Vec<(usize, Outcome)>, usize) {
    let kill_at = killed_batches(plans.len());
    let (mut out, mut kills) = (Vec::new(), 0);
    for (b, batch) in plans.chunks(8).enumerate() {
        let url = base.lock().await.clone();
        let tasks: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(j, plan)| {
                let url = url.clone();
                let (kind, name, data, abort, fail) = (
                    plan.kind,
                    plan.name.clone(),
                    plan.data.clone(),
                    plan.abort,
                    plan.fail,
                );
                tokio::spawn(async move {
                    let run = one(&url, kind, &name, &data, abort, fail);
                    let outcome = tokio::time::timeout(Duration::from_secs(20), run)
                        .await
                        .unwrap_or(Outcome::Failed);
                    (b * 8 + j, outcome)
                })
            })
            .collect();
        if kill_at.contains(&b) {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let mut p = porter.lock().await;
            p.signal(libc::SIGKILL);
            p.wait_exit(10);
            *p = Proc::serve(cfg);
            p.port();
            kills += 1;
        }
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
    }
    (out, kills)
}

fn classify(status: u16, fail: bool) -> Outcome {
    match status {
        200 | 201 | 204 => Outcome::Succeeded,
        503 if fail => Outcome::RefusedByBackend,
        _ => Outcome::Failed,
    }
}

async fn one(base: &str, kind: Kind, name: &str, data: &[u8], abort: bool, fail: bool) -> Outcome {
    if abort {
        return cut(base, kind, name, data).await;
    }
    let reply = match kind {
        Kind::Multipart => {
            let req = request("POST", &format!("{base}/upload")).form(Form::one_file(name, data));
            with_fail(req, fail).try_send().await.ok()
        }
        Kind::Raw => {
            let req = request("POST", &format!("{base}/raw")).header("x-file-name", name);
            with_fail(req.body(data.to_vec()), fail)
                .try_send()
                .await
                .ok()
        }
        Kind::Tus => tus_upload(base, name, data, fail).await,
        Kind::Chunked => chunked_upload(base, name, data, fail).await,
    };
    match reply {
        Some(r) => classify(r.status, fail),
        None => Outcome::Failed,
    }
}

/// Asks the backend to refuse this upload's metadata request, when `fail`.
fn with_fail(req: Call, fail: bool) -> Call {
    if fail {
        req.header("x-chaos-fail", "1")
    } else {
        req
    }
}

/// Starts an upload and cuts the connection halfway through its body.
async fn cut(base: &str, kind: Kind, name: &str, data: &[u8]) -> Outcome {
    let addr = base.trim_start_matches("http://").to_string();
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return Outcome::Failed;
    };
    let (head, body) = match kind {
        Kind::Multipart | Kind::Chunked => {
            let (ct, body) = Form::one_file(name, data).finish();
            let path = if kind == Kind::Multipart {
                "/upload"
            } else {
                "/chunked"
            };
            let ct = format!("Content-Type: {ct}");
            (wire::head("POST", path, &[&ct], body.len()), body)
        }
        Kind::Raw | Kind::Tus => {
            let file = format!("X-File-Name: {name}");
            (
                wire::head("POST", "/raw", &[&file], data.len()),
                data.to_vec(),
            )
        }
    };
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body[..body.len() / 2]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Outcome::Aborted
}

/// A tus upload in two PATCHes; the last answer (a connection error is `None`).
async fn tus_upload(base: &str, name: &str, data: &[u8], fail: bool) -> Option<Reply> {
    let created = tus::creation(&format!("{base}/files"), data.len())
        .header("upload-metadata", format!("filename {}", b64(name)))
        .try_send()
        .await
        .ok()?;
    if created.status != 201 {
        return Some(created);
    }
    let location = created.headers.get("location")?.to_str().ok()?.to_string();
    let half = data.len() / 2;
    let mut last = None;
    for (offset, part) in [(0, &data[..half]), (half, &data[half..])] {
        let req = tus::append(&location, offset).body(part.to_vec());
        let r = with_fail(req, fail).try_send().await.ok()?;
        if r.status != 204 {
            return Some(r);
        }
        last = Some(r);
    }
    last
}

/// A chunked upload in two chunks, then its completion; the last answer.
async fn chunked_upload(base: &str, name: &str, data: &[u8], fail: bool) -> Option<Reply> {
    let half = data.len() / 2;
    let mut upload_id: Option<String> = None;
    for (start, part) in [
        (0, &data[..half.max(1)]),
        (half.max(1), &data[half.max(1)..]),
    ] {
        if part.is_empty() {
            continue;
        }
        let range = (start, start + part.len() - 1, data.len());
        let file = (name, "application/octet-stream");
        let url = format!("{base}/chunked");
        let req = chunked::chunk(&url, file, part, Some(range), upload_id.as_deref());
        let r = req.try_send().await.ok()?;
        if r.status != 200 {
            return Some(r);
        }
        upload_id = Some(r.json()["upload_id"].as_str()?.to_string());
    }
    let req = chunked::completion(&format!("{base}/chunked-complete"), &upload_id?, data);
    with_fail(req, fail).try_send().await.ok()
}

fn check_invariants(
    plans: &[Plan],
    outcomes: &[(usize, Outcome)],
    backend: &Backend,
    dir: &Path,
    killed: &HashSet<String>,
) -> Counts {
    let mut counts = Counts::default();
    // What the backend accepted: file name → stored path, per metadata request answered 200.
    let mut accepted: HashMap<String, PathBuf> = HashMap::new();
    for r in backend.requests() {
        if r.header("x-chaos-fail").is_some() {
            continue;
        }
        let form = parse_form(&r);
        let (Some(name), Some(path)) = (
            get(&form, "file.name").first().copied(),
            get(&form, "file.path").first().copied(),
        ) else {
            continue;
        };
        accepted.insert(name.to_string(), PathBuf::from(path));
    }
    for (i, outcome) in outcomes {
        let plan = &plans[*i];
        match outcome {
            Outcome::Succeeded => {
                counts.succeeded += 1;
                let path = accepted.get(&plan.name).unwrap_or_else(|| {
                    panic!(
                        "{} ({:?}) succeeded but the backend never accepted it",
                        plan.name, plan.kind
                    )
                });
                let stored =
                    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(stored.len(), plan.data.len(), "{} size", plan.name);
                assert_eq!(
                    sha256_hex(&stored),
                    sha256_hex(&plan.data),
                    "{} bytes",
                    plan.name
                );
            }
            Outcome::Aborted => counts.aborted += 1,
            Outcome::RefusedByBackend => counts.refused_by_backend += 1,
            Outcome::Failed => counts.failed_otherwise += 1,
        }
    }
    // Nothing under root the backend did not accept (a success the client never saw, when
    // porter died between the backend's answer and the client's, is still the app's).
    let known: Vec<&PathBuf> = accepted.values().collect();
    for file in files_under(&dir.join("root")) {
        if known.iter().any(|k| **k == file) {
            continue;
        }
        // What the backend saw of it, if anything: (file name, refused).
        let seen: Vec<(String, bool)> = backend
            .requests()
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&*file.to_string_lossy()))
            .map(|r| {
                let name = get(&parse_form(r), "file.name")
                    .first()
                    .map(|n| n.to_string());
                (name.unwrap_or_default(), r.header("x-chaos-fail").is_some())
            })
            .collect();
        // porter tells the app before it knows the answer, and keeps a file the app may
        // have accepted; a kill -9 between the app's refusal and porter's delete leaves
        // the file (by design: deleting an accepted file would be worse). Only uploads
        // of a batch porter was killed in may end so.
        if !seen.is_empty()
            && seen
                .iter()
                .all(|(n, refused)| *refused && killed.contains(n))
        {
            counts.refused_then_killed += 1;
            continue;
        }
        // A kill -9 while porter sends the metadata request: porter had handed the file
        // over (once sent, it is the app's: deleting a file the app may have accepted
        // would be worse), but the request never reached the app whole. The file is
        // known by its bytes; only uploads of a batch porter was killed in may end so.
        let bytes = std::fs::read(&file).unwrap_or_default();
        let of_killed = plans
            .iter()
            .any(|p| p.data == bytes && killed.contains(&p.name));
        if seen.is_empty() && of_killed {
            counts.told_then_killed += 1;
            continue;
        }
        let id = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let traces: Vec<String> = files_under(&dir.join("tmp"))
            .iter()
            .filter(|p| p.to_string_lossy().contains(&id))
            .map(|p| p.display().to_string())
            .collect();
        let owners: Vec<&str> = plans
            .iter()
            .filter(|p| p.data == bytes)
            .map(|p| p.name.as_str())
            .collect();
        panic!(
            "{} is unknown to the backend; requests naming it: {seen:?}; its bytes are \
             those of {owners:?}; in storage.temp: {traces:?}",
            file.display()
        );
    }
    let temp = files_under(&dir.join("tmp"));
    assert!(temp.is_empty(), "left in storage.temp after gc: {temp:?}");
    counts
}

/// The descriptors of a fresh porter on the same config after one request.
async fn baseline_fds(config: Config) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Proc::serve(&config.listen(0).write(dir.path()));
    let port = p.port();
    let _ = request("GET", &format!("http://127.0.0.1:{port}/x"))
        .try_send()
        .await;
    let n = p.open_fds();
    p.signal(libc::SIGTERM);
    p.wait_exit(10);
    n
}
