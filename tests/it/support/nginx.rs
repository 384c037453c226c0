//! The nginx-upload-module resumable protocol's client side, written once.

use super::client::{Call, request};

/// The segment `data` of a `total`-byte file at `start`, in session `session`.
pub fn segment(url: &str, session: &str, data: &[u8], start: usize, total: usize) -> Call {
    request("POST", url)
        .header(
            "x-content-range",
            format!("bytes {start}-{}/{total}", start + data.len() - 1),
        )
        .header("x-session-id", session)
        .body(data.to_vec())
}
