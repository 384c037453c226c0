//! The tus 1.0 client side, written once: creation, PATCH, HEAD, DELETE, and the
//! head of a PATCH for raw sockets.

use super::client::{Call, Reply, request as plain};
use super::config::Upload;

/// The tus route most tests use: `/files`, notifying `/uploads/done`, md5 and sha256.
pub fn route() -> Upload {
    Upload::tus("/files", "/uploads/done")
        .hashes(&["md5", "sha256"])
        .max_file_size("64MiB")
}

/// A `method` request with `Tus-Resumable: 1.0.0`.
pub fn request(method: &str, url: &str) -> Call {
    plain(method, url).header("tus-resumable", "1.0.0")
}

/// A creation of an upload of `len` bytes at `url`.
pub fn creation(url: &str, len: impl Into<http::HeaderValue>) -> Call {
    request("POST", url).header("upload-length", len.into())
}

/// A PATCH at `offset` (its body still to be set).
pub fn append(url: &str, offset: impl Into<http::HeaderValue>) -> Call {
    request("PATCH", url)
        .header("upload-offset", offset.into())
        .header("content-type", "application/offset+octet-stream")
}

/// Creates an upload of `len` bytes at `url`; its URL.
pub async fn create(url: &str, len: impl Into<http::HeaderValue>) -> String {
    let r = creation(url, len).send().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.location()
}

/// PATCHes `data` at `offset`.
pub async fn patch(url: &str, offset: impl Into<http::HeaderValue>, data: &[u8]) -> Reply {
    append(url, offset).body(data.to_vec()).send().await
}

pub async fn head(url: &str) -> Reply {
    request("HEAD", url).send().await
}

pub async fn delete(url: &str) -> Reply {
    request("DELETE", url).send().await
}

/// The upload's `Upload-Offset` as porter reports it (HEAD must answer 200).
pub async fn offset(url: &str) -> u64 {
    let r = head(url).await;
    assert_eq!(r.status, 200, "HEAD {url}");
    r.header("upload-offset").parse().expect("a number")
}

/// The upload id at the end of an upload URL.
pub fn id(url: &str) -> &str {
    url.rsplit('/').next().expect("an upload URL")
}

/// The path of an upload URL (what a raw request names).
pub fn path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    &rest[rest.find('/').expect("a path")..]
}

/// The head of a PATCH of `len` bytes at `offset`, for a raw socket.
pub fn patch_head(path: &str, offset: u64, len: usize) -> String {
    super::wire::head(
        "PATCH",
        path,
        &[
            "Tus-Resumable: 1.0.0",
            &format!("Upload-Offset: {offset}"),
            "Content-Type: application/offset+octet-stream",
        ],
        len,
    )
}
