//! The load generator: hyper's HTTP/1.1 and HTTP/2 clients sending bodies sliced from
//! one shared pattern buffer, so a multi-gigabyte upload costs one `CHUNK` of memory,
//! and keeping every request's wall time for percentiles.

use super::pattern;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The size of each body frame.
pub const CHUNK: usize = 256 * 1024;
/// The body repeats with this period: odd, so consecutive chunks differ.
pub const PERIOD: usize = 1024 * 1024 + 7;
/// Response bytes kept for error messages and `Location` bodies.
const KEEP: usize = 64 * 1024;

/// The buffer every body is sliced from: `PERIOD` bytes plus one `CHUNK` of overlap.
pub fn shared_pattern() -> Bytes {
    Bytes::from(pattern(PERIOD, CHUNK))
}

/// `head`, then `size` pattern bytes starting at pattern offset `at`, then `tail`.
pub struct PatternBody {
    head: Bytes,
    pattern: Bytes,
    left: u64,
    at: usize,
    tail: Bytes,
}

impl PatternBody {
    pub fn new(pattern: &Bytes, head: Bytes, size: u64, tail: Bytes) -> PatternBody {
        PatternBody {
            head,
            pattern: pattern.clone(),
            left: size,
            at: 0,
            tail,
        }
    }

    pub fn empty() -> PatternBody {
        PatternBody::new(&Bytes::new(), Bytes::new(), 0, Bytes::new())
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = if !self.head.is_empty() {
            std::mem::take(&mut self.head)
        } else if self.left > 0 {
            let n = self.left.min(CHUNK as u64) as usize;
            let at = self.at;
            self.at = (at + n) % PERIOD;
            self.left -= n as u64;
            self.pattern.slice(at..at + n)
        } else if !self.tail.is_empty() {
            std::mem::take(&mut self.tail)
        } else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.left == 0 && self.tail.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.head.len() as u64 + self.left + self.tail.len() as u64)
    }
}

/// A request template: sent many times, each with a fresh body of the same shape.
#[derive(Clone)]
pub struct Shape {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    head: Bytes,
    pub size: u64,
    tail: Bytes,
}

const BOUNDARY: &str = "porter-bench-7MA4YWxkTrZu0gW";

impl Shape {
    /// A request with no body.
    pub fn get(path: &str) -> Shape {
        Shape::raw(Method::GET, path, 0)
    }

    /// `size` bytes as the whole body, `application/octet-stream`.
    pub fn raw(method: Method, path: &str, size: u64) -> Shape {
        let mut headers = Vec::new();
        if size > 0 {
            let octets = HeaderValue::from_static("application/octet-stream");
            headers.push((hyper::header::CONTENT_TYPE, octets));
        }
        Shape {
            method,
            path: path.to_string(),
            headers,
            head: Bytes::new(),
            size,
            tail: Bytes::new(),
        }
    }

    /// A `multipart/form-data` POST with one file part `file` ("bench.bin") of `size` bytes.
    pub fn multipart(path: &str, size: u64) -> Shape {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"bench.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let kind = format!("multipart/form-data; boundary={BOUNDARY}");
        let kind = HeaderValue::from_str(&kind).expect("a valid content type");
        Shape {
            method: Method::POST,
            path: path.to_string(),
            headers: vec![(hyper::header::CONTENT_TYPE, kind)],
            head: Bytes::from(head),
            size,
            tail: Bytes::from(format!("\r\n--{BOUNDARY}--\r\n")),
        }
    }

    /// Adds a header (`value` must be a valid header value).
    pub fn header(mut self, name: &'static str, value: &str) -> Shape {
        let value = HeaderValue::from_str(value).expect("a valid header value");
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    /// HTTP/1.1 gets the origin form and `Host`; HTTP/2 the absolute form (`:authority`).
    fn request(&self, pattern: &Bytes, addr: SocketAddr, proto: Proto) -> Request<PatternBody> {
        let body = PatternBody::new(pattern, self.head.clone(), self.size, self.tail.clone());
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        let uri = match proto {
            Proto::H1 => self.path.clone(),
            Proto::H2 => format!("http://{addr}{}", self.path),
        };
        *req.uri_mut() = uri.parse().expect("a valid request URI");
        let headers = req.headers_mut();
        if proto == Proto::H1 {
            let host =
                HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host");
            headers.insert(hyper::header::HOST, host);
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        req
    }
}

/// One answer: the status, headers, how many body bytes came, and the first `KEEP` of them.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: u64,
    pub text: String,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Proto {
    H1,
    /// HTTP/2 with prior knowledge (h2c).
    H2,
}

/// One client connection.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<PatternBody>),
    H2(hyper::client::conn::http2::SendRequest<PatternBody>),
}

impl Conn {
    pub async fn open(addr: SocketAddr, proto: Proto) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match proto {
            Proto::H1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            Proto::H2 => {
                let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(4 << 20)
                    .initial_connection_window_size(16 << 20)
                    .max_frame_size(1 << 20)
                    .handshake(io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
        }
    }

    /// Sends `shape` and reads the whole answer (counting, not keeping, a large body).
    pub async fn send(
        &mut self,
        shape: &Shape,
        pattern: &Bytes,
        addr: SocketAddr,
    ) -> Result<Answer, String> {
        let sent = match self {
            Conn::H1(send) => {
                send.ready().await.map_err(|e| format!("not ready: {e}"))?;
                send.send_request(shape.request(pattern, addr, Proto::H1))
                    .await
            }
            Conn::H2(send) => {
                send.ready().await.map_err(|e| format!("not ready: {e}"))?;
                send.send_request(shape.request(pattern, addr, Proto::H2))
                    .await
            }
        };
        let resp = sent.map_err(|e| format!("{} {}: {e}", shape.method, shape.path))?;
        let (parts, mut body) = resp.into_parts();
        let (mut bytes, mut kept) = (0u64, Vec::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("response body after {bytes} bytes: {e}"))?;
            if let Ok(data) = frame.into_data() {
                bytes += data.len() as u64;
                let room = KEEP.saturating_sub(kept.len()).min(data.len());
                kept.extend_from_slice(&data[..room]);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            bytes,
            text: String::from_utf8_lossy(&kept).into_owned(),
        })
    }
}

/// Sends `shape` on a new connection; an error unless the status is 2xx.
pub async fn once(
    addr: SocketAddr,
    proto: Proto,
    shape: &Shape,
    pattern: &Bytes,
) -> Result<Answer, String> {
    let mut conn = Conn::open(addr, proto).await?;
    success(conn.send(shape, pattern, addr).await?)
}

/// The answer, or an error naming its status and body when it is not 2xx.
pub fn success(answer: Answer) -> Result<Answer, String> {
    if answer.status.is_success() {
        Ok(answer)
    } else {
        let text: String = answer.text.chars().take(300).collect();
        Err(format!("status {}: {text}", answer.status))
    }
}

/// Wall times of a set of requests.
pub struct Batch {
    /// From the first connect to the last answer.
    pub total: Duration,
    /// Each request's time, sorted.
    pub latencies: Vec<Duration>,
    /// Body bytes received.
    pub bytes: u64,
}

impl Batch {
    /// The `p`-th percentile (0..=100) of the request times.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    /// Requests per second over the whole batch.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.total.as_secs_f64()
    }
}

/// `n` requests at once, each on its own connection, each must succeed.
pub async fn concurrent(
    addr: SocketAddr,
    n: usize,
    shape: &Shape,
    pattern: &Bytes,
) -> Result<Batch, String> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (shape, pattern) = (shape.clone(), pattern.clone());
            tokio::spawn(async move {
                let began = Instant::now();
                let answer = once(addr, Proto::H1, &shape, &pattern).await?;
                Ok::<_, String>((began.elapsed(), answer.bytes))
            })
        })
        .collect();
    collect(start, tasks).await
}

/// `conns` keep-alive connections sending `shape` back to back until `period` has passed;
/// every answer must be 2xx.
pub async fn sustained(
    addr: SocketAddr,
    conns: usize,
    period: Duration,
    shape: &Shape,
    pattern: &Bytes,
) -> Result<Batch, String> {
    let start = Instant::now();
    let deadline = start + period;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (shape, pattern) = (shape.clone(), pattern.clone());
            tokio::spawn(async move {
                let mut conn = None;
                let mut times = Vec::new();
                let mut bytes = 0;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let open = match conn.as_mut() {
                        Some(open) => open,
                        None => conn.insert(Conn::open(addr, Proto::H1).await?),
                    };
                    let answer = success(open.send(&shape, &pattern, addr).await?)?;
                    times.push(began.elapsed());
                    bytes += answer.bytes;
                    // A server that does not keep connections alive (gunicorn's sync
                    // workers) costs a new connection per request, as it would in use.
                    if answer
                        .headers
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v == "close")
                    {
                        conn = None;
                    }
                }
                Ok::<_, String>((times, bytes))
            })
        })
        .collect();
    let mut batch = Batch {
        total: Duration::ZERO,
        latencies: Vec::new(),
        bytes: 0,
    };
    for task in tasks {
        let (times, bytes) = task.await.map_err(|e| format!("client task: {e}"))??;
        batch.latencies.extend(times);
        batch.bytes += bytes;
    }
    batch.total = start.elapsed();
    batch.latencies.sort();
    Ok(batch)
}

async fn collect(
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<(Duration, u64), String>>>,
) -> Result<Batch, String> {
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut bytes = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(|e| format!("client task: {e}")) {
            Ok(Ok((took, got))) => {
                latencies.push(took);
                bytes += got;
            }
            Ok(Err(e)) | Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    latencies.sort();
    Ok(Batch {
        total: start.elapsed(),
        latencies,
        bytes,
    })
}
