//! porter as its own process (the real binary): killed, signalled, restarted, and
//! its `gc` and `check` commands.

use super::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The real `porter` binary, with its stderr lines collected.
pub struct Proc {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn command() -> std::process::Command {
        std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
    }

    /// Starts `porter serve -c config`.
    pub fn serve(config: &Path) -> Proc {
        let mut cmd = Proc::command();
        cmd.args(["serve", "-c"]).arg(config);
        Proc::spawn(cmd)
    }

    /// Starts `cmd` with stderr captured.
    pub fn spawn(mut cmd: std::process::Command) -> Proc {
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("porter starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        // PORTER_TEST_LOG_DIR: each child's stderr is kept there too, as porter-<pid>.log.
        let mut keep = std::env::var_os("PORTER_TEST_LOG_DIR").and_then(|d| {
            std::fs::File::create(Path::new(&d).join(format!("porter-{}.log", child.id()))).ok()
        });
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(f) = keep.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `secs`) for a stderr line containing `needle`, and returns it.
    pub fn wait_for(&mut self, needle: &str, secs: u64) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
        }
        None
    }

    /// The port of the first `listening` line.
    pub fn port(&mut self) -> u16 {
        let line = self.wait_for("listening", 20).unwrap_or_else(|| {
            panic!("porter did not start listening: {:?}", self.seen);
        });
        line.split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which is still ours until waited for.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// A memory figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<porter>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Open descriptors, sockets included.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// Open descriptors that are not sockets (files, pipes).
    pub fn file_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| !t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
    }

    /// Its TCP connections to `peer` (kept-alive app connections, say), read from
    /// the socket inodes of its descriptors and the kernel's table of IPv4 sockets.
    pub fn connections_to(&self, peer: std::net::SocketAddr) -> usize {
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or_else(
                |_| Default::default(),
                |d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| std::fs::read_link(e.path()).ok())
                        .filter_map(|t| {
                            let t = t.to_string_lossy();
                            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                        })
                        .collect()
                },
            );
        let std::net::SocketAddr::V4(v4) = peer else {
            return 0;
        };
        // /proc/net/tcp writes an address as the little-endian hex of its u32, then :port.
        let want = format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        );
        let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", self.child.id()))
            .unwrap_or_default();
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 9 && f[2] == want && inodes.contains(f[9]))
            .count()
    }

    /// The names of its threads.
    pub fn threads(&self) -> Vec<String> {
        let dir = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(dir).map_or_else(
            |_| Vec::new(),
            |d| {
                d.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|n| n.trim().to_string())
                    .collect()
            },
        )
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        for _ in 0..secs * 10 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Proc {
    /// Kills the child if the test fails first, so it cannot hold cargo's output pipe.
    fn drop(&mut self) {
        self.kill9();
    }
}

/// porter (the binary) serving a config written into a directory of its own.
pub struct Served {
    pub proc: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Served {
    /// Starts porter in front of `backend` on `config` (storage in its directory).
    pub fn start(backend: SocketAddr, config: impl Into<Config>) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.into().backend(backend).write(dir.path());
        let mut proc = Proc::serve(&config);
        let port = proc.port();
        Served {
            proc,
            port,
            dir,
            config,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Kills porter with SIGKILL and starts it again on the same config.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Proc::serve(&self.config);
        self.port = self.proc.port();
    }
}

/// Runs one `porter gc -c config` pass, which must succeed; returns what it printed.
pub fn porter_gc(config: &Path) -> String {
    let out = Proc::command()
        .args(["gc", "-c"])
        .arg(config)
        .output()
        .expect("porter gc runs");
    assert!(
        out.status.success(),
        "porter gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `porter check` said: its exit code and what it printed on each stream.
pub struct Checked {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Checked {
    /// The exit code and all it printed (stdout, then stderr).
    pub fn all(self) -> (Option<i32>, String) {
        (self.code, self.stdout + &self.stderr)
    }
}

/// Runs `porter check -c config` (`--online` when `online`).
pub fn porter_check(config: &Path, online: bool) -> Checked {
    let mut cmd = Proc::command();
    cmd.args(["check", "-c"]).arg(config);
    if online {
        cmd.arg("--online");
    }
    let out = cmd.output().expect("porter check runs");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
