//! Real third-party clients (`tests/peers/`): tuspy (Python) and tus-js-client (Node).
//! `scripts/test-deps` installs them and prints the environment these read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with scripts/test, which installs the peers")
    })
}

/// The Python with tuspy, Django and gunicorn.
pub fn python() -> String {
    env("PORTER_TEST_PYTHON")
}

/// The `node_modules` with tus-js-client and playwright-core.
pub fn node_path() -> String {
    env("PORTER_TEST_NODE_PATH")
}

/// A script under `tests/peers/`.
pub fn script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `len` bytes of test data written to `dir/big.bin`.
pub fn sample(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let content = super::data(len, 42);
    let path = dir.join("big.bin");
    std::fs::write(&path, &content).expect("write the sample");
    (path, content)
}

/// tuspy uploads `file` to `endpoint` in `chunk`-byte PATCHes; `mode` is `full`,
/// `partial:N`, `resume:URL` or `alternate:ENDPOINT` (see the script). The upload URL.
pub async fn tuspy(endpoint: &str, file: &Path, chunk: usize, mode: &str) -> String {
    run(Command::new(python())
        .arg(script("tus_upload.py"))
        .arg(endpoint)
        .arg(file)
        .args([&chunk.to_string(), mode]))
    .await
}

/// tus-js-client uploads `file` to `endpoint` (resuming `url` when given), with `env`.
pub async fn tus_js(
    endpoint: &str,
    file: &Path,
    chunk: usize,
    url: Option<&str>,
    env: &[(&str, &str)],
) -> String {
    let mut cmd = Command::new("node");
    cmd.envs(env.iter().copied())
        .env("NODE_PATH", node_path())
        .arg(script("tus_upload.js"))
        .arg(endpoint)
        .arg(file)
        .arg(chunk.to_string());
    if let Some(u) = url {
        cmd.arg(u);
    }
    run(&mut cmd).await
}

/// Runs a client (at most 2 minutes), which must succeed; the last line it printed.
async fn run(cmd: &mut Command) -> String {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("client finished in time")
        .expect("client runs");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}
