//! A small S3 client: requests signed by `rusty-s3` (presigned URLs, so bodies stream
//! unsigned) and sent with porter's own hyper client, over rustls for `https`
//! endpoints. Only what porter needs: multipart uploads, whole-object PUT, GET (with
//! ranges), HEAD, DELETE, and a bucket probe.
//!
//! Several endpoints of one store (the nodes of a Garage or Ceph cluster) are tried in
//! turn: a request that cannot reach one goes to the next, and the next request starts
//! where the last one succeeded.

use crate::http::{Body, BoxError};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::S3Action;
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a signature is valid: longer than any one request may take.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// An error answer's body is read for the log up to this size.
const ERROR_BODY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("no S3 endpoint answered: {0}")]
    Unreachable(String),
    #[error("S3 answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("S3 answered something porter cannot read: {0}")]
    Malformed(String),
}

impl S3Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3Error::Status(s, _) if *s == StatusCode::NOT_FOUND)
    }
}

impl From<S3Error> for crate::store::StoreError {
    fn from(e: S3Error) -> Self {
        crate::store::StoreError::Io(std::io::Error::other(e.to_string()))
    }
}

/// What a store's `[storage.s3]` table says, with the keys read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

pub struct S3 {
    /// One per endpoint.
    buckets: Vec<Bucket>,
    credentials: Credentials,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    name: String,
}

/// An object's size and validators.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<std::time::SystemTime>,
}

impl S3 {
    pub fn new(s: &Settings) -> Result<S3, String> {
        let mut buckets = Vec::new();
        for e in &s.endpoints {
            let url = url::Url::parse(e).map_err(|err| format!("endpoint {e:?}: {err}"))?;
            let b = Bucket::new(url, UrlStyle::Path, s.bucket.clone(), s.region.clone())
                .map_err(|err| format!("endpoint {e:?}: {err}"))?;
            buckets.push(b);
        }
        if buckets.is_empty() {
            return Err("no endpoint".into());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(S3 {
            buckets,
            credentials: Credentials::new(s.access_key.clone(), s.secret_key.clone()),
            http,
            current: AtomicUsize::new(0),
            name: s.bucket.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.name
    }

    /// Sends a request built by `make` for an endpoint's bucket, trying each endpoint
    /// in turn while the request fails before an answer. `body` makes the body again
    /// for a retry.
    async fn send(
        &self,
        make: impl Fn(&Bucket, &Credentials) -> (Method, url::Url),
        headers: &[(&str, String)],
        body: impl Fn() -> Result<Body, S3Error>,
    ) -> Result<Response<Incoming>, S3Error> {
        let n = self.buckets.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let (method, url) = make(&self.buckets[at], &self.credentials);
            let mut req = Request::builder().method(method).uri(url.as_str());
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req
                .body(body()?)
                .map_err(|e| S3Error::Malformed(e.to_string()))?;
            match self.http.request(req).await {
                // A node of a distributed store that cannot reach its quorum right now
                // (a peer just died) answers 5xx: another node may do better.
                Ok(resp) if resp.status().is_server_error() && i + 1 < n => {
                    tracing::warn!(endpoint = %self.buckets[at].base_url(), status = %resp.status(), "S3 endpoint failed; trying the next");
                    last = resp.status().to_string();
                }
                Ok(resp) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(resp);
                }
                // Unreachable, or gone mid-request: every request porter makes may be
                // sent again (parts and objects are overwritten whole; a completion
                // that did happen is recognised by `complete_multipart`).
                Err(e) => {
                    tracing::warn!(endpoint = %self.buckets[at].base_url(), error = %e, "S3 endpoint failed; trying the next");
                    last = e.to_string();
                }
            }
        }
        Err(S3Error::Unreachable(last))
    }

    /// `send` for a request without headers or body.
    async fn call(
        &self,
        make: impl Fn(&Bucket, &Credentials) -> (Method, url::Url),
    ) -> Result<Response<Incoming>, S3Error> {
        self.send(make, &[], || Ok(crate::http::empty())).await
    }

    /// Fails with the answer's status and text unless it is a success.
    async fn ok(resp: Response<Incoming>) -> Result<Response<Incoming>, S3Error> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), ERROR_BODY)
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(S3Error::Status(status, body))
    }

    async fn text(resp: Response<Incoming>) -> Result<Bytes, S3Error> {
        let resp = S3::ok(resp).await?;
        http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| S3Error::Malformed(e.to_string()))
    }

    pub async fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        let resp = self
            .call(|b, c| sign(b.create_multipart_upload(Some(c), key)))
            .await?;
        super::xml::upload_id(&S3::text(resp).await?)
    }

    /// Uploads part `number` (from 1) from `file` (`len` bytes); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        file: &std::path::Path,
        len: u64,
        chunk: usize,
    ) -> Result<String, S3Error> {
        let resp = self
            .send(
                |b, c| sign(b.upload_part(Some(c), key, number, upload_id)),
                &[("content-length", len.to_string())],
                || file_body(file, len, chunk),
            )
            .await?;
        let resp = S3::ok(resp).await?;
        etag(&resp).ok_or_else(|| S3Error::Malformed("UploadPart answered no ETag".into()))
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), S3Error> {
        let body = rusty_s3::actions::CompleteMultipartUpload::new(
            &self.buckets[0],
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        )
        .body();
        let resp = self
            .send(
                |b, c| {
                    sign(b.complete_multipart_upload(
                        Some(c),
                        key,
                        upload_id,
                        etags.iter().map(String::as_str),
                    ))
                },
                &[],
                || Ok(crate::http::full(body.clone())),
            )
            .await?;
        // A completion sent again after its first try did happen finds no upload.
        let xml = match S3::text(resp).await {
            Err(e) if e.is_not_found() && self.head(key).await?.is_some() => return Ok(()),
            r => r?,
        };
        // S3 may answer 200 and put an error in the body when completion fails late.
        match super::xml::completion_error(&xml) {
            Some(why) => Err(S3Error::Malformed(why)),
            None => Ok(()),
        }
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let resp = self
            .call(|b, c| sign(b.abort_multipart_upload(Some(c), key, upload_id)))
            .await?;
        match S3::ok(resp).await {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(drop),
        }
    }

    /// Puts a whole object from `file` (`len` bytes).
    pub async fn put_file(
        &self,
        key: &str,
        file: &std::path::Path,
        len: u64,
        chunk: usize,
    ) -> Result<(), S3Error> {
        let resp = self
            .send(
                |b, c| sign(b.put_object(Some(c), key)),
                &[("content-length", len.to_string())],
                || file_body(file, len, chunk),
            )
            .await?;
        S3::ok(resp).await.map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let resp = self
            .call(|b, c| sign(b.delete_object(Some(c), key)))
            .await?;
        match S3::ok(resp).await {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(drop),
        }
    }

    /// The object's size and validators; `None` if there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let resp = self.call(|b, c| sign(b.head_object(Some(c), key))).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = S3::ok(resp).await?;
        let h = resp.headers();
        let size = h
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::Malformed("HeadObject answered no Content-Length".into()))?;
        Ok(Some(ObjectInfo {
            size,
            etag: etag(&resp),
            last_modified: h
                .get(http::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        }))
    }

    /// The object's bytes `range` (inclusive), streaming.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Body, S3Error> {
        let headers: Vec<(&str, String)> = range
            .map(|(a, b)| vec![("range", format!("bytes={a}-{b}"))])
            .unwrap_or_default();
        let resp = self
            .send(
                |b, c| sign(b.get_object(Some(c), key)),
                &headers,
                || Ok(crate::http::empty()),
            )
            .await?;
        let resp = S3::ok(resp).await?;
        Ok(resp
            .into_body()
            .map_err(|e| -> BoxError { Box::new(e) })
            .boxed())
    }

    /// The keys of the objects under `prefix` (every page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .send(
                    |b, c| {
                        let mut action = b.list_objects_v2(Some(c));
                        action.with_prefix(prefix.to_string());
                        if let Some(t) = &token {
                            action.with_continuation_token(t.clone());
                        }
                        sign(action)
                    },
                    &[],
                    || Ok(crate::http::empty()),
                )
                .await?;
            let (page, next) = super::xml::list_objects(&S3::text(resp).await?)?;
            keys.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }

    /// The multipart uploads in progress under `prefix`: `(key, upload id)` (first page:
    /// up to 1000, which `porter gc` works through pass by pass).
    pub async fn multipart_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, S3Error> {
        let resp = self
            .send(
                |b, c| {
                    let url = rusty_s3::signing::sign(
                        &jiff::Timestamp::now(),
                        rusty_s3::Method::Get,
                        b.base_url().clone(),
                        c.key(),
                        c.secret(),
                        c.token(),
                        b.region(),
                        SIGNED_FOR.as_secs(),
                        [("prefix", prefix), ("uploads", "")].into_iter(),
                        std::iter::empty(),
                    );
                    (Method::GET, url)
                },
                &[],
                || Ok(crate::http::empty()),
            )
            .await?;
        super::xml::multipart_uploads(&S3::text(resp).await?)
    }

    /// Whether the bucket answers (`porter check --online`, `/readyz`).
    pub async fn probe(&self) -> Result<(), S3Error> {
        let resp = self.call(|b, c| sign(b.head_bucket(Some(c)))).await?;
        S3::ok(resp).await.map(drop)
    }
}

fn sign<'a>(action: impl S3Action<'a>) -> (Method, url::Url) {
    let method = match action_method::<_>(&action) {
        rusty_s3::Method::Head => Method::HEAD,
        rusty_s3::Method::Get => Method::GET,
        rusty_s3::Method::Post => Method::POST,
        rusty_s3::Method::Put => Method::PUT,
        rusty_s3::Method::Delete => Method::DELETE,
    };
    (method, action.sign(SIGNED_FOR))
}

fn action_method<'a, A: S3Action<'a>>(_: &A) -> rusty_s3::Method {
    A::METHOD
}

fn etag(resp: &Response<Incoming>) -> Option<String> {
    resp.headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A request body streamed from a local file, `chunk` bytes at a time.
fn file_body(path: &std::path::Path, len: u64, chunk: usize) -> Result<Body, S3Error> {
    let file = std::fs::File::open(path).map_err(|e| S3Error::Malformed(e.to_string()))?;
    Ok(FileBody {
        file: tokio::fs::File::from_std(file),
        left: len,
        buf: bytes::BytesMut::new(),
        chunk,
    }
    .boxed())
}

struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: bytes::BytesMut,
    chunk: usize,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        use tokio::io::AsyncRead;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let want = (self.left as usize).min(self.chunk);
        let this = &mut *self;
        if this.buf.len() < want {
            this.buf.resize(want, 0);
        }
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                this.left -= n as u64;
                let data = this.buf.split_to(n).freeze();
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}
