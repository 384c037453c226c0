//! The django-chunked-upload client side (as jQuery-File-Upload drives it), written once.

use super::Porter;
use super::client::{Call, Reply, request};
use super::config::Upload;
use super::multipart::Form;

/// The chunked route most tests use.
pub fn route() -> Upload {
    Upload::chunked("/api/chunked_upload", "/api/chunked_upload_complete/")
        .hashes(&["sha256"])
        .max_file_size("8MiB")
}

/// A chunk of the file `(name, content type)` posted to `url`: `range` is (first, last,
/// total) when given; `upload_id` names the upload after its first chunk.
pub fn chunk(
    url: &str,
    (name, ct): (&str, &str),
    data: &[u8],
    range: Option<(usize, usize, usize)>,
    upload_id: Option<&str>,
) -> Call {
    let mut form = Form::new();
    if let Some(id) = upload_id {
        form = form.field("upload_id", id);
    }
    let mut call = request("POST", url).form(form.file("file", name, ct, data));
    if let Some((a, b, t)) = range {
        call = call.header("content-range", format!("bytes {a}-{b}/{t}"));
    }
    call
}

/// A chunk of `photo.jpg` to `route()`, from a browser session.
pub async fn send_chunk(
    porter: &Porter,
    data: &[u8],
    range: Option<(usize, usize, usize)>,
    upload_id: Option<&str>,
) -> Reply {
    let url = porter.url("/api/chunked_upload/");
    chunk(&url, ("photo.jpg", "image/jpeg"), data, range, upload_id)
        .header("cookie", "sessionid=abc")
        .send()
        .await
}

/// The completion with `fields` to `route()`, from the same session.
pub async fn send_complete(porter: &Porter, fields: &str) -> Reply {
    request("POST", &porter.url("/api/chunked_upload_complete/?next=1"))
        .header("cookie", "sessionid=abc")
        .urlencoded(fields)
        .send()
        .await
}

/// The completion of `upload_id` at `url`, naming `data`'s md5.
pub fn completion(url: &str, upload_id: &str, data: &[u8]) -> Call {
    let md5 = super::md5_hex(data);
    request("POST", url).urlencoded(&format!("upload_id={upload_id}&md5={md5}"))
}

/// The upload id a chunk's answer names.
pub fn upload_id(r: &Reply) -> String {
    r.json()["upload_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no upload_id in {:?}", r.body))
        .to_string()
}
