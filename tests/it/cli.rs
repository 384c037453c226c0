//! The `porter` binary itself: `check` and `serve` with the shipped config.

use crate::support::Proc;
use std::process::Command;

fn porter() -> Command {
    Proc::command()
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_shipped_config_and_prints_defaults() {
    let out = porter()
        .args(["check", "-c", &repo("conf/porter.toml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let printed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(printed["limits"]["buffer"].as_str(), Some("256KiB"));
    assert_eq!(
        printed["upload"][0]["field_names"].as_str(),
        Some("{field}.{attr}")
    );
}

#[test]
fn check_accepts_the_examples() {
    let dir = repo("conf/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = porter()
            .args(["check", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn check_lists_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[server]
listen = ["nope"]
colour = "blue"
idle_timeout = "5 weeks"
workers = 2000
[storage]
min_free = "12XB"
[[upload]]
path = "/up"
kind = "multipart"
hashes = ["md4"]
[[upload]]
path = "/up/"
kind = "multipart"
[[internal]]
prefix = "/up"
root = "x"
"#,
    )
    .unwrap();
    let out = porter()
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let f = file.display().to_string();
    for needle in [
        format!("{f}: server.colour: unknown key"),
        format!("{f}: server.listen: \"nope\""),
        format!("{f}: server.idle_timeout:"),
        format!("{f}: server.workers: must be at most 1024"),
        format!("{f}: storage.min_free:"),
        format!("{f}: upload[0].hashes: unknown hash \"md4\""),
        format!("{f}: upload[1].path: \"/up\" is already used"),
        format!("{f}: backend.url: is required"),
        format!("{f}: upload[0].path: \"/up\" lies under the [[internal]] prefix"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn check_reports_syntax_errors_and_missing_files() {
    let out = porter()
        .args(["check", "-c", "/nonexistent/porter.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[server\n").unwrap();
    let out = porter()
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_runs_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    let conf = dir.path().join("conf/porter.toml");
    let shipped = std::fs::read_to_string(repo("conf/porter.toml")).unwrap();
    std::fs::write(&conf, shipped.replace("127.0.0.1:8080", "127.0.0.1:0")).unwrap();
    let mut porter = Proc::serve(&conf);
    let port = porter.port();
    // The shipped config's app is absent: porter answers 502 for it.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    assert!(
        dir.path().join("var/secret").exists(),
        "the secret file was created"
    );
    assert!(dir.path().join("var/uploads").is_dir());
    porter.signal(libc::SIGTERM);
    let status = porter.wait_exit(10).expect("porter exited after SIGTERM");
    assert!(status.success());
}
