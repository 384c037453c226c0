//! Running under systemd, without systemd: `NOTIFY_SOCKET` is a real Unix datagram
//! socket the test reads, and socket activation hands porter an inherited listening
//! socket with `LISTEN_FDS` / `LISTEN_PID` set, as systemd does.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

fn config(dir: &Path, backend: std::net::SocketAddr, listen: &str) -> std::path::PathBuf {
    Config::new()
        .backend(backend)
        .set("server.listen", vec![listen])
        .set("server.shutdown_grace", "2s")
        .write(dir)
}

/// The next notification, as its `KEY=value` lines.
fn next(sock: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Reads notifications until one has `line`; returns everything read.
fn until(sock: &UnixDatagram, line: &str) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let msg = next(sock);
        let done = msg.iter().any(|l| l == line);
        seen.push(msg);
        if done {
            return seen;
        }
    }
    panic!("no {line} in {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_reloading_watchdog_and_stopping() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), backend.addr, "127.0.0.1:0");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut cmd = Proc::command();
    cmd.args(["serve", "-c"])
        .arg(&conf)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let mut porter = Proc::spawn(cmd);
    let ready = until(&sock, "READY=1");
    assert_eq!(ready.len(), 1, "READY=1 comes first: {ready:?}");
    let port = porter.port();
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/")]).await.0, 200);
    // WATCHDOG=1 every half of WATCHDOG_USEC.
    let pings = until(&sock, "WATCHDOG=1");
    assert!(pings.len() <= 2, "{pings:?}");
    porter.signal(libc::SIGHUP);
    let reload = until(&sock, "RELOADING=1");
    let msg = reload.last().expect("message");
    assert!(
        msg.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {msg:?}"
    );
    until(&sock, "READY=1");
    porter.signal(libc::SIGTERM);
    until(&sock, "STOPPING=1");
    assert!(porter.wait_exit(20).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_activated_listener() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), backend.addr, "systemd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // Let the socket survive exec, as systemd passes it.
    // SAFETY: fcntl on a descriptor this test owns; F_SETFD only changes its flags.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    // bash moves it to fd 3 (SD_LISTEN_FDS_START) and execs porter with the same pid,
    // so LISTEN_PID=$$ names porter.
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "exec 3<&{fd}; exec {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve -c \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_porter"))
        .arg(&conf);
    let mut porter = Proc::spawn(cmd);
    assert!(
        porter.wait_for("socket-activated", 20).is_some(),
        "{:?}",
        porter.seen
    );
    drop(listener);
    let (code, _) = curl(&[&format!("http://127.0.0.1:{port}/activated")]).await;
    assert_eq!(code, 200);
    assert_eq!(backend.requests()[0].target, "/activated");
    porter.signal(libc::SIGTERM);
    assert!(porter.wait_exit(20).is_some_and(|s| s.success()));
}

#[test]
fn systemd_listen_without_activation_is_a_start_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), "127.0.0.1:9".parse().expect("addr"), "systemd");
    let out = Proc::command()
        .args(["serve", "-c"])
        .arg(&conf)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .expect("porter runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no sockets were passed"), "{err}");
}
