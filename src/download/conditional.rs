//! Conditional requests (RFC 9110 §13.2.2), evaluated in the RFC's order:
//! If-Match → If-Unmodified-Since → If-None-Match → If-Modified-Since → If-Range.

use http::{HeaderMap, Method, header};
use std::time::{SystemTime, UNIX_EPOCH};

/// The validators of the file being served.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong, quoted: `"<mtime hex>-<size hex>"` as nginx makes it.
    pub etag: String,
    pub modified: SystemTime,
}

impl Validators {
    pub fn new(modified: SystemTime, len: u64) -> Validators {
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Validators {
            etag: format!("\"{secs:x}-{len:x}\""),
            modified: UNIX_EPOCH + std::time::Duration::from_secs(secs),
        }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 304 Not Modified.
    NotModified,
    /// Serve the file; `ranges` says whether a `Range` header may apply.
    Serve { ranges: bool },
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn date(h: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    header_str(h, name).and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// Whether an `If-Match`/`If-None-Match` list matches `etag`.
fn list_matches(list: &str, etag: &str, weak: bool) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || if weak {
                strip(tag) == strip(etag)
            } else {
                !tag.starts_with("W/") && tag == etag
            }
    })
}

pub fn evaluate(method: &Method, h: &HeaderMap, v: &Validators) -> Outcome {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(im) = header_str(h, header::IF_MATCH) {
        if !list_matches(im, &v.etag, false) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(since) = date(h, header::IF_UNMODIFIED_SINCE)
        && v.modified > since
    {
        return Outcome::PreconditionFailed;
    }
    if let Some(inm) = header_str(h, header::IF_NONE_MATCH) {
        if list_matches(inm, &v.etag, true) {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if get_or_head
        && let Some(since) = date(h, header::IF_MODIFIED_SINCE)
        && v.modified <= since
    {
        return Outcome::NotModified;
    }
    let ranges = match header_str(h, header::IF_RANGE).map(str::trim) {
        None => true,
        Some(tag) if tag.starts_with('"') || tag.starts_with("W/") => tag == v.etag,
        Some(d) => httpdate::parse_http_date(d).is_ok_and(|d| d == v.modified),
    };
    Outcome::Serve { ranges }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v() -> Validators {
        Validators::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000), 1234)
    }

    fn eval(pairs: &[(&str, &str)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, val) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                val.parse().unwrap(),
            );
        }
        evaluate(&Method::GET, &h, &v())
    }

    #[test]
    fn etag_shape() {
        assert_eq!(v().etag, "\"6553f100-4d2\"");
        assert_eq!(v().last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn rfc_order() {
        let tag = v().etag;
        let lm = v().last_modified();
        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        let serve = Outcome::Serve { ranges: true };
        assert_eq!(eval(&[]), serve);
        assert_eq!(eval(&[("if-match", &tag)]), serve);
        assert_eq!(eval(&[("if-match", "\"other\", *")]), serve);
        assert_eq!(
            eval(&[("if-match", "\"other\"")]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            eval(&[("if-match", &format!("W/{tag}"))]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            eval(&[("if-unmodified-since", old)]),
            Outcome::PreconditionFailed
        );
        assert_eq!(eval(&[("if-unmodified-since", &lm)]), serve);
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            eval(&[("if-match", &tag), ("if-unmodified-since", old)]),
            serve
        );
        assert_eq!(eval(&[("if-none-match", &tag)]), Outcome::NotModified);
        assert_eq!(
            eval(&[("if-none-match", &format!("W/{tag}"))]),
            Outcome::NotModified
        );
        assert_eq!(eval(&[("if-none-match", "\"x\"")]), serve);
        assert_eq!(eval(&[("if-modified-since", &lm)]), Outcome::NotModified);
        assert_eq!(eval(&[("if-modified-since", old)]), serve);
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            eval(&[("if-none-match", "\"x\""), ("if-modified-since", &lm)]),
            serve
        );
        assert_eq!(eval(&[("if-modified-since", "garbage")]), serve);
        assert_eq!(eval(&[("if-range", &tag)]), serve);
        assert_eq!(eval(&[("if-range", &lm)]), serve);
        assert_eq!(
            eval(&[("if-range", "\"x\"")]),
            Outcome::Serve { ranges: false }
        );
        assert_eq!(eval(&[("if-range", old)]), Outcome::Serve { ranges: false });
        assert_eq!(
            eval(&[("if-range", &format!("W/{tag}"))]),
            Outcome::Serve { ranges: false }
        );
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag.parse().unwrap());
        assert_eq!(
            evaluate(&Method::POST, &h, &v()),
            Outcome::PreconditionFailed
        );
    }
}
