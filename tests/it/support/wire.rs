//! Raw HTTP/1.1 on a socket, for what a client library will not send: heads written by
//! hand, bodies cut or stalled, answers read as text.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A new connection to `addr` on which `bytes` were written.
pub async fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    s
}

/// Writes `bytes` on a new connection and reads until porter closes it (at most 10 s);
/// what came back by then.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the peer closes (at most 10 s); `None` if it did not in time.
pub async fn read_to_close(s: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut buf = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    done.is_ok().then_some(text)
}

/// One read of what porter answered (at most 10 s), as text.
pub async fn answer(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads from `s` until `needle` has been seen (bounded), returning what was read.
pub async fn read_until(s: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&got)))
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The status code of an answer's text.
pub fn status(text: &str) -> &str {
    text.get(9..12).unwrap_or("")
}

/// The head of a request of `len` body bytes, with `headers` (each `Name: value`).
pub fn head(method: &str, path: &str, headers: &[&str], len: usize) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for line in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h + &format!("Content-Length: {len}\r\n\r\n")
}
