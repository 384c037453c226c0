//! Prometheus metrics (docs/guides/production.md).
//!
//! One `Metrics` lives for the whole process and survives reloads, so counters never
//! reset under a scraper. Label values come from the config (route paths, upload kinds)
//! or from small closed sets (status codes, outcomes), never from request data, so the
//! number of series stays bounded. Gauges that describe state (free space, uploads in
//! flight, resumable uploads) are read when scraped instead of being kept in step.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendStatus {
    /// A status code, or `error` when no answer came.
    status: String,
}

/// How an upload ended, as `porter_uploads_total{outcome}` reports it.
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Stored and accepted by the app.
    ok,
    /// Refused by porter (limits, bad input) or the client went away.
    refused,
    /// Stored, but the app answered with an error (or could not be reached).
    backend_error,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms .. ~1.5 h in 20 buckets: fixed, so memory does not grow with traffic.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

const DOWNLOAD_BYTES: &str =
    "Bytes of files served for X-Accel-Redirect, X-Sendfile and static locations";
const BACKEND_REQUESTS: &str = "Requests sent to the app, by its status (or error)";
const STORAGE_FREE: &str = "Free bytes on the filesystem of storage.root";
const RESUMABLE_UPLOADS: &str = "Resumable uploads that exist (unfinished or awaiting the app)";

/// A new metric of its type's default, registered as `name`.
fn add<M: Metric + Clone + Default>(r: &mut Registry, name: &str, help: &str) -> M {
    registered(r, name, help, M::default())
}

/// `metric`, registered as `name` (the registry keeps a handle; so does the caller).
fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    upload_bytes: Family<KindLabel, Counter>,
    uploads: Family<KindOutcome, Counter>,
    upload_duration: HistogramFamily<KindLabel>,
    uploads_in_flight: Gauge,
    download_bytes: Counter,
    backend_requests: Family<BackendStatus, Counter>,
    storage_free: Gauge,
    resumable_uploads: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("porter");
        let r = &mut registry;
        Metrics {
            requests: add(r, "requests", "Requests answered, by route and status"),
            upload_bytes: add(
                r,
                "upload_bytes",
                "Upload body bytes received, by upload kind",
            ),
            uploads: add(r, "uploads", "Uploads finished, by kind and outcome"),
            upload_duration: registered(
                r,
                "upload_duration_seconds",
                "Time from an upload's first byte to the app's answer",
                Family::new_with_constructor(duration_histogram),
            ),
            uploads_in_flight: add(r, "uploads_in_flight", "Uploads receiving bytes now"),
            download_bytes: add(r, "download_bytes", DOWNLOAD_BYTES),
            backend_requests: add(r, "backend_requests", BACKEND_REQUESTS),
            storage_free: add(r, "storage_free_bytes", STORAGE_FREE),
            resumable_uploads: add(r, "resumable_uploads", RESUMABLE_UPLOADS),
            registry,
        }
    }

    /// `route` is a config-derived label (see `service`), never a raw request path.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    pub fn upload_bytes(&self, kind: &'static str, n: u64) {
        self.upload_bytes
            .get_or_create(&KindLabel { kind })
            .inc_by(n);
    }

    pub fn upload_finished(&self, kind: &'static str, outcome: Outcome, took: Duration) {
        self.uploads
            .get_or_create(&KindOutcome { kind, outcome })
            .inc();
        self.upload_duration
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    pub fn download_bytes(&self, n: u64) {
        self.download_bytes.inc_by(n);
    }

    /// One request to the app: its status, or `None` when it failed without one.
    pub fn backend(&self, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.backend_requests
            .get_or_create(&BackendStatus { status })
            .inc();
    }

    /// The text exposition, after setting the gauges read at scrape time.
    pub fn encode(&self, now: Snapshot) -> String {
        self.uploads_in_flight.set(now.uploads_in_flight as i64);
        if let Some(free) = now.storage_free {
            self.storage_free.set(free.min(i64::MAX as u64) as i64);
        }
        if let Some(n) = now.resumable_uploads {
            self.resumable_uploads.set(n as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// State gauges, read when `/metrics` is scraped.
pub struct Snapshot {
    pub uploads_in_flight: usize,
    pub storage_free: Option<u64>,
    pub resumable_uploads: Option<usize>,
}
