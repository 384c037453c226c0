//! The `[metrics]` listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (it should get traffic: storage above `min_free`, the S3
//! bucket and the backend reachable). Kept off the public listeners so it is never exposed by accident.

use super::Live;
use crate::app::App;
use crate::http::{Body, full};
use crate::metrics::Snapshot;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = live.app();
                async move { Ok::<_, Infallible>(answer(&app, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            // A scraper that stops reading is not worth a task forever.
            let _ = tokio::time::timeout(Duration::from_secs(300), conn).await;
        });
    }
}

async fn answer(app: &App, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into());
    }
    match req.uri().path() {
        "/metrics" => metrics(app).await,
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready(app).await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn metrics(app: &App) -> Response<Body> {
    let storage_free = app.store.free_bytes().ok();
    let resumable_uploads = app.resumable.ids().await.ok().map(|ids| ids.len());
    let body = app.metrics.encode(Snapshot {
        uploads_in_flight: app.uploads_in_flight(),
        storage_free,
        resumable_uploads,
    });
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

/// Why porter should not get traffic now, if it should not.
async fn ready(app: &App) -> Result<(), String> {
    let min = app.config.storage.min_free;
    match app.store.free_bytes() {
        Ok(free) if free < min => {
            return Err(format!(
                "storage has {free} bytes free, below min_free {min}"
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read free space: {e}")),
    }
    if let Some(objects) = &app.objects {
        objects.probe().await?;
    }
    app.resumable.probe().await?;
    app.backend
        .reachable()
        .await
        .map_err(|e| format!("backend unreachable: {e}"))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
