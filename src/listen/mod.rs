//! Listeners: accept connections within `max_connections`, terminate TLS, and hand
//! each connection to `conn`.
//!
//! What a connection needs from the config (hyper's protocol settings, TLS, clocks, and
//! the app) is one [`Generation`]; [`Live`] holds the current one, and a reload swaps
//! it. A connection keeps the generation it was accepted under for its protocol
//! settings, while each request on it takes the app that is current when it starts.

pub mod activity;
pub mod admin;
pub mod conn;
pub mod proxy_protocol;
pub mod systemd;
pub mod tls;

use crate::app::App;
use crate::config::{Config, Problem};
use crate::http::headers::Peer;
use crate::workers::{self, Placement, Seat};
use conn::Timeouts;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Everything built from one config that connections need.
pub struct Generation {
    pub app: Arc<App>,
    builder: Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    /// Bytes one connection's streams may hold in request and response buffers.
    pub(crate) connection_buffer: usize,
}

impl Generation {
    /// Builds hyper's settings and loads the certificates for `app`'s config.
    pub fn new(app: Arc<App>) -> Result<Generation, Vec<Problem>> {
        let cfg = &app.config;
        let tls = tls::load(&cfg.server.tls, cfg.server.http2)?.map(TlsAcceptor::from);
        Ok(Generation {
            builder: builder(cfg),
            tls,
            timeouts: Timeouts {
                header: cfg.server.header_timeout,
                idle: cfg.server.idle_timeout,
                keepalive: cfg.server.keepalive_timeout,
            },
            connection_buffer: cfg.limits.connection_buffer,
            app,
        })
    }
}

/// hyper's protocol settings from the config.
///
/// HTTP/2 flow control: a stream may only send as much as the receiver's window, so
/// with the protocol's 64 KiB default an upload moves one window per round trip and
/// crawls. porter advertises `h2_stream_window` per stream and `h2_connection_window`
/// per connection (memory per h2 upload is bounded by the stream window plus buffers),
/// and frames up to 1 MiB, so one upload over h2 keeps pace with HTTP/1.1.
fn builder(cfg: &Config) -> Builder<TokioExecutor> {
    let s = &cfg.server;
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(s.h2_stream_window)
        .initial_connection_window_size(s.h2_connection_window)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(s.h2_max_streams)
        .max_send_buf_size(cfg.limits.buffer.max(1 << 20))
        .max_header_list_size(cfg.limits.max_header_bytes as u32);
    if s.http2 { b } else { b.http1_only() }
}

/// The current generation; swapped by a reload.
pub struct Live {
    current: RwLock<Arc<Generation>>,
    /// `max_requests` slots: one per request in progress on any connection. Set at
    /// start (a reload keeps it).
    pub requests: Arc<Semaphore>,
}

impl Live {
    pub fn new(generation: Generation) -> Live {
        let max = generation.app.config.server.max_requests;
        Live {
            current: RwLock::new(Arc::new(generation)),
            requests: Arc::new(Semaphore::new(max)),
        }
    }

    pub fn get(&self) -> Arc<Generation> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn app(&self) -> Arc<App> {
        self.get().app.clone()
    }

    pub fn set(&self, generation: Generation) {
        let generation = Arc::new(generation);
        match self.current.write() {
            Ok(mut g) => *g = generation,
            Err(poisoned) => *poisoned.into_inner() = generation,
        }
    }
}

/// What every accept loop shares.
#[derive(Clone)]
pub struct Shared {
    pub live: Arc<Live>,
    /// `max_connections` slots; the drain waits for all of them.
    pub slots: Arc<Semaphore>,
    /// Turns true at shutdown: connections finish their requests and close.
    pub drain: watch::Receiver<bool>,
    /// Which worker a new connection runs on.
    pub placement: Arc<Placement>,
}

/// Accepts on `listener` until `stop` turns true (shutdown, or the address left the
/// config on reload). Connections already accepted are not affected by `stop`.
pub async fn accept_loop(listener: TcpListener, shared: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        let permit = tokio::select! {
            p = shared.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            addr,
            generation: shared.live.get(),
            live: shared.live.clone(),
            drain: shared.drain.clone(),
            permit,
        };
        let worker = shared.placement.choose();
        let seat = shared.placement.seat(worker);
        if worker + 1 == workers::index() {
            tokio::spawn(connection(stream, accepted, seat));
            continue;
        }
        // Another worker runs it: the socket moves to that worker's reactor.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        shared.placement.spawn_on(worker, async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                connection(stream, accepted, seat).await;
            }
        });
    }
}

/// A connection just accepted, with what it will be served under.
struct Accepted {
    addr: SocketAddr,
    generation: Arc<Generation>,
    live: Arc<Live>,
    drain: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
}

/// Serves one accepted connection on the calling worker, counted there by `_seat`.
async fn connection(mut stream: TcpStream, a: Accepted, _seat: Seat) {
    let Accepted {
        addr,
        generation,
        live,
        drain,
        permit,
    } = a;
    let Some(addr) = client_addr(&mut stream, addr, &generation).await else {
        return;
    };
    let Some(tls) = generation.tls.clone() else {
        let peer = Peer { addr, tls: false };
        return conn::serve(stream, peer, live, generation, drain, permit).await;
    };
    let Some(stream) = handshake(&tls, stream, generation.timeouts.header).await else {
        return;
    };
    let peer = Peer { addr, tls: true };
    conn::serve(stream, peer, live, generation, drain, permit).await
}

/// The client's address: the socket's peer, or with `proxy_protocol` the one in the
/// PROXY header (read within `header_timeout`); `None` drops the connection.
async fn client_addr(
    stream: &mut TcpStream,
    peer: SocketAddr,
    generation: &Generation,
) -> Option<SocketAddr> {
    if !generation.app.config.server.proxy_protocol {
        return Some(peer);
    }
    let limit = generation.timeouts.header;
    match tokio::time::timeout(limit, proxy_protocol::read_header(stream)).await {
        Ok(Ok(addr)) => Some(addr.unwrap_or(peer)),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "connection refused: PROXY protocol required");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no PROXY header within header_timeout");
            None
        }
    }
}

/// The TLS handshake, within the time a request head may take.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(limit, tls.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}
