//! The IETF resumable-upload draft's client side (interop version 6), written once.

use super::client::{Call, Reply, request as plain};

/// A `method` request with `Upload-Draft-Interop-Version: 6`.
pub fn request(method: &str, url: &str) -> Call {
    plain(method, url).header("upload-draft-interop-version", "6")
}

/// A creation at `url` with `headers` and `body`.
pub async fn create(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request("POST", url)
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await
}

/// An append of `data` at `offset`, the last one when `complete`.
pub async fn append(
    url: &str,
    offset: u64,
    complete: bool,
    data: &[u8],
    extra: &[(&str, &str)],
) -> Reply {
    request("PATCH", url)
        .header("content-type", "application/partial-upload")
        .header("upload-offset", offset)
        .header("upload-complete", if complete { "?1" } else { "?0" })
        .headers(extra)
        .body(data.to_vec())
        .send()
        .await
}

pub async fn head(url: &str) -> Reply {
    request("HEAD", url).send().await
}

/// The head of a completing append of `len` bytes from offset 0, for a raw socket.
pub fn append_head(path: &str, len: usize) -> String {
    super::wire::head(
        "PATCH",
        path,
        &[
            "Upload-Draft-Interop-Version: 6",
            "Content-Type: application/partial-upload",
            "Upload-Offset: 0",
            "Upload-Complete: ?1",
        ],
        len,
    )
}
