//! porter's own errors: one kind enum, mapped to an HTTP status and a code in exactly
//! one place, rendered per protocol (docs/reference/errors.md's JSON for multipart and raw routes).
//!
//! Lower layers (store, sink, backend, multipart parser) have their own small error
//! types; each converts into `Error` once, at the layer boundary, choosing its kind.

use crate::http::{Body, full};
use http::{HeaderValue, Response, StatusCode, header};

/// What went wrong, as a client needs to know it (docs/reference/errors.md's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    Expired,
    PreconditionFailed,
    TooLarge,
    UnsupportedType,
    RangeNotSatisfiable,
    Locked,
    HeadersTooLarge,
    ChecksumMismatch,
    TooManyRequests,
    BackendUnavailable,
    Busy,
    BackendTimeout,
    InsufficientStorage,
    Internal,
}

impl ErrorKind {
    /// The HTTP status and the `error` code of the JSON body: the one mapping.
    pub fn status_and_code(self) -> (StatusCode, &'static str) {
        use ErrorKind::*;
        let (status, code) = match self {
            BadRequest => (400, "bad_request"),
            Forbidden => (403, "forbidden"),
            NotFound => (404, "not_found"),
            MethodNotAllowed => (405, "method_not_allowed"),
            Timeout => (408, "timeout"),
            Conflict => (409, "conflict"),
            Expired => (410, "expired"),
            PreconditionFailed => (412, "precondition_failed"),
            TooLarge => (413, "too_large"),
            UnsupportedType => (415, "unsupported_type"),
            RangeNotSatisfiable => (416, "range_not_satisfiable"),
            Locked => (423, "locked"),
            HeadersTooLarge => (431, "headers_too_large"),
            ChecksumMismatch => (460, "checksum_mismatch"),
            TooManyRequests => (429, "too_many_requests"),
            BackendUnavailable => (502, "backend_unavailable"),
            Busy => (503, "busy"),
            BackendTimeout => (504, "backend_timeout"),
            InsufficientStorage => (507, "insufficient_storage"),
            Internal => (500, "internal"),
        };
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
        )
    }

    pub fn status(self) -> StatusCode {
        self.status_and_code().0
    }

    /// `Retry-After` for the kinds a client should retry later: every protocol's
    /// renderer adds it from here.
    pub fn retry_after(self) -> Option<HeaderValue> {
        matches!(self, ErrorKind::Busy | ErrorKind::TooManyRequests)
            .then(|| HeaderValue::from_static("5"))
    }
}

/// An error porter answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// A sentence for humans (`verbose_error`).
    pub message: String,
    /// The client's file name, when the error concerns one file.
    pub file: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            file: None,
        }
    }

    pub fn with_file(mut self, name: &str) -> Error {
        self.file = Some(name.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadRequest, message)
    }

    pub fn too_large(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::TooLarge, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// docs/reference/errors.md's JSON body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": false,
            "error": self.kind.status_and_code().1,
            "verbose_error": self.message,
            "file": self.file,
        })
    }

    /// The JSON response for multipart and raw routes (and porter's errors elsewhere).
    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(full(self.json().to_string()));
        *resp.status_mut() = self.kind.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self.retry_after() {
            h.insert(header::RETRY_AFTER, v);
        }
        resp
    }

    /// `Retry-After` for an error a client should retry later.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        self.kind.retry_after()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, code) = self.kind.status_and_code();
        write!(f, "{} {code}: {}", status.as_u16(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins docs/reference/errors.md's table: a change here is a change to the contract.
    #[test]
    fn mapping_matches_spec() {
        use ErrorKind::*;
        let table = [
            (BadRequest, 400, "bad_request"),
            (Forbidden, 403, "forbidden"),
            (NotFound, 404, "not_found"),
            (MethodNotAllowed, 405, "method_not_allowed"),
            (Timeout, 408, "timeout"),
            (Conflict, 409, "conflict"),
            (Expired, 410, "expired"),
            (PreconditionFailed, 412, "precondition_failed"),
            (TooLarge, 413, "too_large"),
            (UnsupportedType, 415, "unsupported_type"),
            (RangeNotSatisfiable, 416, "range_not_satisfiable"),
            (Locked, 423, "locked"),
            (HeadersTooLarge, 431, "headers_too_large"),
            (ChecksumMismatch, 460, "checksum_mismatch"),
            (TooManyRequests, 429, "too_many_requests"),
            (BackendUnavailable, 502, "backend_unavailable"),
            (Busy, 503, "busy"),
            (BackendTimeout, 504, "backend_timeout"),
            (InsufficientStorage, 507, "insufficient_storage"),
        ];
        for (kind, status, code) in table {
            let (s, c) = kind.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn json_shape() {
        let e = Error::new(ErrorKind::UnsupportedType, "nope").with_file("a.png");
        assert_eq!(
            e.json(),
            serde_json::json!({"accepted": false, "error": "unsupported_type", "verbose_error": "nope", "file": "a.png"})
        );
        assert_eq!(
            Error::bad_request("x").json()["file"],
            serde_json::Value::Null
        );
    }
}
