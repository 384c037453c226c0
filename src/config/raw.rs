//! The configuration file as written: serde structs whose every key is optional.
//!
//! Stage one of two (stage two is `validate.rs`). Keeping every key optional here means
//! a missing key is never a serde error; `fill_defaults` writes docs/reference/config.md's defaults in
//! one place, and the filled struct is exactly what `porter check` prints.

use super::units::Human;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One string or a list of strings (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub backend: RawBackend,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RawState>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default, rename = "upload", skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<RawUpload>,
    #[serde(default, rename = "internal", skip_serializing_if = "Vec::is_empty")]
    pub internals: Vec<RawInternal>,
    #[serde(default, rename = "static", skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<RawStatic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<RawProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawSni {
    pub name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<Vec<RawSni>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Requests in progress at once over all connections (HTTP/2 carries many on one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    /// HTTP/2 streams one connection may have open at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_max_streams: Option<u64>,
    /// Threads that run connections, one event loop each; 0: one per core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_stream_window: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_connection_window: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawBackend {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawStorage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir_mode: Option<String>,
    /// `local` or `s3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<RawS3>,
}

/// `[state]`: Redis for resumable state and locks shared by instances (docs/guides/scaling-out.md).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_lease: Option<Human>,
}

/// `[storage.s3]`: an S3-compatible bucket (docs/guides/scaling-out.md).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawS3 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_size: Option<Human>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_field_bytes: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fields: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fields_bytes: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_uploads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_buffer: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_buffer: Option<Human>,
    /// Request and response bytes one connection's streams may hold together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_buffer: Option<Human>,
    /// Bytes per second a request body must keep up, after the grace below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_body_rate: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_body_rate_grace: Option<Human>,
    /// Resumable uploads one client may have unfinished at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_incomplete_per_client: Option<u64>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawUpload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_names: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_on: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_window: Option<Human>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// nginx-resumable: the shortest `X-Session-ID` accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id_min: Option<u64>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawInternal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `s3`: targets are object keys in `[storage.s3]`'s bucket, not files under `root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawStatic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Human>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawProgress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RawLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

fn set<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl RawConfig {
    /// Writes docs/reference/config.md's default into every key the file left out.
    pub fn fill_defaults(&mut self) {
        let s = &mut self.server;
        set(&mut s.listen, OneOrMany::Many(strings(&["127.0.0.1:8080"])));
        set(&mut s.http2, true);
        set(&mut s.header_timeout, "30s".into());
        set(&mut s.idle_timeout, "60s".into());
        set(&mut s.keepalive_timeout, "75s".into());
        set(&mut s.shutdown_grace, "30s".into());
        set(&mut s.max_connections, 10000);
        set(&mut s.max_requests, 10000);
        set(&mut s.h2_max_streams, 128);
        set(&mut s.workers, 0);
        set(&mut s.proxy_protocol, false);
        set(&mut s.h2_stream_window, "4MiB".into());
        set(&mut s.h2_connection_window, "16MiB".into());
        set(&mut s.trusted_proxies, Vec::new());

        let b = &mut self.backend;
        set(&mut b.connect_timeout, "5s".into());
        set(&mut b.response_timeout, "300s".into());
        set(&mut b.secret_file, "secret".into());

        let st = &mut self.storage;
        set(&mut st.root, "var/uploads".into());
        set(&mut st.temp, "var/tmp".into());
        set(&mut st.fsync, true);
        set(&mut st.min_free, "1GiB".into());
        set(&mut st.file_mode, "0660".into());
        set(&mut st.dir_mode, "2770".into());
        set(&mut st.backend, "local".into());
        if let Some(s3) = &mut st.s3 {
            set(&mut s3.region, "us-east-1".into());
            set(&mut s3.prefix, String::new());
            set(&mut s3.access_key_file, "s3-access-key".into());
            set(&mut s3.secret_key_file, "s3-secret-key".into());
            set(&mut s3.part_size, "16MiB".into());
        }
        if let Some(state) = &mut self.state {
            set(&mut state.lock_lease, "10s".into());
        }

        let l = &mut self.limits;
        set(&mut l.max_header_bytes, "64KiB".into());
        set(&mut l.max_parts, 1000);
        set(&mut l.max_field_bytes, "1MiB".into());
        set(&mut l.max_fields, 500);
        set(&mut l.max_fields_bytes, "2MiB".into());
        set(&mut l.max_concurrent_uploads, 1000);
        set(&mut l.buffer, "256KiB".into());
        set(&mut l.max_body_size, "1GiB".into());
        set(&mut l.request_buffer, "1MiB".into());
        set(&mut l.response_buffer, "1MiB".into());
        set(&mut l.connection_buffer, "8MiB".into());
        set(&mut l.min_body_rate, "240B".into());
        set(&mut l.min_body_rate_grace, "5s".into());
        set(&mut l.max_incomplete_per_client, 10_000);

        for u in &mut self.uploads {
            u.fill_defaults();
        }
        for i in &mut self.internals {
            set(&mut i.headers, BTreeMap::new());
        }
        for s in &mut self.statics {
            set(&mut s.headers, BTreeMap::new());
        }
        let log = &mut self.log;
        set(&mut log.level, "info".into());
        set(&mut log.format, "text".into());
    }
}

impl RawUpload {
    /// The keys written in this table that its `kind` never reads: an operator who sets
    /// `notify` on a multipart route expects something that will not happen.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let set: [(&'static str, bool); 7] = [
            ("methods", self.methods.is_some()),
            ("max_files", self.max_files.is_some()),
            ("field", self.field.is_some()),
            ("notify", self.notify.is_some()),
            ("complete", self.complete.is_some()),
            (
                "expire",
                self.expire.is_some() || self.retry_window.is_some(),
            ),
            ("session_id_min", self.session_id_min.is_some()),
        ];
        let reads: &[&str] = match self.kind.as_deref().unwrap_or("") {
            "multipart" => &["methods", "max_files"],
            "raw" => &["methods", "field"],
            "tus" => &["field", "notify", "expire"],
            "chunked" => &["field", "complete", "expire"],
            "nginx-resumable" => &["field", "notify", "expire", "session_id_min"],
            _ => return Vec::new(),
        };
        let mut out: Vec<&'static str> = set
            .iter()
            .filter(|(k, written)| *written && !reads.contains(k))
            .map(|(k, _)| *k)
            .collect();
        // `expire` stands for both expiry keys above.
        if out.contains(&"expire") {
            out.retain(|k| *k != "expire");
            out.extend(self.expire.is_some().then_some("expire"));
            out.extend(self.retry_window.is_some().then_some("retry_window"));
        }
        out
    }

    fn fill_defaults(&mut self) {
        let kind = self.kind.clone().unwrap_or_default();
        if matches!(kind.as_str(), "multipart" | "raw") {
            set(&mut self.methods, strings(&["POST", "PUT"]));
        }
        set(&mut self.max_file_size, "5GiB".into());
        // Defaults only for the keys a kind reads, so `porter check`'s effective config
        // is itself a valid config.
        if kind == "multipart" {
            set(&mut self.max_files, 20);
        }
        set(&mut self.accept, Vec::new());
        set(&mut self.hashes, strings(&["md5", "sha256"]));
        set(&mut self.forward, "multipart".into());
        set(&mut self.field_names, "{field}.{attr}".into());
        set(&mut self.cleanup_on, strings(&["4xx", "5xx"]));
        if kind != "multipart" {
            set(&mut self.field, "file".into());
        }
        if matches!(kind.as_str(), "tus" | "chunked" | "nginx-resumable") {
            set(&mut self.expire, "1d".into());
            set(&mut self.retry_window, "15m".into());
        }
        if kind == "nginx-resumable" {
            set(&mut self.session_id_min, 16);
        }
        set(&mut self.cors_origins, Vec::new());
    }
}
