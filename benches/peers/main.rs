//! porter against the servers users would pick instead, side by side in one run on one
//! machine: `scripts/bench [--quick] [--out DIR]` (which installs the peers, then runs
//! `cargo bench --bench peers -- ...`).
//!
//! Every server runs as a child process on loopback against the same in-process backend,
//! in its own folder of the same storage location (tmpfs, then disk), with its defaults
//! except where a scenario needs a route. Each scenario checks that the bytes landed where
//! the server keeps finished uploads, then clears them. Figures are reported with their
//! ratio to porter's, never asserted: absolute numbers on a shared machine drift, ratios
//! from the same run do not. Writes `results.md` and `chart.png` to the output folder
//! (default `target/bench`) and prints the Markdown.

#[path = "../support/mod.rs"]
mod support;

mod limits;
mod report;
mod setup;

use bytes::Bytes;
use hyper::Method;
use report::{Metric, Row};
use setup::Peers;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::load::{self, Conn, Proto, Shape};
use support::servers::{RssSampler, Server};

/// Sizes and durations: the full run, or `--quick` (under two minutes).
struct Plan {
    quick: bool,
    /// One large upload or download.
    big: u64,
    /// The concurrent scenario: this many uploads of `each` bytes at once.
    many: usize,
    each: u64,
    /// The S3 concurrent scenario: `many` uploads of this many bytes.
    s3_each: u64,
    /// How long the small-request scenarios run.
    period: Duration,
    /// Tries for single large transfers; the best counts.
    tries: usize,
    /// `--rounds N`: porter and its peer measured N times, alternating; each figure is
    /// the median of its N (single runs on a shared 2-core machine swing by 2×).
    rounds: usize,
    out: PathBuf,
    /// `--only NAME`: run just that scenario (`big`, `concurrent`, `small`, `tus`,
    /// `draft`, `downloads`, `passthrough`, `h2`, `s3`).
    only: Option<String>,
}

const SMALL: u64 = 10 * 1024;
const CONNECTIONS: usize = 64;
const TUS_PATCH: u64 = 8 << 20;

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let rounds = args
            .iter()
            .position(|a| a == "--rounds")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let out = args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from);
        Plan {
            quick,
            big: if quick { 64 << 20 } else { 1 << 30 },
            many: 64,
            each: if quick { 1 << 20 } else { 16 << 20 },
            s3_each: if quick { 1 << 20 } else { 64 << 20 },
            period: Duration::from_secs(if quick { 2 } else { 10 }),
            tries: if quick || rounds > 2 { 1 } else { 2 },
            rounds,
            out,
            only: args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .cloned(),
        }
    }

    fn runs(&self, scenario: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == scenario)
    }
}

fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b < 1 << 10 => format!("{b} B"),
        b => format!("{} KiB", b >> 10),
    }
}

/// GETs of `path` (answers of `each` bytes) on `CONNECTIONS` keep-alive connections
/// for `period`: requests a second, once every answer came whole.
async fn sustained_gets(
    t: &Target,
    path: &str,
    each: u64,
    period: Duration,
    pattern: &Bytes,
) -> Result<Vec<f64>, String> {
    let batch = load::sustained(t.addr(), CONNECTIONS, period, &Shape::get(path), pattern).await?;
    if batch.bytes != batch.latencies.len() as u64 * each {
        return Err(format!("{}: short answers to GET {path}", t.server.name));
    }
    Ok(vec![batch.rate()])
}

/// A running server and the folder where it keeps finished uploads.
struct Target {
    server: Server,
    stored: PathBuf,
}

impl Target {
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Checks that at least `bytes` landed in `stored`, then deletes the files (folders
    /// stay: the server expects them).
    fn take(&self, bytes: u64) -> Result<(), String> {
        let (found, files) = clear(&self.stored)?;
        if found < bytes {
            return Err(format!(
                "{}: {found} bytes in {files} files under {}, expected at least {bytes}\n{}",
                self.server.name,
                self.stored.display(),
                self.server.log()
            ));
        }
        Ok(())
    }
}

/// Deletes every file under `dir`; the bytes and files it held.
fn clear(dir: &Path) -> Result<(u64, usize), String> {
    let (mut bytes, mut files) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((0, 0));
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| e.to_string())?;
        if meta.is_dir() {
            let (b, f) = clear(&path)?;
            bytes += b;
            files += f;
        } else {
            bytes += meta.len();
            files += 1;
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok((bytes, files))
}

/// A peer in a comparison: running, or why not.
enum Peer<'a> {
    Running(&'a Target),
    Absent { name: &'a str, why: &'a str },
}

impl Peer<'_> {
    fn of<'a>(name: &'a str, target: Option<&'a Target>) -> Peer<'a> {
        match target {
            Some(t) => Peer::Running(t),
            None => Peer::Absent {
                name,
                why: "not installed",
            },
        }
    }
}

/// One run: the plan, the shared backend and body pattern, and the rows so far.
struct Run {
    plan: Plan,
    pattern: Bytes,
    backend: SocketAddr,
    peers: Peers,
    rows: Vec<Row>,
}

impl Run {
    /// Measures porter and then `peer` with `measure`, which returns one figure per
    /// entry of `what`; pushes one row per figure.
    async fn compare<F>(
        &mut self,
        what: &[(String, Metric)],
        storage: &str,
        porter: &Target,
        peer: Peer<'_>,
        measure: F,
    ) -> Result<(), String>
    where
        F: AsyncFn(&Target) -> Result<Vec<f64>, String>,
    {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.rounds {
            ours.push(measure(porter).await?);
            if let Peer::Running(t) = &peer {
                theirs.push(measure(t).await?);
            }
        }
        let (name, note) = match peer {
            Peer::Running(t) => (t.server.name.clone(), String::new()),
            Peer::Absent { name, why } => (name.to_string(), why.to_string()),
        };
        for (i, (scenario, metric)) in what.iter().enumerate() {
            let mine: Vec<f64> = ours.iter().map(|r| r[i]).collect();
            let peers: Vec<f64> = theirs.iter().map(|r| r[i]).collect();
            self.rows.push(Row {
                scenario: scenario.clone(),
                storage: storage.to_string(),
                metric: *metric,
                porter: limits::median(&mine),
                peer: name.clone(),
                theirs: (!peers.is_empty()).then(|| limits::median(&peers)),
                note: note.clone(),
            });
        }
        Ok(())
    }
}

/// The best MiB/s of `tries` single uploads of `shape`; checks the stored bytes.
async fn best_upload(
    t: &Target,
    shape: &Shape,
    pattern: &Bytes,
    tries: usize,
) -> Result<f64, String> {
    let mut best = 0f64;
    for _ in 0..tries {
        let start = Instant::now();
        load::once(t.addr(), Proto::H1, shape, pattern).await?;
        best = best.max(limits::mib_s(shape.size, start.elapsed().as_secs_f64()));
        t.take(shape.size)?;
    }
    Ok(best)
}

/// Starts a peer that was found (`found`) in its own folder `name`, where it keeps
/// finished uploads under `stored`; `None` when it is not installed.
fn peer(
    found: &Option<PathBuf>,
    sub: &dyn Fn(&str) -> Result<PathBuf, String>,
    name: &str,
    stored: &str,
    start: impl FnOnce(&Path, &Path) -> Result<Server, String>,
) -> Result<Option<Target>, String> {
    let Some(found) = found else {
        return Ok(None);
    };
    let dir = sub(name)?;
    let server = start(found, &dir)?;
    Ok(Some(Target {
        server,
        stored: dir.join(stored),
    }))
}

/// The servers of one storage location.
struct Place {
    label: &'static str,
    porter: Target,
    /// porter with `fsync = false`, as the peers run: for the small-upload scenario.
    porter_nosync: Target,
    nginx: Option<Target>,
    django: Option<Target>,
    rustus: Option<Target>,
    tus_node: Option<Target>,
}

impl Run {
    fn start_place(&self, label: &'static str, dir: &Path, files: &Path) -> Result<Place, String> {
        let sub = |name: &str| -> Result<PathBuf, String> {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            Ok(d)
        };
        let porter_dir = sub("porter")?;
        let porter = Target {
            server: setup::porter(&porter_dir, self.backend, files, true)?,
            stored: porter_dir.join("root"),
        };
        let nosync_dir = sub("porter-nosync")?;
        let porter_nosync = Target {
            server: setup::porter(&nosync_dir, self.backend, files, false)?,
            stored: nosync_dir.join("root"),
        };
        let p = &self.peers;
        let backend = self.backend;
        let nginx = peer(&p.nginx, &sub, "nginx", "body", |bin, d| {
            setup::nginx(bin, d, backend, files)
        })?;
        let django = peer(&p.python, &sub, "django", "media", setup::django)?;
        let rustus = peer(&p.rustus, &sub, "rustus", "data", setup::rustus)?;
        let tus_node = peer(&p.tus_node, &sub, "tus-node", "data", setup::tus_node)?;
        Ok(Place {
            label,
            porter,
            porter_nosync,
            nginx,
            django,
            rustus,
            tus_node,
        })
    }

    /// One large upload: multipart (porter, Django) and raw (porter, nginx), without
    /// hashes and with md5+sha256.
    async fn one_big(&mut self, place: &Place) -> Result<(), String> {
        let size = self.plan.big;
        for (hashes, suffix) in [("no hashes", ""), ("md5+sha256", "-hashed")] {
            let pattern = self.pattern.clone();
            let tries = self.plan.tries;
            let multipart = Shape::multipart(&format!("/upload{suffix}"), size);
            let what = [(
                format!("one {} multipart, {hashes}", size_label(size)),
                Metric::MibPerSec,
            )];
            let peer = Peer::of("Django", place.django.as_ref());
            self.compare(
                &what,
                place.label,
                &place.porter,
                peer,
                async |t: &Target| Ok(vec![best_upload(t, &multipart, &pattern, tries).await?]),
            )
            .await?;
            let raw = Shape::raw(Method::POST, &format!("/raw{suffix}"), size);
            let what = [(
                format!("one {} raw body, {hashes}", size_label(size)),
                Metric::MibPerSec,
            )];
            let peer = match (suffix, place.nginx.as_ref()) {
                ("", nginx) => Peer::of("nginx", nginx),
                _ => Peer::Absent {
                    name: "nginx",
                    why: "cannot hash",
                },
            };
            self.compare(
                &what,
                place.label,
                &place.porter,
                peer,
                async |t: &Target| Ok(vec![best_upload(t, &raw, &pattern, tries).await?]),
            )
            .await?;
        }
        Ok(())
    }

    /// `many` uploads of `each` bytes at once: throughput, p50, p99 and the server's peak
    /// memory (its whole process tree, sampled every 20 ms); raw bodies once more with
    /// porter hashing md5+sha256, the memory a hashing porter needs.
    async fn concurrent(&mut self, place: &Place) -> Result<(), String> {
        let (n, each) = (self.plan.many, self.plan.each);
        let title = format!("{n} × {} at once", size_label(each));
        let shapes = [
            (
                "multipart",
                Shape::multipart("/upload", each),
                Peer::of("Django", place.django.as_ref()),
            ),
            (
                "raw",
                Shape::raw(Method::POST, "/raw", each),
                Peer::of("nginx", place.nginx.as_ref()),
            ),
            // nginx's `/raw` location takes this path too, without hashing.
            (
                "raw, porter md5+sha256",
                Shape::raw(Method::POST, "/raw-hashed", each),
                Peer::of("nginx", place.nginx.as_ref()),
            ),
        ];
        for (kind, shape, peer) in shapes {
            let what = [
                (format!("{title}, {kind}: throughput"), Metric::MibPerSec),
                (format!("{title}, {kind}: p50"), Metric::LatencyMs),
                (format!("{title}, {kind}: p99"), Metric::LatencyMs),
                (format!("{title}, {kind}: peak RSS"), Metric::RssMib),
            ];
            let pattern = self.pattern.clone();
            self.compare(
                &what,
                place.label,
                &place.porter,
                peer,
                async |t: &Target| {
                    let rss = RssSampler::start(t.server.pid());
                    let batch = load::concurrent(t.addr(), n, &shape, &pattern).await;
                    let peak = rss.finish();
                    let batch = batch?;
                    t.take(n as u64 * each)?;
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    let total = limits::mib_s(n as u64 * each, batch.total.as_secs_f64());
                    Ok(vec![
                        total,
                        ms(batch.percentile(50.0)),
                        ms(batch.percentile(99.0)),
                        peak,
                    ])
                },
            )
            .await?;
        }
        Ok(())
    }

    /// 10 KiB uploads on 64 keep-alive connections for `period`: requests per second.
    /// Raw bodies once more through porter with `fsync = false`, as nginx runs, to show
    /// what durability costs per upload.
    async fn small(&mut self, place: &Place) -> Result<(), String> {
        let raw = Shape::raw(Method::POST, "/raw", SMALL);
        let nginx = || Peer::of("nginx", place.nginx.as_ref());
        let runs = [
            (
                "multipart",
                Shape::multipart("/upload", SMALL),
                &place.porter,
                Peer::of("Django", place.django.as_ref()),
            ),
            ("raw", raw.clone(), &place.porter, nginx()),
            (
                "raw (porter: fsync = false)",
                raw,
                &place.porter_nosync,
                nginx(),
            ),
        ];
        for (kind, shape, porter, peer) in runs {
            let what = [(
                format!("10 KiB uploads, {CONNECTIONS} connections, {kind}"),
                Metric::ReqPerSec,
            )];
            let (pattern, period) = (self.pattern.clone(), self.plan.period);
            self.compare(&what, place.label, porter, peer, async |t: &Target| {
                let batch =
                    load::sustained(t.addr(), CONNECTIONS, period, &shape, &pattern).await?;
                t.take(batch.latencies.len() as u64 * SMALL)?;
                Ok(vec![batch.rate()])
            })
            .await?;
        }
        Ok(())
    }

    /// One large tus upload in 8 MiB PATCHes: porter against rustus and @tus/server.
    async fn tus(&mut self, place: &Place) -> Result<(), String> {
        let size = self.plan.big;
        let scenario = format!("tus: one {} in 8 MiB PATCHes", size_label(size));
        for (name, peer) in [("rustus", &place.rustus), ("@tus/server", &place.tus_node)] {
            let what = [(scenario.clone(), Metric::MibPerSec)];
            let (pattern, tries) = (self.pattern.clone(), self.plan.tries);
            let peer = Peer::of(name, peer.as_ref());
            self.compare(
                &what,
                place.label,
                &place.porter,
                peer,
                async |t: &Target| {
                    let mut best = 0f64;
                    for _ in 0..tries {
                        let start = Instant::now();
                        resumable_upload(t.addr(), size, &pattern, Resumable::Tus)
                            .await
                            .map_err(|e| format!("{}: {e}", t.server.name))?;
                        best = best.max(limits::mib_s(size, start.elapsed().as_secs_f64()));
                        t.take(size)?;
                    }
                    Ok(vec![best])
                },
            )
            .await?;
        }
        Ok(())
    }

    /// One large upload in 8 MiB appends over the IETF draft, against tus on the same
    /// porter route: the cost of the draft's front-end.
    async fn draft(&mut self, place: &Place) -> Result<(), String> {
        let size = self.plan.big;
        let mut figures = [0f64; 2];
        for (i, protocol) in [Resumable::Draft, Resumable::Tus].into_iter().enumerate() {
            for _ in 0..self.plan.tries {
                let start = Instant::now();
                resumable_upload(place.porter.addr(), size, &self.pattern, protocol).await?;
                figures[i] = figures[i].max(limits::mib_s(size, start.elapsed().as_secs_f64()));
                place.porter.take(size)?;
            }
        }
        self.rows.push(Row {
            scenario: format!("IETF draft: one {} in 8 MiB appends", size_label(size)),
            storage: place.label.to_string(),
            metric: Metric::MibPerSec,
            porter: figures[0],
            peer: "porter over tus".into(),
            theirs: Some(figures[1]),
            note: String::new(),
        });
        Ok(())
    }

    /// Uploads into a 3-node Garage cluster (`scripts/garage-cluster`): one large
    /// multipart upload with md5+sha256 through porter against rclone copying the same
    /// bytes into the same bucket, and many uploads at once with porter's peak memory.
    async fn s3(&mut self, dir: &Path, files: &Path) -> Result<(), String> {
        let size = self.plan.big;
        let scenario = format!(
            "S3 (Garage, 3 nodes): one {} multipart, md5+sha256",
            size_label(size)
        );
        let Some(cluster) = Cluster::start(dir)? else {
            self.rows.push(absent(&scenario, "garage not installed"));
            return Ok(());
        };
        let porter_dir = dir.join("porter-s3");
        std::fs::create_dir_all(&porter_dir).map_err(|e| e.to_string())?;
        let server = setup::porter_s3(&porter_dir, self.backend, files, &cluster.table)?;
        let addr = server.addr;
        let multipart = Shape::multipart("/upload-hashed", size);
        let mut ours = 0f64;
        for _ in 0..self.plan.tries {
            let start = Instant::now();
            load::success(load::once(addr, Proto::H1, &multipart, &self.pattern).await?)?;
            ours = ours.max(limits::mib_s(size, start.elapsed().as_secs_f64()));
        }
        let source = dir.join("rclone-source.bin");
        write_pattern(&source, size, &self.pattern)?;
        let theirs = match which("rclone") {
            Some(rclone) => Some(cluster.rclone(&rclone, &source, size, self.plan.tries)?),
            None => None,
        };
        self.rows.push(Row {
            scenario,
            storage: "disk".into(),
            metric: Metric::MibPerSec,
            porter: ours,
            peer: "rclone copyto".into(),
            theirs,
            note: if theirs.is_none() {
                "rclone not installed".into()
            } else {
                String::new()
            },
        });
        let (n, each) = (self.plan.many, self.plan.s3_each);
        let shape = Shape::multipart("/upload", each);
        let rss = RssSampler::start(server.pid());
        let batch = load::concurrent(addr, n, &shape, &self.pattern).await;
        let peak = rss.finish();
        let batch = batch?;
        let title = format!(
            "S3 (Garage, 3 nodes): {n} × {} multipart at once",
            size_label(each)
        );
        for (what, metric, figure) in [
            (
                "throughput",
                Metric::MibPerSec,
                limits::mib_s(n as u64 * each, batch.total.as_secs_f64()),
            ),
            ("porter's peak RSS", Metric::RssMib, peak),
        ] {
            self.rows.push(Row {
                scenario: format!("{title}: {what}"),
                storage: "disk".into(),
                metric,
                porter: figure,
                peer: "—".into(),
                theirs: None,
                note: "no peer: porter alone".into(),
            });
        }
        drop(server);
        self.s3_shared(dir, files, &cluster).await?;
        drop(cluster);
        Ok(())
    }

    /// One tus upload whose PATCHes alternate between two instances sharing Redis and
    /// the bucket, against the same upload on one instance.
    async fn s3_shared(
        &mut self,
        dir: &Path,
        files: &Path,
        cluster: &Cluster,
    ) -> Result<(), String> {
        let size = self.plan.big;
        let scenario = format!(
            "S3 + Redis: one {} tus upload (md5+sha256) in {} PATCHes, alternating 2 instances",
            size_label(size),
            size_label(SHARED_PATCH)
        );
        let Some(redis) = which("redis-server") else {
            self.rows
                .push(absent(&scenario, "redis-server not installed"));
            return Ok(());
        };
        let redis = RedisServer::start(&redis, dir)?;
        let mut servers = Vec::new();
        for i in 0..2 {
            let d = dir.join(format!("porter-shared-{i}"));
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            servers.push(setup::porter_shared(
                &d,
                self.backend,
                files,
                &cluster.table,
                &redis.url,
            )?);
        }
        let both = [servers[0].addr, servers[1].addr];
        let mut figures = [0f64; 2];
        for (i, addrs) in [&both[..], &both[..1]].into_iter().enumerate() {
            for _ in 0..self.plan.tries {
                let start = Instant::now();
                resumable_upload_on(addrs, size, &self.pattern, Resumable::Tus, SHARED_PATCH)
                    .await?;
                figures[i] = figures[i].max(limits::mib_s(size, start.elapsed().as_secs_f64()));
            }
        }
        self.rows.push(Row {
            scenario,
            storage: "disk".into(),
            metric: Metric::MibPerSec,
            porter: figures[0],
            peer: "porter, one instance".into(),
            theirs: Some(figures[1]),
            note: String::new(),
        });
        Ok(())
    }

    /// GETs passed through to the app (100-byte and 100 KiB answers) at `CONNECTIONS`
    /// keep-alive connections: porter against nginx's `proxy_pass`, with both access
    /// logs off, then both writing one to a file (porter with `fsync = false` there;
    /// it makes no difference to a GET).
    async fn passthrough(&mut self, place: &Place, dir: &Path, files: &Path) -> Result<(), String> {
        let logged_dir = dir.join("logged");
        let porter_dir = logged_dir.join("porter");
        std::fs::create_dir_all(&porter_dir).map_err(|e| e.to_string())?;
        let logged_porter = Target {
            server: setup::porter_logged(&porter_dir, self.backend, files)?,
            stored: porter_dir.join("root"),
        };
        let backend = self.backend;
        let sub = |name: &str| -> Result<PathBuf, String> {
            let d = logged_dir.join(name);
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            Ok(d)
        };
        let logged_nginx = peer(&self.peers.nginx, &sub, "nginx", "body", |bin, d| {
            setup::nginx_logged(bin, d, backend, files)
        })?;
        let runs = [
            ("logs off", &place.porter, place.nginx.as_ref()),
            (
                "access logs to files",
                &logged_porter,
                logged_nginx.as_ref(),
            ),
        ];
        let period = self.plan.period;
        for (logs, porter, nginx) in runs {
            for size in [100u64, 100 << 10] {
                let what = [(
                    format!(
                        "passthrough GETs of {} answers, {CONNECTIONS} connections ({logs})",
                        size_label(size)
                    ),
                    Metric::ReqPerSec,
                )];
                let pattern = self.pattern.clone();
                let path = format!("/p/{size}");
                self.compare(
                    &what,
                    place.label,
                    porter,
                    Peer::of("nginx", nginx),
                    async |t: &Target| sustained_gets(t, &path, size, period, &pattern).await,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// X-Accel-Redirect downloads of `files/big` and `files/small`: porter against nginx.
    async fn downloads(&mut self, place: &Place) -> Result<(), String> {
        let (big, tries, period) = (self.plan.big, self.plan.tries, self.plan.period);
        let what = [(
            format!("download one {} (X-Accel-Redirect)", size_label(big)),
            Metric::MibPerSec,
        )];
        let pattern = self.pattern.clone();
        let peer = Peer::of("nginx", place.nginx.as_ref());
        self.compare(
            &what,
            place.label,
            &place.porter,
            peer,
            async |t: &Target| {
                let mut best = 0f64;
                for _ in 0..tries {
                    let start = Instant::now();
                    let answer =
                        load::once(t.addr(), Proto::H1, &Shape::get("/f/big"), &pattern).await?;
                    if answer.bytes != big {
                        return Err(format!(
                            "{}: downloaded {} of {big} bytes",
                            t.server.name, answer.bytes
                        ));
                    }
                    best = best.max(limits::mib_s(big, start.elapsed().as_secs_f64()));
                }
                Ok(vec![best])
            },
        )
        .await?;
        let what = [(
            format!("download 10 KiB files, {CONNECTIONS} connections"),
            Metric::ReqPerSec,
        )];
        let peer = Peer::of("nginx", place.nginx.as_ref());
        self.compare(
            &what,
            place.label,
            &place.porter,
            peer,
            async |t: &Target| sustained_gets(t, "/f/small", SMALL, period, &pattern).await,
        )
        .await
    }

    /// One large raw upload through porter over h2c against HTTP/1.1.
    async fn h2(&mut self, place: &Place) -> Result<(), String> {
        let shape = Shape::raw(Method::POST, "/raw", self.plan.big);
        let mut figures = [0f64; 2];
        for (i, proto) in [Proto::H2, Proto::H1].into_iter().enumerate() {
            for _ in 0..self.plan.tries {
                let start = Instant::now();
                let mut conn = Conn::open(place.porter.addr(), proto).await?;
                load::success(
                    conn.send(&shape, &self.pattern, place.porter.addr())
                        .await?,
                )?;
                figures[i] =
                    figures[i].max(limits::mib_s(shape.size, start.elapsed().as_secs_f64()));
                place.porter.take(shape.size)?;
            }
        }
        self.rows.push(Row {
            scenario: format!("one {} raw body over HTTP/2 (h2c)", size_label(shape.size)),
            storage: place.label.to_string(),
            metric: Metric::MibPerSec,
            porter: figures[0],
            peer: "porter over HTTP/1.1".into(),
            theirs: Some(figures[1]),
            note: String::new(),
        });
        Ok(())
    }
}

/// A row for a scenario that could not run.
fn absent(scenario: &str, why: &str) -> Row {
    Row {
        scenario: scenario.to_string(),
        storage: "disk".into(),
        metric: Metric::MibPerSec,
        porter: 0.0,
        peer: "—".into(),
        theirs: None,
        note: why.to_string(),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `size` bytes of the shared pattern in a file (rclone's source).
fn write_pattern(path: &Path, size: u64, pattern: &Bytes) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut left = size;
    while left > 0 {
        let n = left.min(pattern.len() as u64) as usize;
        f.write_all(&pattern[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    Ok(())
}

/// A Garage cluster for the S3 scenario (`scripts/garage-cluster`), stopped on drop.
struct Cluster {
    /// porter's `[storage.s3]` table for it.
    table: String,
    endpoint: String,
    key: (String, String),
    pids: Vec<String>,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Option<Cluster>, String> {
        let garage = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/garage"))
            .filter(|p| p.exists())
            .or_else(|| which("garage"));
        if garage.is_none() {
            return Ok(None);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/garage-cluster");
        let out = std::process::Command::new(script)
            .arg(dir.join("garage"))
            .arg("3")
            .arg(std::process::id().to_string())
            .output()
            .map_err(|e| format!("{script}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "garage-cluster: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| -> Result<String, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .ok_or_else(|| format!("garage-cluster printed no {name}"))
        };
        let endpoints = var("GARAGE_ENDPOINTS")?;
        let key = (var("GARAGE_KEY_ID")?, var("GARAGE_SECRET")?);
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
        std::fs::write(keys.join("access"), &key.0).map_err(|e| e.to_string())?;
        std::fs::write(keys.join("secret"), &key.1).map_err(|e| e.to_string())?;
        let list: Vec<String> = endpoints.split(',').map(|e| format!("{e:?}")).collect();
        let table = format!(
            "[storage.s3]\nendpoint = [{}]\nregion = \"garage\"\nbucket = \"uploads\"\n\
             access_key_file = {:?}\nsecret_key_file = {:?}\n",
            list.join(", "),
            keys.join("access"),
            keys.join("secret"),
        );
        Ok(Some(Cluster {
            table,
            endpoint: endpoints.split(',').next().unwrap_or_default().to_string(),
            key,
            pids: var("GARAGE_PIDS")?.split(' ').map(str::to_string).collect(),
        }))
    }

    /// The best MiB/s of `tries` `rclone copyto` runs of `source` into the bucket.
    fn rclone(&self, rclone: &Path, source: &Path, size: u64, tries: usize) -> Result<f64, String> {
        let mut best = 0f64;
        for i in 0..tries {
            // A new key each time: rclone skips a copy whose target looks identical.
            let remote = format!(
                ":s3,provider=Other,endpoint='{}',access_key_id={},secret_access_key={},region=garage,force_path_style=true:uploads/rclone/big-{i}",
                self.endpoint, self.key.0, self.key.1
            );
            let start = Instant::now();
            // Debian's rclone 1.60 fails on an AWS_CA_BUNDLE in the environment.
            let out = std::process::Command::new(rclone)
                .env_remove("AWS_CA_BUNDLE")
                .arg("copyto")
                .arg(source)
                .arg(&remote)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("rclone: {}", String::from_utf8_lossy(&out.stderr)));
            }
            best = best.max(limits::mib_s(size, start.elapsed().as_secs_f64()));
        }
        Ok(best)
    }
}

/// A Redis server of the benchmark's own, on a free loopback port.
struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl RedisServer {
    fn start(bin: &Path, dir: &Path) -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = std::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(&self.pids).status();
    }
}

/// The two protocols of porter's tus route.
#[derive(Clone, Copy)]
enum Resumable {
    Tus,
    /// The IETF draft, interop version 6.
    Draft,
}

impl Resumable {
    fn create(self, size: u64) -> Shape {
        let shape =
            Shape::raw(Method::POST, "/files/", 0).header("upload-length", &size.to_string());
        match self {
            Resumable::Tus => shape.header("tus-resumable", "1.0.0"),
            Resumable::Draft => shape
                .header("upload-draft-interop-version", "6")
                .header("upload-complete", "?0"),
        }
    }

    fn append(self, path: &str, offset: u64, n: u64, last: bool) -> Shape {
        let mut shape =
            Shape::raw(Method::PATCH, path, n).header("upload-offset", &offset.to_string());
        shape
            .headers
            .retain(|(name, _)| name != hyper::header::CONTENT_TYPE);
        match self {
            Resumable::Tus => shape
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream"),
            Resumable::Draft => shape
                .header("upload-draft-interop-version", "6")
                .header("content-type", "application/partial-upload")
                .header("upload-complete", if last { "?1" } else { "?0" }),
        }
    }
}

/// A resumable upload of `size` bytes: creation, then 8 MiB appends on one connection.
async fn resumable_upload(
    addr: SocketAddr,
    size: u64,
    pattern: &Bytes,
    protocol: Resumable,
) -> Result<(), String> {
    resumable_upload_on(&[addr], size, pattern, protocol, TUS_PATCH).await
}

/// PATCH size of the scale-out scenario: the S3 part size (16 MiB), so no request
/// leaves a tail the next one must fetch (README, Scaling out).
const SHARED_PATCH: u64 = 16 << 20;

/// A resumable upload created on `addrs[0]`, its appends of `patch` bytes sent to each
/// of `addrs` in turn (one connection each): instances sharing state.
async fn resumable_upload_on(
    addrs: &[SocketAddr],
    size: u64,
    pattern: &Bytes,
    protocol: Resumable,
    patch: u64,
) -> Result<(), String> {
    let mut conns = Vec::new();
    for addr in addrs {
        conns.push((Conn::open(*addr, Proto::H1).await?, *addr));
    }
    let (conn, addr) = conns.first_mut().ok_or("no address")?;
    let created = load::success(conn.send(&protocol.create(size), pattern, *addr).await?)?;
    let location = created
        .headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location on creation")?;
    let uri: hyper::Uri = location
        .parse()
        .map_err(|e| format!("Location {location}: {e}"))?;
    let path = uri.path().to_string();
    let mut offset = 0u64;
    let mut turn = 0;
    while offset < size {
        let n = (size - offset).min(patch);
        let append = protocol.append(&path, offset, n, offset + n == size);
        let (conn, addr) = &mut conns[turn % addrs.len()];
        turn += 1;
        let answer = load::success(conn.send(&append, pattern, *addr).await?)?;
        offset += n;
        let told = answer
            .headers
            .get("upload-offset")
            .and_then(|v| v.to_str().ok());
        if told != Some(offset.to_string().as_str()) {
            return Err(format!(
                "PATCH answered Upload-Offset {told:?}, expected {offset}"
            ));
        }
    }
    Ok(())
}

/// Files for the download scenarios, on disk: `big` (the plan's size) and `small` (10 KiB).
fn download_files(dir: &Path, big: u64, pattern: &Bytes) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (name, size) in [("big", big), ("small", SMALL)] {
        let mut f = std::fs::File::create(dir.join(name)).map_err(|e| e.to_string())?;
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(load::CHUNK as u64) as usize;
            let at = (done % load::PERIOD as u64) as usize;
            f.write_all(&pattern[at..at + n])
                .map_err(|e| e.to_string())?;
            done += n as u64;
        }
    }
    Ok(())
}

/// The ceilings: loopback, each storage location's write speed, one core's hashing.
async fn ceilings(
    plan: &Plan,
    places: &[(&'static str, PathBuf)],
) -> Result<Vec<(String, f64)>, String> {
    let size = plan.big.min(1 << 30);
    let mut out = vec![(
        format!("loopback TCP, one stream of {}", size_label(size)),
        limits::loopback(size).await?,
    )];
    for (label, base) in places {
        let speed = limits::write_speed(base, size)?;
        out.push((
            format!("{label} write of {} + fsync", size_label(size)),
            speed,
        ));
    }
    let hashed = size.min(512 << 20);
    if let Some(speed) = limits::openssl_md5_speed(if plan.quick { 1 } else { 3 }) {
        out.push(("md5, one core, OpenSSL (`openssl speed`)".into(), speed));
    }
    out.push((
        format!("md5, one core, porter's own, {}", size_label(hashed)),
        limits::porter_md5_speed(hashed),
    ));
    out.push((
        format!("md5, one core, RustCrypto `md-5`, {}", size_label(hashed)),
        limits::hash_speed::<md5::Md5>(hashed),
    ));
    out.push((
        format!("sha256, one core, {}", size_label(hashed)),
        limits::hash_speed::<sha2::Sha256>(hashed),
    ));
    Ok(out)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.0} GiB RAM, Linux {}",
        mem_kib as f64 / f64::from(1 << 20),
        kernel.trim()
    )
}

async fn run(plan: Plan) -> Result<(), String> {
    let started = Instant::now();
    let (backend, _) = support::fake_backend().await;
    let disk = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut places = vec![("disk", disk.clone())];
    if Path::new("/dev/shm").is_dir() {
        places.insert(0, ("tmpfs", PathBuf::from("/dev/shm")));
    }
    let mut run = Run {
        pattern: load::shared_pattern(),
        backend,
        peers: Peers::locate(),
        rows: Vec::new(),
        plan,
    };
    let ceilings = ceilings(&run.plan, &places).await?;
    let files = tempfile::tempdir_in(&disk).map_err(|e| e.to_string())?;
    download_files(files.path(), run.plan.big, &run.pattern)?;
    for (label, base) in &places {
        let dir = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
        let place = run.start_place(label, dir.path(), files.path())?;
        eprintln!("{label}: servers up, measuring");
        if run.plan.runs("big") {
            run.one_big(&place).await?;
        }
        if run.plan.runs("concurrent") {
            run.concurrent(&place).await?;
        }
        if run.plan.runs("small") {
            run.small(&place).await?;
        }
        if run.plan.runs("tus") {
            run.tus(&place).await?;
        }
        if run.plan.runs("draft") {
            run.draft(&place).await?;
        }
        if *label == "disk" && run.plan.runs("downloads") {
            run.downloads(&place).await?;
        } else if *label != "disk" && run.plan.runs("h2") {
            run.h2(&place).await?;
        }
        if *label != "disk" && run.plan.runs("passthrough") {
            run.passthrough(&place, dir.path(), files.path()).await?;
        }
    }
    if run.plan.runs("s3") {
        let dir = tempfile::tempdir_in(&disk).map_err(|e| e.to_string())?;
        eprintln!("s3: starting a Garage cluster, measuring");
        run.s3(dir.path(), files.path()).await?;
    }
    let text = write_report(&run, &ceilings, started.elapsed())?;
    println!("{text}");
    Ok(())
}

fn write_report(run: &Run, ceilings: &[(String, f64)], took: Duration) -> Result<String, String> {
    use std::fmt::Write as _;
    let mode = if run.plan.quick { "quick" } else { "full" };
    let mut text = format!(
        "# porter against its peers ({mode} run, {:.0} s)\n\nMachine: {}. Everything on loopback, \
         each figure the median of {} run(s), porter and its peer alternating; porter {} \
         (release build).\n\nPeers: ",
        took.as_secs_f64(),
        machine(),
        run.plan.rounds,
        env!("CARGO_PKG_VERSION"),
    );
    let versions: Vec<String> = run
        .peers
        .versions()
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    text.push_str(&versions.join("; "));
    text.push_str(".\n\n## Ceilings of this machine\n\n| what | MiB/s |\n|---|---:|\n");
    for (what, v) in ceilings {
        let _ = writeln!(text, "| {what} | {v:.0} |");
    }
    text.push_str("\n## porter and each peer\n\nporter's advantage is porter's figure over the peer's \
                   (throughput, requests/s) or the peer's over porter's (latency, memory): above 1× \
                   porter is better.\n\n");
    text.push_str(&report::table(&run.rows));
    let out = &run.plan.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("results.md"), &text).map_err(|e| e.to_string())?;
    let title = format!("porter's advantage over each peer ({mode} run)");
    report::chart(&run.rows, &title, &out.join("chart.png"))?;
    let _ = write!(
        text,
        "\nWritten to {0}/results.md and {0}/chart.png.",
        out.display()
    );
    Ok(text)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Plan::from_args()).await {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
