//! Configuration: read once, validated once, then held as an immutable `Arc<Config>`.
//!
//! Two stages, as rust-rpxy does it: `raw` is the file as serde sees it (every key
//! optional, defaults filled in one place), `validate` turns it into the typed structs
//! below while collecting *every* problem, so `porter check` can list them all at once.
//! Request handlers take an `Arc<Config>` snapshot when a request starts, so a reload can
//! swap the config without touching requests already in flight.

#[cfg(test)]
mod keys;
pub mod raw;
pub mod units;
mod validate;

use crate::sink::hashes::Algorithm;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from: relative paths were resolved against its directory.
    pub source: PathBuf,
    pub server: Server,
    pub backend: Backend,
    pub storage: Storage,
    pub limits: Limits,
    pub uploads: Vec<UploadRoute>,
    /// Client field names that could pass for metadata under any route's template.
    pub namespace: crate::namespace::Namespace,
    pub internals: Vec<Internal>,
    pub statics: Vec<Static>,
    pub progress: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub log: Log,
    /// The config with defaults filled in, as `porter check` prints it.
    pub effective: raw::RawConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Addr(SocketAddr),
    Systemd,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The config key it came from (`server.tls`, `server.tls_sni[0]`), for problems.
    pub origin: String,
    /// The SNI name it serves; `None` for the `server.tls` default.
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<Listen>,
    pub tls: Vec<TlsFiles>,
    pub http2: bool,
    /// Every connection starts with a PROXY v1/v2 header naming the real client.
    pub proxy_protocol: bool,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    /// Requests in progress at once over all connections; each may hold a backend
    /// connection and files, so the open-file budget counts these, not connections.
    pub max_requests: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_streams: u32,
    /// Threads that run connections (`listen::workers`); 0: one per core.
    pub workers: usize,
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    pub trusted_proxies: Vec<Cidr>,
}

/// Where the app listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// `http://host:port`: `authority` is `host:port`.
    Tcp {
        authority: String,
    },
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: BackendAddr,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub root: PathBuf,
    pub temp: PathBuf,
    pub fsync: bool,
    pub min_free: u64,
    pub file_mode: u32,
    pub dir_mode: u32,
    /// `[storage.s3]`, when given.
    pub s3: Option<S3Storage>,
    /// `backend = "s3"`: finished files go to the bucket (else under `root`).
    pub uploads_to_s3: bool,
    /// `[state]`: resumable uploads' state and locks in Redis, their data in the
    /// bucket (only with `backend = "s3"`).
    pub state: Option<SharedState>,
}

/// `[state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    pub url: String,
    pub lock_lease: Duration,
}

/// `[storage.s3]`, validated; the keys are read from their files when the store opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Storage {
    pub endpoints: Vec<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    pub part_size: u64,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_parts: u64,
    pub max_field_bytes: u64,
    pub max_fields: u64,
    pub max_fields_bytes: u64,
    pub max_concurrent_uploads: usize,
    pub buffer: usize,
    pub max_body_size: u64,
    pub request_buffer: usize,
    pub response_buffer: usize,
    /// Request and response bytes one connection's streams may hold in memory
    /// together (HTTP/2 multiplexes many streams on one connection).
    pub connection_buffer: usize,
    /// Bytes per second a request body must keep up on average once the grace has
    /// passed, counting only time porter waits on the client; 0: no minimum.
    pub min_body_rate: u64,
    pub min_body_rate_grace: Duration,
    /// Resumable uploads one client may have unfinished at once.
    pub max_incomplete_per_client: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Multipart,
    Raw,
    Tus,
    Chunked,
    NginxResumable,
}

impl Kind {
    /// Every kind, as `kind = "…"` may name it.
    pub const ALL: [Kind; 5] = [
        Kind::Multipart,
        Kind::Raw,
        Kind::Tus,
        Kind::Chunked,
        Kind::NginxResumable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Multipart => "multipart",
            Kind::Raw => "raw",
            Kind::Tus => "tus",
            Kind::Chunked => "chunked",
            Kind::NginxResumable => "nginx-resumable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    Multipart,
    Urlencoded,
    Json,
}

/// One entry of `accept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptRule {
    /// `image/*` (subtype `None`) or `application/pdf`; `*/*` has type `None` too.
    Mime {
        ty: Option<String>,
        subtype: Option<String>,
    },
    /// `.csv`, stored lowercase without the dot.
    Extension(String),
}

/// `field_names`: a template with `{field}` and `{attr}`, each exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames(pub String);

/// `cleanup_on`: backend statuses after which stored files are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusMatch {
    Class(u16),
    Exact(u16),
}

#[derive(Debug, Clone)]
pub struct UploadRoute {
    /// Normalised, no trailing `/` (except the root route `/`).
    pub path: String,
    pub kind: Kind,
    pub methods: Vec<http::Method>,
    pub max_file_size: u64,
    pub max_files: u64,
    pub accept: Vec<AcceptRule>,
    pub hashes: Vec<Algorithm>,
    pub forward: Forward,
    pub field_names: FieldNames,
    pub cleanup_on: Vec<StatusMatch>,
    pub authorize: Option<String>,
    pub field: String,
    pub notify: Option<String>,
    pub complete: Option<String>,
    pub expire: Duration,
    pub retry_window: Duration,
    pub cors_origins: Vec<String>,
    /// nginx-resumable: the shortest `X-Session-ID` accepted.
    pub session_id_min: usize,
}

impl UploadRoute {
    /// Whether a request with `method` is this route's (others pass through to the app).
    pub fn takes(&self, method: &http::Method) -> bool {
        match self.kind {
            Kind::Multipart | Kind::Raw => self.methods.contains(method),
            Kind::Chunked | Kind::NginxResumable => method == http::Method::POST,
            Kind::Tus => true,
        }
    }

    /// Whether a backend answer with `status` means the stored files must go.
    pub fn cleans_up_on(&self, status: u16) -> bool {
        self.cleanup_on.iter().any(|m| match m {
            StatusMatch::Class(c) => status / 100 == *c,
            StatusMatch::Exact(s) => status == *s,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Internal {
    /// Normalised like a route path: no trailing `/`.
    pub prefix: String,
    /// Empty for an S3 entry.
    pub root: PathBuf,
    /// `store = "s3"`: targets are object keys in `[storage.s3]`'s bucket.
    pub s3: bool,
    pub headers: Vec<(String, String)>,
}

/// A `[[static]]` location: public files served from disk.
#[derive(Debug, Clone)]
pub struct Static {
    pub prefix: String,
    pub root: PathBuf,
    pub headers: Vec<(String, String)>,
    /// `Cache-Control: max-age` to send, if any.
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: String,
    pub json: bool,
}

/// An address range in `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `upload[0].max_file_size`; empty for the file as a whole.
    pub key: String,
    pub reason: String,
}

/// Collects every problem of a config, so `porter check` lists them all at once.
pub(crate) struct Check {
    pub(crate) problems: Vec<Problem>,
}

impl Check {
    pub(crate) fn fail(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), p.reason)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), p.key, p.reason)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Problem {
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, path).map_err(fail)
}

/// Parses config text; `path` only locates relative paths and names the source.
pub fn parse(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    let mut unknown = Vec::new();
    let de = toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(&e)])?;
    let mut raw: raw::RawConfig = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
        .map_err(|e| vec![toml_problem(&e)])?;
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| Problem {
            key,
            reason: "unknown key".into(),
        })
        .collect();
    for (i, u) in raw.uploads.iter().enumerate() {
        let kind = u.kind.as_deref().unwrap_or("");
        problems.extend(u.ignored_keys().into_iter().map(|k| Problem {
            key: format!("upload[{i}].{k}"),
            reason: format!("is not used by kind {kind:?}: remove it"),
        }));
    }
    raw.fill_defaults();
    match validate::validate(raw, &base, path) {
        Ok(cfg) if problems.is_empty() => Ok(cfg),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

fn toml_problem(e: &toml::de::Error) -> Problem {
    Problem {
        key: String::new(),
        reason: e.to_string().trim_end().replace('\n', "\n    "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
