//! HTTP plumbing shared by every route: the body type, header hygiene, body wrappers.

pub mod body;
pub mod content_range;
pub mod date;
pub mod headers;
pub mod informational;
pub mod multipart;
pub mod names;
pub mod receiver;
pub mod stats;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried inside bodies; boxed because they cross hyper's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type porter hands to hyper, in both directions.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What a body's `poll_frame` returns: porter's bodies carry `Bytes`.
pub type Frames<E = BoxError> = std::task::Poll<Option<Result<http_body::Frame<Bytes>, E>>>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A JSON response body with its content type.
pub fn json_response(status: http::StatusCode, value: &serde_json::Value) -> http::Response<Body> {
    let mut resp = http::Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
