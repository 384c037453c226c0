//! 1xx informational responses on HTTP/1.1, which hyper 1.x's server cannot send.
//!
//! The IETF resumable-upload draft has the server send `104 Upload Resumption
//! Supported` (with the upload's `Location`) before it reads a creation request's body,
//! so a client that sends the whole file in that request can resume it after a cut.
//! hyper writes `100 Continue` itself but offers no way to send any other 1xx, and its
//! HTTP/2 server hides the `h2` stream handle that could.
//!
//! So on HTTP/1.1 porter writes the interim head itself, beneath hyper: a handler queues
//! the bytes on the request's `Informational` handle, and the connection's socket wrapper
//! (`listen::conn::TrackedIo`) writes them out between hyper's own writes. On HTTP/1.1
//! that is safe exactly when hyper has no response bytes of its own buffered: hyper
//! answers requests in order and a request's final head is only produced once its
//! handler returns, so the wrapper sends the queued head as soon as hyper's buffer is
//! known empty (hyper only flushes the socket once it has written all it holds) and
//! drops it, rather than interleave it, in the one case where it is not (a pipelining
//! client that has not read the previous response). No client may depend on a 1xx.

use atomic_waker::AtomicWaker;
use http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// A request's way to send an informational response before its final one. Present in
/// the request's extensions only on HTTP/1.1 connections.
#[derive(Clone, Default)]
pub struct Informational(Arc<Shared>);

/// Shared between the handle and the connection's socket wrapper.
#[derive(Default)]
pub struct Shared {
    /// Set while `bytes` holds a head not yet written in full.
    pending: AtomicBool,
    bytes: Mutex<Queued>,
    /// The connection task, woken to write a newly queued head.
    task: AtomicWaker,
}

#[derive(Default)]
struct Queued {
    head: Vec<u8>,
    written: usize,
}

impl Informational {
    pub fn new() -> Informational {
        Informational::default()
    }

    /// Queues `status` with `headers` for the connection to write; `false` if the status
    /// is not informational (101 and 100 are hyper's).
    pub fn send(&self, status: StatusCode, reason: &str, headers: &HeaderMap) -> bool {
        let code = status.as_u16();
        if !(102..200).contains(&code) {
            return false;
        }
        let mut head = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        if let Ok(mut q) = self.0.bytes.lock() {
            q.head.extend_from_slice(&head);
            self.0.pending.store(true, Ordering::Release);
        }
        self.0.task.wake();
        true
    }

    /// The connection side of this handle.
    pub fn shared(&self) -> Arc<Shared> {
        self.0.clone()
    }
}

impl Shared {
    /// Remembers the connection task, so a queued head wakes it.
    pub fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Writes what is queued through `write` (which returns `None` when the socket
    /// would block): `None` while some is left, else the outcome.
    pub fn write_with(
        &self,
        mut write: impl FnMut(&[u8]) -> Option<std::io::Result<usize>>,
    ) -> Option<std::io::Result<()>> {
        let Ok(mut q) = self.bytes.lock() else {
            return Some(Ok(()));
        };
        while q.written < q.head.len() {
            let at = q.written;
            match write(&q.head[at..])? {
                Ok(0) => return Some(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => q.written += n,
                Err(e) => return Some(Err(e)),
            }
        }
        q.head.clear();
        q.written = 0;
        self.pending.store(false, Ordering::Release);
        Some(Ok(()))
    }

    /// Drops what is queued (it could no longer go out in order). A head already
    /// partly written is never dropped: `write_with` must finish it.
    pub fn discard(&self) -> bool {
        let Ok(mut q) = self.bytes.lock() else {
            return false;
        };
        if q.written > 0 {
            return false;
        }
        q.head.clear();
        self.pending.store(false, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_head_and_refuses_final_statuses() {
        let i = Informational::new();
        let mut h = HeaderMap::new();
        h.insert("location", "http://x/files/1".parse().unwrap());
        assert!(!i.send(StatusCode::OK, "OK", &h));
        assert!(!i.send(StatusCode::CONTINUE, "Continue", &h));
        assert!(i.send(
            StatusCode::from_u16(104).unwrap(),
            "Upload Resumption Supported",
            &h
        ));
        let s = i.shared();
        assert!(s.pending());
        let mut out = Vec::new();
        // A socket that takes five bytes at a time, then would block once.
        let mut calls = 0;
        let r = s.write_with(|b| {
            calls += 1;
            if calls == 3 {
                return None;
            }
            out.extend_from_slice(&b[..b.len().min(5)]);
            Some(Ok(b.len().min(5)))
        });
        assert!(r.is_none());
        assert!(!s.discard(), "a partly written head must be finished");
        let r = s.write_with(|b| {
            out.extend_from_slice(b);
            Some(Ok(b.len()))
        });
        assert!(matches!(r, Some(Ok(()))));
        assert!(!s.pending());
        assert_eq!(
            out,
            b"HTTP/1.1 104 Upload Resumption Supported\r\nlocation: http://x/files/1\r\n\r\n"
        );
    }
}
