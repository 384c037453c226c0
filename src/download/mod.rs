//! Serving files (docs/guides/downloads.md): targets of `X-Accel-Redirect` / `X-Sendfile` from the app,
//! and `[[static]]` locations. The pipeline, in order:
//!
//! 1. resolve the target beneath its root (`resolve`): refusals are 404 + a log line;
//! 2. open it off the async workers and derive its validators (ETag, Last-Modified);
//! 3. evaluate conditionals in RFC 9110 order (`conditional`): 412, 304, or serve;
//! 4. apply `Range` (`range`): 200, 206 (one range or `multipart/byteranges`), or 416;
//! 5. stream the bytes in large blocks, rate-limited if asked (`stream`).

pub mod conditional;
pub mod range;
pub mod resolve;
mod stream;

use crate::app::App;
use crate::error::{Error, ErrorKind};
use crate::http::{Body, empty};
use crate::sink::hashes::hex;
use bytes::Bytes;
use conditional::{Outcome, Validators};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use range::Ranges;
use std::path::{Path, PathBuf};
use stream::Piece;

/// What the client asked for, as far as serving a file cares.
#[derive(Debug, Clone)]
pub struct Ask {
    pub method: Method,
    /// Only the `Range` and conditional headers.
    pub headers: HeaderMap,
}

impl Ask {
    pub fn of(method: &Method, headers: &HeaderMap) -> Ask {
        let mut kept = HeaderMap::new();
        for name in [
            header::RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            if let Some(v) = headers.get(&name) {
                kept.insert(name, v.clone());
            }
        }
        // A file is fetched with GET (or HEAD) whatever the original method.
        let method = if method == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        };
        Ask {
            method,
            headers: kept,
        }
    }
}

/// Files up to this size are read whole when opened.
const SMALL_FILE: u64 = 64 * 1024;

/// The app's headers a served file keeps (docs/guides/downloads.md).
const KEPT: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::SET_COOKIE,
];

/// Whether an app's response asks porter to serve a file instead.
pub fn requested<B>(resp: &Response<B>) -> bool {
    resp.headers().contains_key("x-accel-redirect") || resp.headers().contains_key("x-sendfile")
}

fn not_found(reason: &str) -> Response<Body> {
    tracing::warn!(reason, "refused a file target");
    Error::new(ErrorKind::NotFound, "not found").into_response()
}

/// How a file is to be served, besides its location.
pub struct Options {
    /// Headers the response starts from (kept app headers, `[[internal]]` headers).
    pub headers: HeaderMap,
    /// Bytes per second, `None` for no limit.
    pub rate: Option<u64>,
    pub charset: Option<String>,
}

/// Replaces an app response carrying `X-Accel-Redirect` / `X-Sendfile` by the file.
pub async fn from_backend(app: &App, ask: &Ask, resp: Response<Body>) -> Response<Body> {
    let entries: Vec<(String, PathBuf)> = app
        .config
        .internals
        .iter()
        .map(|i| (i.prefix.clone(), i.root.clone()))
        .collect();
    let h = resp.headers();
    let text = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let target = match (text("x-accel-redirect"), text("x-sendfile")) {
        (Some(v), _) => resolve::by_prefix(&entries, &v),
        (None, Some(v)) => resolve::by_path(&entries, &v),
        (None, None) => return resp,
    };
    let candidate = match target {
        Ok(c) => c,
        Err(reason) => return not_found(&reason),
    };
    let internal = &app.config.internals[candidate.entry];
    let mut headers = HeaderMap::new();
    for name in KEPT {
        for v in h.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    add_headers(&mut headers, &internal.headers);
    let opts = Options {
        headers,
        rate: text("x-accel-limit-rate")
            .and_then(|r| r.trim().parse().ok())
            .filter(|r| *r > 0),
        charset: text("x-accel-charset").filter(|c| !c.is_empty()),
    };
    drop(resp);
    if internal.s3 {
        return serve_object(app, ask, &candidate.path, opts).await;
    }
    serve(app, ask, &internal.root, &candidate.path, opts).await
}

/// Serves an object of the `[storage.s3]` bucket: `key` is the target's path below its
/// `[[internal]]` prefix, and must lie under `storage.s3.prefix`. Ranges become ranged
/// GETs; the validators are the object's ETag and Last-Modified.
async fn serve_object(app: &App, ask: &Ask, key: &Path, opts: Options) -> Response<Body> {
    let Some(objects) = &app.objects else {
        return not_found("no [storage.s3] bucket is configured");
    };
    let key = key.to_string_lossy().into_owned();
    if !objects.serves(&key) {
        return not_found("the key is outside storage.s3.prefix");
    }
    let info = match objects.info(&key).await {
        Ok(Some(info)) => info,
        Ok(None) => return not_found("no such object"),
        Err(e) => {
            tracing::error!(%key, error = %e, "cannot reach the object store");
            return Error::new(
                ErrorKind::BackendUnavailable,
                "the object store is unreachable",
            )
            .into_response();
        }
    };
    let modified = info.modified.unwrap_or(std::time::UNIX_EPOCH);
    let v = match info.etag {
        Some(etag) => Validators { etag, modified },
        None => Validators::new(modified, info.size),
    };
    let (head_only, rate) = (ask.method == Method::HEAD, opts.rate);
    let Plan {
        status,
        headers,
        pieces,
        total,
    } = match plan(ask, opts, Path::new(&key), info.size, &v) {
        Ok(p) => p,
        Err((status, h)) => return bare(status, h),
    };
    let body = if head_only || total == 0 {
        empty()
    } else {
        stream::object(objects.clone(), key, pieces, rate)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

pub fn add_headers(h: &mut HeaderMap, extra: &[(String, String)]) {
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
}

/// Why a file could not be opened: it is not there to serve (404), or the task
/// opening it failed (500).
enum Opening {
    Refused(String),
    Failed(String),
}

type Opened = ((std::fs::File, std::fs::Metadata), Option<Bytes>);

/// Opens `path` beneath `root` and, for a small file and a GET, reads it whole (from
/// the descriptor that was checked, never the path again).
///
/// Where the root is on a local filesystem and the whole file is in the page cache,
/// this happens right on the worker, as nginx opens and sends files on its event
/// loop: the read asks the kernel not to wait (`stream::cached`), so a file that would
/// have to come from the device instead goes to the blocking pool. Under a root on a
/// network filesystem (NFS, SMB, FUSE), whose opens can wait on a server, the open
/// and the read both go to the blocking pool, in one trip.
async fn open(root: &Path, path: &Path, head_only: bool) -> Result<Opened, Opening> {
    let small = move |meta: &std::fs::Metadata| !head_only && meta.len() <= SMALL_FILE;
    if !local_root(root).await {
        let (root, path) = (root.to_path_buf(), path.to_path_buf());
        return blocking(move || {
            let (file, meta) = resolve::open_beneath(&root, &path).map_err(Opening::Refused)?;
            let whole = small(&meta);
            Ok(read_whole(file, meta, whole))
        })
        .await;
    }
    let (file, meta) = resolve::open_beneath(root, path).map_err(Opening::Refused)?;
    if !small(&meta) {
        return Ok(((file, meta), None));
    }
    if let Some(data) = stream::cached(&file, meta.len()) {
        return Ok(((file, meta), Some(data)));
    }
    blocking(move || Ok(read_whole(file, meta, true))).await
}

/// Runs `f` on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<Opened, Opening> + Send + 'static,
) -> Result<Opened, Opening> {
    crate::workers::spawn_blocking(f)
        .await
        .map_err(|e| Opening::Failed(e.to_string()))?
}

/// `file` with, if `whole`, all its bytes (blocking): `None` for them on a short read,
/// and the body then reads the file in blocks instead.
fn read_whole(file: std::fs::File, meta: std::fs::Metadata, whole: bool) -> Opened {
    if !whole {
        return ((file, meta), None);
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    let read = std::io::Read::read_to_end(&mut &file, &mut buf).ok();
    let data = read.and_then(|_| (buf.len() as u64 == meta.len()).then(|| Bytes::from(buf)));
    ((file, meta), data)
}

/// Whether `root` is on a local filesystem (`crate::filesystem`). Looked up on the
/// blocking pool (a `statfs` of a network mount can wait), then kept per thread and
/// root for a minute, so a root that moves to another filesystem (a symlink repointed,
/// a mount) is seen within one. Roots come from the config, so the table stays small;
/// it starts afresh should reloads ever grow it past 64. Only the root's own filesystem
/// counts: a network mount inside a local root is not told apart
/// (docs/guides/downloads.md).
async fn local_root(root: &Path) -> bool {
    use std::time::{Duration, Instant};
    const FRESH: Duration = Duration::from_secs(60);
    thread_local! {
        static KNOWN: std::cell::RefCell<std::collections::HashMap<PathBuf, (bool, Instant)>> =
            Default::default();
    }
    let known = KNOWN.with_borrow(|known| known.get(root).copied());
    if let Some((local, _)) = known.filter(|(_, at)| at.elapsed() < FRESH) {
        return local;
    }
    let dir = root.to_path_buf();
    let local = crate::workers::spawn_blocking(move || crate::filesystem::of_path(&dir).is_local())
        .await
        .unwrap_or(false);
    KNOWN.with_borrow_mut(|known| {
        if known.len() >= 64 {
            known.clear();
        }
        known.insert(root.to_path_buf(), (local, Instant::now()));
    });
    local
}

/// Serves `path`, which must resolve beneath `root`.
pub async fn serve(
    app: &App,
    ask: &Ask,
    root: &Path,
    path: &Path,
    opts: Options,
) -> Response<Body> {
    let head_only = ask.method == Method::HEAD;
    let ((file, meta), small) = match open(root, path, head_only).await {
        Ok(o) => o,
        Err(Opening::Refused(reason)) => return not_found(&reason),
        Err(Opening::Failed(e)) => return Error::internal(e).into_response(),
    };
    let len = meta.len();
    let v = Validators::new(meta.modified().unwrap_or(std::time::UNIX_EPOCH), len);
    let rate = opts.rate;
    let plan = match plan(ask, opts, path, len, &v) {
        Ok(p) => p,
        Err((status, h)) => return bare(status, h),
    };
    let Plan {
        status,
        headers: h,
        pieces,
        total,
    } = plan;
    let block = app.config.limits.buffer.max(64 << 10);
    let block = rate.map_or(block, |r| block.min((r / 8).max(1024) as usize));
    let body = match small {
        _ if head_only || total == 0 => empty(),
        Some(data) if rate.is_none() => stream::from_memory(&data, &pieces),
        _ => stream::body(file, pieces, block, rate),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = h;
    resp
}

/// The status, headers and body pieces of a response serving `len` bytes named `path`
/// with validators `v`, or the status and headers of the bodiless answer (304, 412,
/// 416) that replaces it.
struct Plan {
    status: StatusCode,
    headers: HeaderMap,
    pieces: Vec<Piece>,
    total: u64,
}

fn plan(
    ask: &Ask,
    opts: Options,
    path: &Path,
    len: u64,
    v: &Validators,
) -> Result<Plan, (StatusCode, HeaderMap)> {
    let mut h = opts.headers;
    set_content_type(&mut h, path, opts.charset.as_deref());
    h.insert(header::ETAG, value(&v.etag));
    h.insert(header::LAST_MODIFIED, value(&v.last_modified()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let ranges = match conditional::evaluate(&ask.method, &ask.headers, v) {
        Outcome::PreconditionFailed => return Err((StatusCode::PRECONDITION_FAILED, h)),
        Outcome::NotModified => {
            h.remove(header::CONTENT_TYPE);
            return Err((StatusCode::NOT_MODIFIED, h));
        }
        Outcome::Serve { ranges: false } => Ranges::Ignore,
        Outcome::Serve { ranges: true } => {
            match ask.headers.get(header::RANGE).and_then(|r| r.to_str().ok()) {
                Some(r) => range::parse(r, len),
                None => Ranges::Ignore,
            }
        }
    };
    let (status, pieces) = match ranges {
        Ranges::Ignore => (StatusCode::OK, vec![Piece::File { offset: 0, len }]),
        Ranges::Unsatisfiable => {
            h.insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
            h.remove(header::CONTENT_TYPE);
            return Err((StatusCode::RANGE_NOT_SATISFIABLE, h));
        }
        Ranges::Satisfiable(list) if list.len() == 1 => {
            let (a, b) = list[0];
            h.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {a}-{b}/{len}")),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                vec![Piece::File {
                    offset: a,
                    len: b - a + 1,
                }],
            )
        }
        Ranges::Satisfiable(list) => (StatusCode::PARTIAL_CONTENT, byteranges(&mut h, &list, len)),
    };
    let total: u64 = pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        })
        .sum();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Ok(Plan {
        status,
        headers: h,
        pieces,
        total,
    })
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn bare(status: StatusCode, headers: HeaderMap) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn set_content_type(h: &mut HeaderMap, path: &Path, charset: Option<&str>) {
    let ct = match h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(ct) => ct.to_string(),
        None => mime_guess::from_path(path)
            .first_or_octet_stream()
            .essence_str()
            .to_string(),
    };
    let ct = match charset {
        Some(cs) if !ct.to_ascii_lowercase().contains("charset=") => format!("{ct}; charset={cs}"),
        _ => ct,
    };
    h.insert(header::CONTENT_TYPE, value(&ct));
}

/// The pieces of a `multipart/byteranges` body, setting its Content-Type.
fn byteranges(h: &mut HeaderMap, list: &[(u64, u64)], len: u64) -> Vec<Piece> {
    let part_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    let boundary = hex(&raw);
    let mut pieces = Vec::new();
    for (a, b) in list {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n"
        );
        pieces.push(Piece::Bytes(Bytes::from(head)));
        pieces.push(Piece::File {
            offset: *a,
            len: b - a + 1,
        });
    }
    pieces.push(Piece::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    h.insert(
        header::CONTENT_TYPE,
        value(&format!("multipart/byteranges; boundary={boundary}")),
    );
    pieces
}
