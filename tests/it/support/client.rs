//! The HTTP client side: a request built in one expression
//! (`request("PUT", &url).header(..).body(data).send().await`), sent over a fresh
//! HTTP/1.1 connection with hyper's client, and its collected reply.

use super::multipart::Form;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::time::Duration;

/// A finished response, body collected.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The header `name`, which must be there.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .expect("a text header")
    }

    /// The `Location` of a creation.
    pub fn location(&self) -> String {
        self.header("location").to_string()
    }
}

/// A request under construction; `send` sends it.
pub struct Call {
    builder: http::request::Builder,
    body: Bytes,
}

/// A `method` request for `url`, with no body yet.
pub fn request(method: &str, url: &str) -> Call {
    Call {
        builder: Request::builder().method(method).uri(url),
        body: Bytes::new(),
    }
}

impl Call {
    pub fn header<V>(mut self, name: &str, value: V) -> Call
    where
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Each `(name, value)` as a header.
    pub fn headers(self, pairs: &[(&str, &str)]) -> Call {
        pairs.iter().fold(self, |c, (k, v)| c.header(k, *v))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }

    /// `form` as a multipart/form-data body.
    pub fn form(self, form: Form) -> Call {
        let (ct, body) = form.finish();
        self.header("content-type", ct).body(body)
    }

    /// `fields` as an application/x-www-form-urlencoded body.
    pub fn urlencoded(self, fields: &str) -> Call {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(fields.to_string())
    }

    pub fn build(self) -> Request<Full<Bytes>> {
        self.builder
            .body(Full::new(self.body))
            .expect("a valid request")
    }

    pub async fn send(self) -> Reply {
        send(self.build()).await
    }

    /// `send`, with a failed connection or response as an error rather than a panic.
    pub async fn try_send(self) -> Result<Reply, String> {
        let req = self
            .builder
            .body(Full::new(self.body))
            .map_err(|e| e.to_string())?;
        try_send(req).await
    }

    /// Sends with a body the test feeds through `fed`'s sender; the status (0: no answer).
    pub async fn send_fed(self, body: Fed) -> u16 {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let Ok(req) = self.builder.body(body) else {
            return 0;
        };
        match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
            Ok(Ok(resp)) => resp.status().as_u16(),
            _ => 0,
        }
    }
}

/// Sends one request over a fresh HTTP/1.1 connection with hyper's client.
pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    try_send(req).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn try_send(req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no response in time".to_string())?
        .map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body: body.to_bytes(),
    })
}

/// A request body the test feeds chunk by chunk; dropping the sender ends it.
pub struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A body fed through the returned sender.
pub fn fed() -> (tokio::sync::mpsc::Sender<Bytes>, Fed) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (tx, Fed(rx))
}

/// Runs curl (a real peer) and returns (status, body).
pub async fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let stdout = out.stdout;
    let cut = stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&stdout[cut..])
        .trim()
        .parse()
        .unwrap_or(0);
    (code, stdout[..cut].to_vec())
}
