//! The machine's own ceilings, measured in the same run, so each figure can be read
//! against what loopback, the storage and one core can do at all.

use crate::support::load::{CHUNK, PERIOD, shared_pattern};
use md5::Digest;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// MiB/s for `bytes` in `secs`.
pub fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / f64::from(1 << 20)
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One TCP stream over loopback, `size` bytes from one task to another.
pub async fn loopback(size: u64) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf).await? {
                0 => return Ok::<_, std::io::Error>(got),
                n => got += n as u64,
            }
        }
    });
    let pattern = shared_pattern();
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    while sent < size {
        let n = (size - sent).min(CHUNK as u64) as usize;
        let at = (sent % PERIOD as u64) as usize;
        s.write_all(&pattern[at..at + n])
            .await
            .map_err(|e| e.to_string())?;
        sent += n as u64;
    }
    s.shutdown().await.map_err(|e| e.to_string())?;
    let got = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if got != size {
        return Err(format!("loopback: read {got} of {size} bytes"));
    }
    Ok(mib_s(size, start.elapsed().as_secs_f64()))
}

/// Writes `size` bytes to a new file in `dir` in `CHUNK` writes, then fsyncs it (as
/// porter does by default); MiB/s. The file is removed.
pub fn write_speed(dir: &Path, size: u64) -> Result<f64, String> {
    let pattern = shared_pattern();
    let file = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut out = file.as_file();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(CHUNK as u64) as usize;
        let at = (done % PERIOD as u64) as usize;
        out.write_all(&pattern[at..at + n])
            .map_err(|e| e.to_string())?;
        done += n as u64;
    }
    out.sync_all().map_err(|e| e.to_string())?;
    Ok(mib_s(size, start.elapsed().as_secs_f64()))
}

/// One core hashing `size` bytes with `D`, in `CHUNK` updates; MiB/s.
pub fn hash_speed<D: Digest>(size: u64) -> f64 {
    let mut hasher = D::new();
    let speed = update_speed(size, |b| hasher.update(b));
    std::hint::black_box(hasher.finalize());
    speed
}

/// One core hashing `size` bytes with porter's own md5 (the one uploads use); MiB/s.
pub fn porter_md5_speed(size: u64) -> f64 {
    let mut hasher = porter::sink::hashes::md5::Md5::new();
    let speed = update_speed(size, |b| hasher.update(b));
    std::hint::black_box(hasher.finalize());
    speed
}

fn update_speed(size: u64, mut update: impl FnMut(&[u8])) -> f64 {
    let pattern = shared_pattern();
    let start = Instant::now();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(CHUNK as u64) as usize;
        let at = (done % PERIOD as u64) as usize;
        update(&pattern[at..at + n]);
        done += n as u64;
    }
    mib_s(size, start.elapsed().as_secs_f64())
}

/// OpenSSL's md5 on one core (`openssl speed`, 1 MiB blocks, for `secs` seconds), the
/// yardstick the hashing target is stated against; MiB/s, or `None` without `openssl`.
pub fn openssl_md5_speed(secs: u32) -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-bytes",
            "1048576",
            "-seconds",
            &secs.to_string(),
            "md5",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    // The last line reads "md5   590697.81k": thousands of bytes per second.
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.starts_with("md5"))?;
    let k: f64 = last
        .split_whitespace()
        .nth(1)?
        .strip_suffix('k')?
        .parse()
        .ok()?;
    Some(k * 1000.0 / (1 << 20) as f64)
}
