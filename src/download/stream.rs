//! File bytes to the client: large blocks read off the async workers with `pread`,
//! handed over a small bounded channel (backpressure from the socket to the disk), and
//! paced by an optional rate limit (`X-Accel-Limit-Rate`).

use crate::http::{Body, BoxError};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One piece of a response body.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Literal bytes (the part headers of `multipart/byteranges`).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File { offset: u64, len: u64 },
}

/// Streams `pieces` of `file`; `rate` is bytes per second (`None`: unlimited).
pub fn body(file: File, pieces: Vec<Piece>, block: usize, rate: Option<u64>) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    let file = Arc::new(file);
    tokio::spawn(async move {
        let start = Instant::now();
        let mut sent: u64 = 0;
        for piece in pieces {
            let (mut offset, mut left) = match piece {
                Piece::Bytes(b) => {
                    sent += b.len() as u64;
                    if tx.send(Ok(Frame::data(b))).await.is_err() {
                        return;
                    }
                    continue;
                }
                Piece::File { offset, len } => (offset, len),
            };
            while left > 0 {
                let n = left.min(block as u64) as usize;
                let f = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, offset).map(|_| Bytes::from(buf))
                })
                .await;
                let chunk = match read {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                offset += n as u64;
                left -= n as u64;
                sent += n as u64;
                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    return;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
            }
        }
    });
    StreamBody::new(crate::http::body::ReceiverStream(rx)).boxed()
}

/// The body of `pieces` of a file already in memory.
pub fn from_memory(data: &Bytes, pieces: &[Piece]) -> Body {
    let mut out = bytes::BytesMut::new();
    for p in pieces {
        match p {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::File { offset, len } => {
                let (a, n) = (*offset as usize, *len as usize);
                out.extend_from_slice(&data[a.min(data.len())..(a + n).min(data.len())]);
            }
        }
    }
    crate::http::full(out.freeze())
}
