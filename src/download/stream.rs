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

/// Sends body frames, keeping to `rate` bytes per second (`None`: unlimited).
struct Paced {
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    start: Instant,
    sent: u64,
    rate: Option<u64>,
}

impl Paced {
    fn new(tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>, rate: Option<u64>) -> Paced {
        Paced {
            tx,
            start: Instant::now(),
            sent: 0,
            rate,
        }
    }

    /// Sends `data`, then waits until the rate allows more; `false` once the client
    /// is gone.
    async fn send(&mut self, data: Bytes) -> bool {
        self.sent += data.len() as u64;
        if self.tx.send(Ok(Frame::data(data))).await.is_err() {
            return false;
        }
        if let Some(rate) = self.rate {
            let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        true
    }

    async fn fail(&self, e: BoxError) {
        let _ = self.tx.send(Err(e)).await;
    }
}

/// Streams `pieces` of `file`; `rate` is bytes per second (`None`: unlimited).
pub fn body(file: File, pieces: Vec<Piece>, block: usize, rate: Option<u64>) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    let file = Arc::new(file);
    tokio::spawn(async move {
        let mut out = Paced::new(tx, rate);
        for piece in pieces {
            let (mut offset, mut left) = match piece {
                Piece::Bytes(b) => {
                    if !out.send(b).await {
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
                    Ok(Err(e)) => return out.fail(e.into()).await,
                    Err(e) => return out.fail(e.into()).await,
                };
                offset += n as u64;
                left -= n as u64;
                if !out.send(chunk).await {
                    return;
                }
            }
        }
    });
    StreamBody::new(crate::http::body::ReceiverStream(rx)).boxed()
}

/// Streams `pieces` of an S3 object, one ranged GET per piece, paced by `rate`.
pub fn object(
    s3: Arc<crate::store::s3::client::S3>,
    key: String,
    pieces: Vec<Piece>,
    rate: Option<u64>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let mut out = Paced::new(tx, rate);
        for piece in pieces {
            let (offset, len) = match piece {
                Piece::Bytes(b) => {
                    if !out.send(b).await {
                        return;
                    }
                    continue;
                }
                Piece::File { offset, len } => (offset, len),
            };
            let mut body = match s3.get(&key, Some((offset, offset + len - 1))).await {
                Ok(b) => b,
                Err(e) => return out.fail(Box::new(e)).await,
            };
            while let Some(frame) = body.frame().await {
                match frame.map(Frame::into_data) {
                    Ok(Ok(data)) => {
                        if !out.send(data).await {
                            return;
                        }
                    }
                    Ok(Err(_)) => {}
                    Err(e) => return out.fail(e).await,
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
