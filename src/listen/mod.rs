//! Listeners: accept connections within `max_connections`, hand each to `conn`, and
//! drain them all on shutdown (SPEC §1: stop accepting, finish in-flight requests for
//! up to `shutdown_grace`).

pub mod conn;

use crate::app::App;
use crate::config::Config;
use crate::http::headers::Peer;
use conn::Timeouts;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// hyper's protocol settings from the config.
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
        .max_header_list_size(cfg.limits.max_header_bytes as u32);
    if s.http2 { b } else { b.http1_only() }
}

/// Serves `listeners` until `shutdown` resolves, then drains.
pub async fn serve(listeners: Vec<TcpListener>, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let cfg = app.config.clone();
    let max = cfg.server.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let builder = Arc::new(builder(&cfg));
    let timeouts = Timeouts {
        header: cfg.server.header_timeout,
        idle: cfg.server.idle_timeout,
        keepalive: cfg.server.keepalive_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        let ctx = Acceptor {
            app: app.clone(),
            builder: builder.clone(),
            slots: slots.clone(),
            timeouts,
            stop: stop_rx.clone(),
        };
        accepting.spawn(ctx.run(listener));
    }
    shutdown.await;
    tracing::info!(
        "shutting down: no new connections, draining for up to {:?}",
        cfg.server.shutdown_grace
    );
    let _ = stop_tx.send(true);
    accepting.shutdown().await;
    let drained =
        tokio::time::timeout(cfg.server.shutdown_grace, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("shutdown grace ran out with connections still open");
    }
}

struct Acceptor {
    app: Arc<App>,
    builder: Arc<Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
}

impl Acceptor {
    async fn run(mut self, listener: TcpListener) {
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = self.stop.changed() => return,
            };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = self.stop.changed() => return,
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
            let peer = Peer { addr, tls: false };
            tokio::spawn(conn::serve(
                stream,
                peer,
                self.app.clone(),
                self.builder.clone(),
                self.timeouts,
                self.stop.clone(),
                permit,
            ));
        }
    }
}
