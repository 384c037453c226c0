//! File bytes to the client: large blocks read off the async workers with `pread`
//! when the connection asks for them (no read-ahead: a client that stops reading holds
//! nothing), paced by an optional rate limit (`X-Accel-Limit-Rate`). S3 objects stream
//! through a small bounded channel.

use crate::http::{Body, BoxError, Frames};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
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
///
/// Pulled, not pushed: a block is read only when the connection asks for the next
/// frame, so a client that stops reading (an HTTP/2 stream whose window stays shut)
/// holds no file bytes in porter at all, however many such streams it opens.
pub fn body(file: File, pieces: Vec<Piece>, block: usize, rate: Option<u64>) -> Body {
    FileBody {
        file: Arc::new(file),
        pieces: pieces.into(),
        block: block.max(1),
        reading: None,
        pace: Pace::new(rate),
    }
    .boxed()
}

/// The rate limit of a pulled body: how many bytes went out since when.
struct Pace {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            sent: 0,
            wait: None,
        }
    }

    /// Ready once the rate allows the next frame.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(rate) = self.rate else {
            return Poll::Ready(());
        };
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
        if Instant::now() >= due {
            self.wait = None;
            return Poll::Ready(());
        }
        let sleep = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        sleep.as_mut().reset(due);
        ready!(sleep.as_mut().poll(cx));
        self.wait = None;
        Poll::Ready(())
    }
}

type Read = tokio::task::JoinHandle<std::io::Result<Bytes>>;

/// The whole file of `len` bytes, if every byte of it is in memory now: read with
/// `RWF_NOWAIT`, which fails (`EAGAIN`) instead of waiting on the device, or plainly
/// from a filesystem that lives in memory (tmpfs, which does not take the flag). `None`
/// on any failure or short read: the caller reads it on the blocking pool instead.
pub fn cached(file: &File, len: u64) -> Option<Bytes> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).ok()?;
    if len == 0 {
        return Some(Bytes::new());
    }
    let mut buf = vec![0u8; len];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of `len` bytes and
    // outlives the call; the kernel writes at most `iov_len` bytes there. The
    // descriptor belongs to `file`, which is borrowed (so open) for the whole call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    let unsupported =
        n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP);
    if unsupported && in_memory(file) {
        let n = file.read_at(&mut buf, 0).ok()?;
        return (n == len).then(|| Bytes::from(buf));
    }
    (usize::try_from(n).ok()? == len).then(|| Bytes::from(buf))
}

/// Whether `file` lives on tmpfs or ramfs, whose reads never wait on a device.
fn in_memory(file: &File) -> bool {
    crate::filesystem::of_file(file) == crate::filesystem::Kind::Memory
}

struct FileBody {
    file: Arc<File>,
    pieces: std::collections::VecDeque<Piece>,
    block: usize,
    /// The one block being read, if any.
    reading: Option<Read>,
    pace: Pace,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames {
        let this = &mut *self;
        if this.reading.is_none() {
            ready!(this.pace.poll_ready(cx));
            match this.pieces.pop_front() {
                None => return Poll::Ready(None),
                Some(Piece::Bytes(b)) => {
                    this.pace.sent += b.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Piece::File { offset, len }) => {
                    let n = len.min(this.block as u64);
                    if len > n {
                        this.pieces.push_front(Piece::File {
                            offset: offset + n,
                            len: len - n,
                        });
                    }
                    let f = this.file.clone();
                    this.reading = Some(crate::workers::spawn_blocking(move || {
                        let mut buf = vec![0u8; n as usize];
                        f.read_exact_at(&mut buf, offset).map(|_| Bytes::from(buf))
                    }));
                }
            }
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        match read {
            Ok(Ok(chunk)) => {
                this.pace.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Ok(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_none() && self.pieces.is_empty()
    }
}

/// Streams `pieces` of an S3 object, one ranged GET per piece, paced by `rate`.
pub fn object(
    objects: Arc<dyn crate::store::Objects>,
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
            let mut body = match objects.read(&key, (offset, offset + len - 1)).await {
                Ok(b) => b,
                Err(e) => return out.fail(e).await,
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
    StreamBody::new(crate::http::receiver::ReceiverStream(rx)).boxed()
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

#[cfg(test)]
mod tests {
    use super::cached;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// `cached` gives the whole file or nothing: never a short or stale read, whether
    /// the pages are cached or were just dropped (then it may refuse, never guess).
    #[test]
    fn cached_reads_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let f = std::fs::File::open(&path).unwrap();
        if let Some(b) = cached(&f, data.len() as u64) {
            assert_eq!(&b[..], &data[..]);
        }
        // Asking for more than the file holds is a short read: refused.
        assert!(cached(&f, data.len() as u64 + 1).is_none());
        assert_eq!(cached(&f, 0).as_deref(), Some(&[][..]));
        f.sync_all().unwrap();
        // SAFETY: a plain advisory call on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if let Some(b) = cached(&f, data.len() as u64) {
            assert_eq!(&b[..], &data[..]);
        }
    }

    /// A file on tmpfs is always in memory: read in place, whole.
    #[test]
    fn tmpfs_files_are_read_in_place() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no /dev/shm here: nothing to check
        };
        let path = dir.path().join("f");
        let data = vec![7u8; 10_240];
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert!(super::in_memory(&f));
        assert_eq!(cached(&f, data.len() as u64).as_deref(), Some(&data[..]));
    }
}
