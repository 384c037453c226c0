//! Routing (docs/reference/routing.md): normalise the request path, then pick internal → progress →
//! upload route → passthrough.
//!
//! Matching uses the percent-decoded, dot-segment-normalised path so `/%75pload` and
//! `/x/../upload` cannot slip past a route or into an `[[internal]]` prefix. Requests
//! porter generates for the backend use that same path re-encoded canonically.

use crate::config::{Config, Kind, Static, UploadRoute};
use http::Method;

/// A request path after percent-decoding and dot-segment removal. Bytes, not `str`:
/// a client may encode any byte, and the canonical re-encoding must keep them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath(Vec<u8>);

/// Why a path cannot be routed (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path does not start with /")]
    NotAbsolute,
}

/// Percent-decodes `s`; a `%` not followed by two hex digits stays as it is (as
/// does every other byte), so any byte string decodes.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(s).collect()
}

impl NormalPath {
    /// Decodes and normalises a request path (the part of the target before `?`).
    /// Empty segments are merged, as nginx's `merge_slashes` does.
    pub fn parse(raw: &str) -> Result<NormalPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let decoded = percent_decode(raw.as_bytes());
        if decoded.contains(&0) {
            return Err(PathError::Nul);
        }
        let mut segments: Vec<&[u8]> = Vec::new();
        let mut trailing = false;
        for seg in decoded.split(|b| *b == b'/') {
            trailing = matches!(seg, b"" | b"." | b"..");
            match seg {
                b"" | b"." => {}
                b".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let mut out = Vec::with_capacity(decoded.len());
        for s in &segments {
            out.push(b'/');
            out.extend_from_slice(s);
        }
        if trailing || segments.is_empty() {
            out.push(b'/');
        }
        Ok(NormalPath(out))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path for display and logs (lossy for non-UTF-8 bytes).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Whether this path is `prefix` or lies below it at a `/` boundary.
    /// `prefix` is normalised with no trailing `/` (`"/"` matches everything).
    pub fn is_under(&self, prefix: &str) -> bool {
        let p = prefix.as_bytes();
        prefix == "/" || (self.0.starts_with(p) && matches!(self.0.get(p.len()), None | Some(b'/')))
    }

    /// Whether this path equals `path`, ignoring one trailing `/`.
    pub fn is_exactly(&self, path: &str) -> bool {
        let me = self
            .0
            .strip_suffix(b"/")
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.0);
        me == path.as_bytes()
    }

    /// The canonical encoding (docs/reference/routing.md): bytes outside `A-Za-z0-9` and
    /// `/:@&+$,-_.!~*'()` become uppercase `%XX`, as Django's `escape_uri_path` gives.
    pub fn canonical(&self) -> String {
        canonical_encode(&self.0)
    }
}

/// Encodes bytes in the canonical form (docs/reference/routing.md).
pub fn canonical_encode(bytes: &[u8]) -> String {
    const SAFE: &[u8] = b"/:@&+$,-_.!~*'()";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || SAFE.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query as porter sends (and signs) it on a generated request: every byte outside
/// `A-Za-z0-9` and `-._~!$&'()*+,;=:@/?%` as uppercase `%XX`; escapes already there are
/// kept. The result is what Django's `iri_to_uri` leaves unchanged, so an app that sees
/// only the decoded query (no `RAW_URI`) rebuilds the very target porter signed, and
/// applying it twice changes nothing.
pub fn canonical_query(query: &str) -> String {
    const SAFE: &[u8] = b"-._~!$&'()*+,;=:@/?%";
    let mut out = String::with_capacity(query.len());
    for &b in query.as_bytes() {
        if b.is_ascii_alphanumeric() || SAFE.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Normalises a path written in the config: like a request path, without a trailing `/`.
pub fn normalize_route_path(s: &str) -> Result<String, String> {
    let p = NormalPath::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    let text = String::from_utf8(p.0).map_err(|_| format!("{s:?} is not UTF-8"))?;
    match text.strip_suffix('/') {
        Some("") | None => Ok(text),
        Some(t) => Ok(t.to_string()),
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// Under an `[[internal]]` prefix: 404, never forwarded.
    Internal,
    /// The `[progress]` endpoint.
    Progress,
    /// A `[[static]]` location (GET and HEAD; other methods pass through).
    Static(&'a Static),
    /// An intercepted upload.
    Upload(&'a UploadRoute),
    /// The `complete` path of a `chunked` route.
    Complete(&'a UploadRoute),
    /// Everything else.
    Passthrough,
}

/// Picks the route for a request (docs/reference/routing.md, in its order).
pub fn route<'a>(cfg: &'a Config, method: &Method, path: &NormalPath) -> Route<'a> {
    if cfg.internals.iter().any(|i| path.is_under(&i.prefix)) {
        return Route::Internal;
    }
    if cfg.progress.as_deref().is_some_and(|p| path.is_exactly(p)) {
        return Route::Progress;
    }
    if method == Method::GET || method == Method::HEAD {
        let hit = cfg
            .statics
            .iter()
            .filter(|s| path.is_under(&s.prefix))
            .max_by_key(|s| s.prefix.len());
        if let Some(s) = hit {
            return Route::Static(s);
        }
    }
    let complete = cfg.uploads.iter().find(|u| {
        u.kind == Kind::Chunked
            && method == Method::POST
            && u.complete.as_deref().is_some_and(|c| path.is_exactly(c))
    });
    if let Some(u) = complete {
        return Route::Complete(u);
    }
    let best = cfg
        .uploads
        .iter()
        .filter(|u| path.is_under(&u.path))
        .max_by_key(|u| u.path.len());
    match best {
        Some(u) if u.takes(method) => Route::Upload(u),
        _ => Route::Passthrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        NormalPath::parse(s).unwrap().display()
    }

    #[test]
    fn canonical_queries() {
        assert_eq!(canonical_query("a=1&b=x%20y"), "a=1&b=x%20y");
        assert_eq!(
            canonical_query("q=a|b{c}\"d\"^`<>"),
            "q=a%7Cb%7Bc%7D%22d%22%5E%60%3C%3E"
        );
        assert_eq!(canonical_query("x=[1]#"), "x=%5B1%5D%23");
        assert_eq!(canonical_query("é"), "%C3%A9");
        let once = canonical_query("a b|c%zz");
        assert_eq!(canonical_query(&once), once, "idempotent");
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/a/b"), "/a/b");
        assert_eq!(norm("/a/b/"), "/a/b/");
        assert_eq!(norm("/a/./b/../c"), "/a/c");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/%2e%2e/x"), "/x");
        assert_eq!(norm("/a%2Fb"), "/a/b");
        assert_eq!(norm("//a///b"), "/a/b");
        assert_eq!(norm("/%75pload"), "/upload");
        assert_eq!(norm("/bad%zz"), "/bad%zz");
        assert_eq!(NormalPath::parse("/a%00b"), Err(PathError::Nul));
        assert_eq!(NormalPath::parse("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn lenient_percent_decoding() {
        let d = |s: &[u8]| percent_decode(s);
        assert_eq!(d(b"%41%c3%A9"), b"A\xc3\xa9");
        assert_eq!(d(b"%"), b"%");
        assert_eq!(d(b"a%4"), b"a%4");
        assert_eq!(d(b"%zz%4g%g4"), b"%zz%4g%g4");
        assert_eq!(d(b"%%41"), b"%A", "a bad escape leaves its % and goes on");
        assert_eq!(d(b"%2541"), b"%41", "decoded once");
        assert_eq!(d(b"%\xff\xff%00"), b"%\xff\xff\0");
    }

    #[test]
    fn prefixes() {
        let p = NormalPath::parse("/upload/x").unwrap();
        assert!(p.is_under("/upload"));
        assert!(p.is_under("/"));
        assert!(!p.is_under("/up"));
        assert!(NormalPath::parse("/upload").unwrap().is_under("/upload"));
        assert!(NormalPath::parse("/upload/").unwrap().is_under("/upload"));
        assert!(!NormalPath::parse("/uploads").unwrap().is_under("/upload"));
        assert!(NormalPath::parse("/c/").unwrap().is_exactly("/c"));
        assert!(!NormalPath::parse("/c/d").unwrap().is_exactly("/c"));
    }

    #[test]
    fn canonical_form() {
        let p = NormalPath::parse("/f%C3%BCr/a b/%7Euser/x;y=1").unwrap();
        assert_eq!(p.canonical(), "/f%C3%BCr/a%20b/~user/x%3By%3D1");
        assert_eq!(
            canonical_encode(b"/ok:@&+$,-_.!~*'()"),
            "/ok:@&+$,-_.!~*'()"
        );
    }

    #[test]
    fn config_paths() {
        assert_eq!(normalize_route_path("/upload/"), Ok("/upload".into()));
        assert_eq!(normalize_route_path("/"), Ok("/".into()));
        assert!(normalize_route_path("upload").is_err());
    }
}
