//! The shipped systemd units: `systemd-analyze verify` accepts them, and the service's
//! hardening keeps its `systemd-analyze security` exposure score. These tests need
//! `systemd-analyze` (Debian package `systemd`); they fail rather than skip without it.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the shipped service runs; the tests point it at the binary under test.
const EXEC_START: &str = "ExecStart=/usr/local/bin/porter serve -c /etc/porter/porter.toml";

/// `systemd-analyze security --offline=yes` on the shipped unit when it was written
/// (systemd 252). The slack absorbs scoring changes between systemd versions; losing a
/// few hardening settings goes past it.
const MEASURED_EXPOSURE: f64 = 1.6;
const EXPOSURE_SLACK: f64 = 0.5;

fn unit(name: &str) -> String {
    let path = format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The unit's lines, trimmed, without comments.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The value of the last `key=` line (later assignments win in systemd).
fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    directives(text)
        .into_iter()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// Runs `systemd-analyze ARGS` in `dir` for at most a minute; returns the exit status
/// success and everything it printed (stdout, then stderr).
fn analyze(args: &[&str], dir: &Path) -> (bool, String) {
    let out_path = dir.join("analyze.stdout");
    let err_path = dir.join("analyze.stderr");
    let stdout = File::create(&out_path).expect("create stdout file");
    let stderr = File::create(&err_path).expect("create stderr file");
    let mut child = match Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: these tests need it \
             (apt-get install systemd); they do not skip"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for systemd-analyze") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("systemd-analyze {args:?} took over 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = format!(
        "{}{}",
        std::fs::read_to_string(&out_path).expect("read stdout"),
        std::fs::read_to_string(&err_path).expect("read stderr")
    );
    (status.success(), said)
}

/// Both units in a temp dir, `ExecStart` pointing at the binary under test (verify
/// insists that it exists and is executable; `ExecReload`'s /bin/kill is kept).
fn units_dir() -> tempfile::TempDir {
    let bin = env!("CARGO_BIN_EXE_porter");
    assert!(
        !bin.contains(char::is_whitespace),
        "the test binary path {bin:?} cannot go unquoted into ExecStart="
    );
    let shipped = unit("porter.service");
    assert!(
        directives(&shipped).contains(&EXEC_START),
        "porter.service no longer has `{EXEC_START}`: update this test"
    );
    let service = shipped.replace("/usr/local/bin/porter", bin);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("porter.service"), service).expect("write porter.service");
    std::fs::write(dir.path().join("porter.socket"), unit("porter.socket"))
        .expect("write porter.socket");
    dir
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = units_dir();
    // Both files at once: the socket's Service= must resolve to our service.
    let (ok, said) = analyze(&["verify", "porter.service", "porter.socket"], dir.path());
    assert!(ok, "systemd-analyze verify failed:\n{said}");
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("porter")).collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify complained about our units: {ours:#?}\nfull output:\n{said}"
    );
}

#[test]
fn service_hardening_keeps_its_exposure_score() {
    let dir = units_dir();
    let (ok, said) = analyze(
        &["security", "--offline=yes", "--no-pager", "porter.service"],
        dir.path(),
    );
    assert!(ok, "systemd-analyze security failed:\n{said}");
    let score: f64 = said
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for porter.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{said}"));
    let limit = MEASURED_EXPOSURE + EXPOSURE_SLACK;
    assert!(
        score <= limit,
        "exposure {score} > {limit} (was {MEASURED_EXPOSURE}): hardening was lost\n{said}"
    );
}

#[test]
fn service_is_notify_reloads_by_sighup_and_socket_names_it() {
    let service = unit("porter.service");
    let lines = directives(&service);
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        EXEC_START,
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "User=porter",
        "Group=porter",
        "StateDirectory=porter",
        "ConfigurationDirectory=porter",
        "ReadWritePaths=/var/lib/porter",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ] {
        assert!(lines.contains(&want), "porter.service lacks `{want}`");
    }
    // SIGTERM drains for up to server.shutdown_grace (default 30s): systemd must wait
    // longer than that before it sends SIGKILL.
    let stop = value(&service, "TimeoutStopSec").expect("porter.service sets TimeoutStopSec");
    let secs: u64 = stop
        .strip_suffix('s')
        .unwrap_or(stop)
        .parse()
        .unwrap_or_else(|e| panic!("TimeoutStopSec={stop}: want whole seconds ({e})"));
    assert!(
        secs > 30,
        "TimeoutStopSec={stop} is not above shutdown_grace (30s)"
    );
    // porter sets the setgid bit on its storage directories (storage.dir_mode "2770"),
    // which RestrictSUIDSGID= turns into EPERM: porter would not start.
    assert_ne!(
        value(&service, "RestrictSUIDSGID"),
        Some("yes"),
        "RestrictSUIDSGID=yes breaks the default storage.dir_mode"
    );
    // A user namespace would take CAP_NET_BIND_SERVICE away from the host network.
    assert_ne!(value(&service, "PrivateUsers"), Some("yes"));

    let socket = unit("porter.socket");
    let lines = directives(&socket);
    assert!(
        lines.contains(&"Service=porter.service"),
        "porter.socket must name porter.service"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ListenStream=")),
        "porter.socket listens nowhere"
    );
}
