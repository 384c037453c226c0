//! The shipped systemd units: `systemd-analyze verify` accepts them, and the service's
//! hardening keeps its `systemd-analyze security` exposure score.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit(name: &str) -> String {
    let path = format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn analyze(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze runs (CI installs the systemd package)")
}

/// Both units in a temp dir, `ExecStart` pointing at the binary under test (verify
/// insists that it exists).
fn units_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let service =
        unit("porter.service").replace("/usr/local/bin/porter", env!("CARGO_BIN_EXE_porter"));
    std::fs::write(dir.path().join("porter.service"), service).expect("write");
    std::fs::write(dir.path().join("porter.socket"), unit("porter.socket")).expect("write");
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let (_keep, dir) = units_dir();
    let out = analyze(&["verify", "porter.service", "porter.socket"], &dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("porter")).collect();
    assert!(ours.is_empty(), "verify complained: {ours:?}");
}

#[test]
fn service_hardening_keeps_its_exposure_score() {
    let (_keep, dir) = units_dir();
    let out = analyze(&["security", "--offline=yes", "porter.service"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for porter.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    // 1.4 when written; a little slack for scoring changes between systemd versions.
    assert!(score <= 1.9, "exposure {score} (was 1.4):\n{text}");
}

#[test]
fn service_is_notify_reloads_by_sighup_and_socket_names_it() {
    let service = unit("porter.service");
    let lines: Vec<&str> = service.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=porter",
        "StateDirectory=porter",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
    ] {
        assert!(lines.contains(&want), "porter.service lacks {want}");
    }
    let socket = unit("porter.socket");
    assert!(socket.lines().any(|l| l.trim() == "Service=porter.service"));
    assert!(socket.lines().any(|l| l.starts_with("ListenStream=")));
}
