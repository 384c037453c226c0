//! Stage two: the filled raw config becomes typed `Config`, every problem collected.

use super::raw::{RawConfig, RawUpload};
use super::units::Human;
use super::*;
use crate::route::normalize_route_path;

impl Check {
    fn size(&mut self, key: &str, v: &Option<Human>) -> u64 {
        match v.as_ref().map(Human::size) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                self.fail(key, e);
                0
            }
            None => 0,
        }
    }

    fn size_in(&mut self, key: &str, v: &Option<Human>, min: u64, max: u64) -> u64 {
        let n = self.size(key, v);
        if v.as_ref().is_some_and(|h| h.size().is_ok()) && !(min..=max).contains(&n) {
            self.fail(key, format!("must be between {min} and {max} bytes"));
        }
        n.clamp(min, max)
    }

    fn duration(&mut self, key: &str, v: &Option<Human>) -> Duration {
        match v.as_ref().map(Human::duration) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.fail(key, e);
                Duration::ZERO
            }
            None => Duration::ZERO,
        }
    }

    fn positive(&mut self, key: &str, v: Option<u64>) -> u64 {
        let n = v.unwrap_or(0);
        if n == 0 {
            self.fail(key, "must be at least 1");
        }
        n
    }

    fn at_most(&mut self, key: &str, n: u64, max: u64) -> u64 {
        if n > max {
            self.fail(key, format!("must be at most {max}"));
        }
        n.min(max)
    }

    fn mode(&mut self, key: &str, v: &Option<String>) -> u32 {
        let s = v.as_deref().unwrap_or("");
        match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o7777 => m,
            _ => {
                self.fail(
                    key,
                    format!("{s:?} is not an octal file mode like \"0660\""),
                );
                0
            }
        }
    }

    fn route_path(&mut self, key: &str, v: &str) -> String {
        match normalize_route_path(v) {
            Ok(p) => p,
            Err(e) => {
                self.fail(key, e);
                String::new()
            }
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

pub(super) fn validate(raw: RawConfig, base: &Path, source: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Check {
        problems: Vec::new(),
    };
    let server = server(&mut c, &raw, base);
    let backend = backend(&mut c, &raw, base);
    let storage = storage(&mut c, &raw, base);
    let limits = limits(&mut c, &raw);
    let internals = internals(&mut c, &raw, base);
    let statics = statics(&mut c, &raw, base);
    let uploads: Vec<UploadRoute> = raw
        .uploads
        .iter()
        .enumerate()
        .map(|(i, u)| upload(&mut c, &format!("upload[{i}]"), u))
        .collect();
    routes_disjoint(&mut c, &uploads, &internals);
    if storage.uploads_to_s3 && storage.state.is_none() {
        for (i, u) in uploads.iter().enumerate() {
            if !matches!(u.kind, Kind::Multipart | Kind::Raw) {
                c.fail(
                    format!("upload[{i}].kind"),
                    format!(
                        "{} keeps state across requests: with storage.backend = \"s3\" it needs a [state] table (Redis)",
                        u.kind.name()
                    ),
                );
            }
        }
    }
    let progress = raw.progress.as_ref().map(|p| match &p.path {
        Some(path) => c.route_path("progress.path", path),
        None => {
            c.fail("progress.path", "is required in [progress]");
            String::new()
        }
    });
    let metrics = raw.metrics.as_ref().and_then(|m| match &m.listen {
        Some(l) => match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                c.fail("metrics.listen", format!("{l:?} is not host:port"));
                None
            }
        },
        None => {
            c.fail("metrics.listen", "is required in [metrics]");
            None
        }
    });
    let log = log(&mut c, &raw);
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        source: source.to_path_buf(),
        server,
        backend,
        storage,
        limits,
        namespace: crate::namespace::Namespace::new(
            uploads.iter().map(|u| u.field_names.0.as_str()),
        ),
        uploads,
        internals,
        statics,
        progress,
        metrics,
        log,
        effective: redacted(raw),
    })
}

fn server(c: &mut Check, raw: &RawConfig, base: &Path) -> Server {
    let s = &raw.server;
    let mut listen = Vec::new();
    let addrs = s.listen.as_ref().map(|l| l.to_vec()).unwrap_or_default();
    if addrs.is_empty() {
        c.fail("server.listen", "needs at least one address");
    }
    for a in addrs {
        if a == "systemd" {
            listen.push(Listen::Systemd);
        } else {
            match a.parse::<SocketAddr>() {
                Ok(addr) => listen.push(Listen::Addr(addr)),
                Err(_) => c.fail(
                    "server.listen",
                    format!("{a:?} is not host:port or \"systemd\""),
                ),
            }
        }
    }
    let mut tls = Vec::new();
    if let Some(t) = &s.tls {
        tls_files(c, "server.tls", None, &t.cert, &t.key, base, &mut tls);
    }
    for (i, sni) in s.tls_sni.iter().flatten().enumerate() {
        let key = format!("server.tls_sni[{i}]");
        if sni.name.as_deref().unwrap_or("").is_empty() {
            c.fail(format!("{key}.name"), "is required");
        }
        tls_files(
            c,
            &key,
            sni.name.clone(),
            &sni.cert,
            &sni.key,
            base,
            &mut tls,
        );
    }
    let max_connections = c.positive("server.max_connections", s.max_connections);
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .flatten()
        .filter_map(|p| match Cidr::parse(p) {
            Ok(cidr) => Some(cidr),
            Err(e) => {
                c.fail("server.trusted_proxies", e);
                None
            }
        })
        .collect();
    let window_max = (1u64 << 31) - 1;
    Server {
        listen,
        tls,
        http2: s.http2.unwrap_or(true),
        proxy_protocol: s.proxy_protocol.unwrap_or(false),
        header_timeout: c.duration("server.header_timeout", &s.header_timeout),
        idle_timeout: c.duration("server.idle_timeout", &s.idle_timeout),
        keepalive_timeout: c.duration("server.keepalive_timeout", &s.keepalive_timeout),
        shutdown_grace: c.duration("server.shutdown_grace", &s.shutdown_grace),
        max_connections: max_connections.min(1 << 24) as usize,
        max_requests: c
            .positive("server.max_requests", s.max_requests)
            .min(1 << 24) as usize,
        h2_max_streams: c
            .positive("server.h2_max_streams", s.h2_max_streams)
            .min(1 << 16) as u32,
        workers: c.at_most("server.workers", s.workers.unwrap_or(0), 1024) as usize,
        h2_stream_window: c.size_in(
            "server.h2_stream_window",
            &s.h2_stream_window,
            65535,
            window_max,
        ) as u32,
        h2_connection_window: c.size_in(
            "server.h2_connection_window",
            &s.h2_connection_window,
            65535,
            window_max,
        ) as u32,
        trusted_proxies,
    }
}

fn tls_files(
    c: &mut Check,
    key: &str,
    name: Option<String>,
    cert: &Option<String>,
    tls_key: &Option<String>,
    base: &Path,
    out: &mut Vec<TlsFiles>,
) {
    match (cert, tls_key) {
        (Some(cert), Some(k)) => out.push(TlsFiles {
            origin: key.to_string(),
            name,
            cert: resolve(base, cert),
            key: resolve(base, k),
        }),
        _ => c.fail(key, "needs both cert and key"),
    }
}

fn backend(c: &mut Check, raw: &RawConfig, base: &Path) -> Backend {
    let b = &raw.backend;
    let addr = match b.url.as_deref() {
        None => {
            c.fail(
                "backend.url",
                "is required (e.g. \"http://127.0.0.1:8000\")",
            );
            BackendAddr::Tcp {
                authority: String::new(),
            }
        }
        Some(url) => parse_backend_url(url).unwrap_or_else(|e| {
            c.fail("backend.url", e);
            BackendAddr::Tcp {
                authority: String::new(),
            }
        }),
    };
    let addr = match addr {
        BackendAddr::Unix(p) => BackendAddr::Unix(resolve(base, &p.to_string_lossy())),
        tcp => tcp,
    };
    Backend {
        addr,
        connect_timeout: c.duration("backend.connect_timeout", &b.connect_timeout),
        response_timeout: c.duration("backend.response_timeout", &b.response_timeout),
        secret_file: resolve(base, b.secret_file.as_deref().unwrap_or("secret")),
    }
}

fn parse_backend_url(url: &str) -> Result<BackendAddr, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http:// or unix:"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!("{url:?} must be http://host:port with no path"));
    }
    authority
        .parse::<http::uri::Authority>()
        .map_err(|_| format!("{url:?} has a bad host:port"))?;
    Ok(BackendAddr::Tcp {
        authority: authority.to_string(),
    })
}

fn storage(c: &mut Check, raw: &RawConfig, base: &Path) -> Storage {
    let s = &raw.storage;
    let uploads_to_s3 = match s.backend.as_deref().unwrap_or("local") {
        "local" => false,
        "s3" => true,
        other => {
            c.fail("storage.backend", format!("{other:?} is not local or s3"));
            false
        }
    };
    let s3 = s.s3.as_ref().map(|t| s3_storage(c, t, base));
    if uploads_to_s3 && s3.is_none() {
        c.fail("storage.backend", "\"s3\" needs a [storage.s3] table");
    }
    let state = raw.state.as_ref().map(|t| shared_state(c, t));
    if state.is_some() && !uploads_to_s3 {
        c.fail(
            "state",
            "shares resumable uploads between instances, whose data must then be shared too: set storage.backend = \"s3\"",
        );
    }
    Storage {
        state,
        root: resolve(base, s.root.as_deref().unwrap_or_default()),
        temp: resolve(base, s.temp.as_deref().unwrap_or_default()),
        fsync: s.fsync.unwrap_or(true),
        min_free: c.size("storage.min_free", &s.min_free),
        file_mode: c.mode("storage.file_mode", &s.file_mode),
        dir_mode: c.mode("storage.dir_mode", &s.dir_mode),
        s3,
        uploads_to_s3,
    }
}

/// The effective config as `porter check` prints it: a password in `state.url` is
/// masked (the S3 keys live in files, so only their paths are ever shown).
/// A `field_names` template: `{field}` and `{attr}` once each, something between them
/// (`{field}{attr}` could not be read back: is `filename` field `file`, attr `name`?),
/// and ASCII without whitespace, control characters, quotes or backslashes, which
/// frameworks strip, rewrite or unescape (see `namespace`).
fn check_template(t: &str) -> Result<(), String> {
    if t.matches("{field}").count() != 1 || t.matches("{attr}").count() != 1 {
        return Err("must contain {field} and {attr} exactly once each".into());
    }
    if t.contains("{field}{attr}") || t.contains("{attr}{field}") {
        return Err("needs a separator between {field} and {attr}".into());
    }
    let odd = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || c == '"' || c == '\\';
    if !t.is_ascii() || t.chars().any(odd) {
        return Err(
            "must be ASCII, without whitespace, control characters, quotes or backslashes".into(),
        );
    }
    Ok(())
}

/// The field porter vouches for on a chunked completion (`upload_id`, `md5`) that
/// `template` could make an app read as metadata: exactly, for some file field, or
/// once normalised, for the route's own `field`.
fn completion_clash(template: &str, field: &str) -> Option<&'static str> {
    let own = ["upload_id", "md5"];
    let exact = |name: &str| {
        crate::namespace::RESERVED_ATTRS.iter().any(|attr| {
            let t = template.replace("{attr}", attr);
            t.split_once("{field}").is_some_and(|(pre, post)| {
                name.len() >= pre.len() + post.len()
                    && name.starts_with(pre)
                    && name.ends_with(post)
            })
        })
    };
    let read = |name: &str| {
        crate::namespace::RESERVED_ATTRS.iter().any(|attr| {
            let t = template.replace("{field}", field).replace("{attr}", attr);
            crate::namespace::normalise(&t) == name
        })
    };
    own.into_iter().find(|n| exact(n) || read(n))
}

fn redacted(mut raw: RawConfig) -> RawConfig {
    if let Some(url) = raw.state.as_mut().and_then(|s| s.url.as_mut()) {
        *url = redact_url(url);
    }
    raw
}

/// `url` with its password, if any, replaced by `********`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn shared_state(c: &mut Check, t: &crate::config::raw::RawState) -> SharedState {
    let url = t.url.clone().unwrap_or_default();
    if url.is_empty() {
        c.fail("state.url", "is required in [state]");
    } else if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("unix:")
        || url.starts_with("redis+unix:"))
    {
        c.fail(
            "state.url",
            format!("{:?} must be a redis:// URL", redact_url(&url)),
        );
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        c.fail("state.url", e.to_string());
    }
    let lock_lease = c.duration("state.lock_lease", &t.lock_lease);
    if lock_lease < Duration::from_secs(1) {
        c.fail("state.lock_lease", "must be at least 1s");
    }
    SharedState { url, lock_lease }
}

fn s3_storage(c: &mut Check, t: &crate::config::raw::RawS3, base: &Path) -> S3Storage {
    let endpoints = t.endpoint.as_ref().map(|e| e.to_vec()).unwrap_or_default();
    if endpoints.is_empty() {
        c.fail("storage.s3.endpoint", "is required");
    }
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) || url::Url::parse(e).is_err() {
            c.fail(
                "storage.s3.endpoint",
                format!("{e:?} is not an http:// or https:// URL"),
            );
        }
    }
    let bucket = t.bucket.clone().unwrap_or_default();
    if bucket.is_empty() {
        c.fail("storage.s3.bucket", "is required");
    }
    let prefix = t.prefix.clone().unwrap_or_default();
    if prefix.starts_with('/') || prefix.split('/').any(|seg| seg == "..") {
        c.fail("storage.s3.prefix", "must be relative, without .. segments");
    }
    const MIB: u64 = 1 << 20;
    S3Storage {
        endpoints,
        region: t.region.clone().unwrap_or_default(),
        bucket,
        prefix,
        access_key_file: resolve(base, t.access_key_file.as_deref().unwrap_or_default()),
        secret_key_file: resolve(base, t.secret_key_file.as_deref().unwrap_or_default()),
        part_size: c.size_in("storage.s3.part_size", &t.part_size, 5 * MIB, 5 << 30),
    }
}

fn limits(c: &mut Check, raw: &RawConfig) -> Limits {
    let l = &raw.limits;
    const GIB: u64 = 1 << 30;
    Limits {
        max_header_bytes: c.size_in("limits.max_header_bytes", &l.max_header_bytes, 8192, GIB)
            as usize,
        max_parts: c.positive("limits.max_parts", l.max_parts),
        max_field_bytes: c.size("limits.max_field_bytes", &l.max_field_bytes),
        max_fields: l.max_fields.unwrap_or(0),
        max_fields_bytes: c.size("limits.max_fields_bytes", &l.max_fields_bytes),
        max_concurrent_uploads: c
            .positive("limits.max_concurrent_uploads", l.max_concurrent_uploads)
            .min(1 << 20) as usize,
        buffer: c.size_in("limits.buffer", &l.buffer, 4096, 64 << 20) as usize,
        max_body_size: c.size("limits.max_body_size", &l.max_body_size),
        request_buffer: c.size_in("limits.request_buffer", &l.request_buffer, 0, GIB) as usize,
        response_buffer: c.size_in("limits.response_buffer", &l.response_buffer, 4096, GIB)
            as usize,
        // At least two of the largest frames an app's answer is read in: the
        // read-ahead takes room for a whole frame before it reads one, and less room
        // than that would never come (answers hung until the idle timeout).
        connection_buffer: c.size_in(
            "limits.connection_buffer",
            &l.connection_buffer,
            2 * crate::http::body::MAX_FRAME as u64,
            GIB,
        ) as usize,
        min_body_rate: c.size("limits.min_body_rate", &l.min_body_rate),
        min_body_rate_grace: c.duration("limits.min_body_rate_grace", &l.min_body_rate_grace),
        max_incomplete_per_client: c
            .positive(
                "limits.max_incomplete_per_client",
                l.max_incomplete_per_client,
            )
            .min(1 << 30) as usize,
    }
}

fn internals(c: &mut Check, raw: &RawConfig, base: &Path) -> Vec<Internal> {
    let mut out = Vec::new();
    for (i, int) in raw.internals.iter().enumerate() {
        let key = format!("internal[{i}]");
        let prefix = match &int.prefix {
            Some(p) => c.route_path(&format!("{key}.prefix"), p),
            None => {
                c.fail(format!("{key}.prefix"), "is required");
                continue;
            }
        };
        let s3 = match int.store.as_deref().unwrap_or("local") {
            "local" => false,
            "s3" => true,
            other => {
                c.fail(
                    format!("{key}.store"),
                    format!("{other:?} is not local or s3"),
                );
                continue;
            }
        };
        if s3 && raw.storage.s3.is_none() {
            c.fail(format!("{key}.store"), "\"s3\" needs a [storage.s3] table");
        }
        let root = match (&int.root, s3) {
            (Some(root), false) => resolve(base, root),
            (None, false) => {
                c.fail(format!("{key}.root"), "is required");
                continue;
            }
            (_, true) => PathBuf::new(),
        };
        let headers = header_table(c, &key, &int.headers);
        out.push(Internal {
            prefix,
            root,
            s3,
            headers,
        });
    }
    out
}

fn header_table(
    c: &mut Check,
    key: &str,
    table: &Option<std::collections::BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    let headers = table
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect::<Vec<_>>();
    for (name, value) in &headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            c.fail(
                format!("{key}.headers"),
                format!("{name:?} is not a valid header"),
            );
        }
    }
    headers
}

fn statics(c: &mut Check, raw: &RawConfig, base: &Path) -> Vec<Static> {
    let mut out = Vec::new();
    for (i, s) in raw.statics.iter().enumerate() {
        let key = format!("static[{i}]");
        let (Some(prefix), Some(root)) = (&s.prefix, &s.root) else {
            c.fail(key, "needs prefix and root");
            continue;
        };
        let prefix = c.route_path(&format!("{key}.prefix"), prefix);
        let headers = header_table(c, &key, &s.headers);
        let max_age = s
            .max_age
            .as_ref()
            .map(|_| c.duration(&format!("{key}.max_age"), &s.max_age));
        out.push(Static {
            prefix,
            root: resolve(base, root),
            headers,
            max_age,
        });
    }
    out
}

fn upload(c: &mut Check, key: &str, u: &RawUpload) -> UploadRoute {
    let k = |name: &str| format!("{key}.{name}");
    let path = match &u.path {
        Some(p) => c.route_path(&k("path"), p),
        None => {
            c.fail(k("path"), "is required");
            String::new()
        }
    };
    let kind =
        match u.kind.as_deref() {
            None => {
                c.fail(
                    k("kind"),
                    "is required (multipart, raw, tus, chunked or nginx-resumable)",
                );
                Kind::Multipart
            }
            Some(s) => Kind::ALL
                .into_iter()
                .find(|kd| kd.name() == s)
                .unwrap_or_else(|| {
                    c.fail(
                k("kind"),
                format!("unknown kind {s:?} (use multipart, raw, tus, chunked or nginx-resumable)"),
            );
                    Kind::Multipart
                }),
        };
    let methods = u
        .methods
        .iter()
        .flatten()
        .filter_map(
            |m| match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    c.fail(k("methods"), format!("{m:?} is not an HTTP method"));
                    None
                }
            },
        )
        .collect();
    if u.methods.is_some() && !matches!(kind, Kind::Multipart | Kind::Raw) {
        c.fail(k("methods"), "only multipart and raw routes take methods");
    }
    let accept = u
        .accept
        .iter()
        .flatten()
        .filter_map(|a| parse_accept(a).map_err(|e| c.fail(k("accept"), e)).ok())
        .collect();
    let hashes = u
        .hashes
        .iter()
        .flatten()
        .filter_map(|h| h.parse().map_err(|e: String| c.fail(k("hashes"), e)).ok())
        .collect();
    let forward = match u.forward.as_deref().unwrap_or("multipart") {
        "multipart" => Forward::Multipart,
        "urlencoded" => Forward::Urlencoded,
        "json" => Forward::Json,
        other => {
            c.fail(
                k("forward"),
                format!("{other:?} is not multipart, urlencoded or json"),
            );
            Forward::Multipart
        }
    };
    let template = u.field_names.clone().unwrap_or_default();
    if let Err(e) = check_template(&template) {
        c.fail(k("field_names"), e);
    }
    let cleanup_on = u
        .cleanup_on
        .iter()
        .flatten()
        .filter_map(|s| {
            parse_status_match(s)
                .map_err(|e| c.fail(k("cleanup_on"), e))
                .ok()
        })
        .collect();
    let mut opt_path =
        |name: &str, v: &Option<String>| v.as_ref().map(|p| c.route_path(&k(name), p));
    let authorize = opt_path("authorize", &u.authorize);
    let notify = opt_path("notify", &u.notify);
    let complete = opt_path("complete", &u.complete);
    if kind == Kind::Tus && notify.is_none() {
        c.fail(k("notify"), "is required for kind \"tus\"");
    }
    if kind == Kind::Chunked && complete.is_none() {
        c.fail(k("complete"), "is required for kind \"chunked\"");
    }
    if kind != Kind::Tus && u.cors_origins.as_ref().is_some_and(|c| !c.is_empty()) {
        c.fail(
            k("cors_origins"),
            "only resumable routes (tus) take cors_origins",
        );
    }
    let field = u.field.clone().unwrap_or_else(|| "file".into());
    if field.is_empty()
        || field
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '"')
    {
        c.fail(
            k("field"),
            "must be a non-empty name without whitespace, control characters or quotes",
        );
    }
    if kind == Kind::Chunked
        && let Some(name) = completion_clash(&template, &field)
    {
        c.fail(
            k("field_names"),
            format!(
                "with field {field:?}, a metadata name reads as {name:?}, which porter sends itself on a chunked completion"
            ),
        );
    }
    UploadRoute {
        path,
        kind,
        methods,
        max_file_size: c.size(&k("max_file_size"), &u.max_file_size),
        // Only multipart reads it; the other kinds carry one file.
        max_files: c.positive(&k("max_files"), u.max_files.or(Some(1))),
        accept,
        hashes,
        forward,
        field_names: FieldNames(template),
        cleanup_on,
        authorize,
        field,
        notify,
        complete,
        expire: c.duration(&k("expire"), &u.expire),
        retry_window: c.duration(&k("retry_window"), &u.retry_window),
        cors_origins: u.cors_origins.clone().unwrap_or_default(),
        session_id_min: u.session_id_min.unwrap_or(16).clamp(1, 128) as usize,
    }
}

fn parse_accept(s: &str) -> Result<AcceptRule, String> {
    let bad = || format!("{s:?} is not a MIME pattern (image/*) or an extension (.csv)");
    if let Some(ext) = s.strip_prefix('.') {
        if ext.is_empty() || ext.contains(['.', '/', '*']) {
            return Err(bad());
        }
        return Ok(AcceptRule::Extension(ext.to_ascii_lowercase()));
    }
    let (ty, sub) = s.split_once('/').ok_or_else(bad)?;
    let part = |p: &str| -> Result<Option<String>, String> {
        match p {
            "*" => Ok(None),
            p if !p.is_empty() && !p.contains(['*', '/', ';', ' ']) => {
                Ok(Some(p.to_ascii_lowercase()))
            }
            _ => Err(bad()),
        }
    };
    let (ty, subtype) = (part(ty)?, part(sub)?);
    if ty.is_none() && subtype.is_some() {
        return Err(bad());
    }
    Ok(AcceptRule::Mime { ty, subtype })
}

fn parse_status_match(s: &str) -> Result<StatusMatch, String> {
    let bad = || format!("{s:?} is not \"4xx\", \"5xx\" or a status code");
    let b = s.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) {
        if &s[1..] == "xx" {
            return Ok(StatusMatch::Class((b[0] - b'0') as u16));
        }
        if let Ok(n) = s.parse::<u16>() {
            return Ok(StatusMatch::Exact(n));
        }
    }
    Err(bad())
}

fn log(c: &mut Check, raw: &RawConfig) -> Log {
    let level = raw.log.level.clone().unwrap_or_else(|| "info".into());
    if level
        .parse::<tracing_subscriber::filter::Targets>()
        .is_err()
    {
        c.fail(
            "log.level",
            format!("{level:?} is not a level or filter like \"info,porter=debug\""),
        );
    }
    let json = match raw.log.format.as_deref() {
        Some("json") => true,
        Some("text") | None => false,
        Some(other) => {
            c.fail("log.format", format!("{other:?} is not text or json"));
            false
        }
    };
    Log { level, json }
}

fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn routes_disjoint(c: &mut Check, uploads: &[UploadRoute], internals: &[Internal]) {
    for (i, u) in uploads.iter().enumerate() {
        if uploads[..i].iter().any(|o| o.path == u.path) {
            c.fail(
                format!("upload[{i}].path"),
                format!("{:?} is already used by another [[upload]]", u.path),
            );
        }
        for extra in [Some(&u.path), u.complete.as_ref()].into_iter().flatten() {
            if let Some(int) = internals.iter().find(|int| under(extra, &int.prefix)) {
                c.fail(
                    format!("upload[{i}].path"),
                    format!(
                        "{extra:?} lies under the [[internal]] prefix {:?}",
                        int.prefix
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_rules() {
        assert_eq!(
            parse_accept("image/*"),
            Ok(AcceptRule::Mime {
                ty: Some("image".into()),
                subtype: None
            })
        );
        assert_eq!(
            parse_accept(".CSV"),
            Ok(AcceptRule::Extension("csv".into()))
        );
        assert!(parse_accept("*/png").is_err());
        assert!(parse_accept("pdf").is_err());
        assert!(parse_accept(".").is_err());
    }

    #[test]
    fn field_name_templates() {
        for ok in [
            "{field}.{attr}",
            "porter.{field}.{attr}",
            "{attr}[{field}]",
            "x-{field}-{attr}",
        ] {
            assert_eq!(check_template(ok), Ok(()), "{ok}");
        }
        for bad in [
            "{field}",
            "{field}.{attr}.{attr}",
            "{field}{attr}",
            "{attr}{field}",
            "{field} {attr}",
            "{field}.{attr}\t",
            "{field}\".{attr}",
            "{field}\\{attr}",
            "{field}\u{b7}{attr}",
        ] {
            assert!(check_template(bad).is_err(), "{bad:?}");
        }
    }

    /// A key the route's kind never reads is a problem, named; defaults never are, so
    /// `porter check`'s effective config is itself valid.
    #[test]
    fn keys_a_kind_ignores_are_named() {
        let base =
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[backend]\nurl = \"http://127.0.0.1:1\"\n";
        let cases = [
            (
                "multipart",
                "notify = \"/n\"\nfield = \"f\"\nexpire = \"1h\"\n",
                vec!["field", "notify", "expire"],
            ),
            (
                "raw",
                "max_files = 2\nsession_id_min = 4\n",
                vec!["max_files", "session_id_min"],
            ),
            (
                "tus",
                "notify = \"/n\"\nmethods = [\"POST\"]\ncomplete = \"/c\"\n",
                vec!["methods", "complete"],
            ),
            (
                "nginx-resumable",
                "retry_window = \"1m\"\nmax_files = 3\n",
                vec!["max_files"],
            ),
        ];
        for (kind, keys, want) in cases {
            let text = format!("{base}[[upload]]\npath = \"/u\"\nkind = \"{kind}\"\n{keys}");
            let problems = crate::config::parse(&text, Path::new("/tmp/p.toml")).expect_err(kind);
            for k in want {
                let key = format!("upload[0].{k}");
                assert!(
                    problems.iter().any(|p| p.key == key),
                    "{kind}: {key} in {problems:?}"
                );
            }
        }
        let ok = format!(
            "{base}[[upload]]\npath = \"/u\"\nkind = \"tus\"\nnotify = \"/n\"\nexpire = \"1h\"\n"
        );
        assert!(crate::config::parse(&ok, Path::new("/tmp/p.toml")).is_ok());
    }

    #[test]
    fn a_connection_buffer_holds_two_frames() {
        let base =
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[backend]\nurl = \"http://127.0.0.1:1\"\n";
        let with = |size: &str| format!("{base}[limits]\nconnection_buffer = \"{size}\"\n");
        let problems = crate::config::parse(&with("255KiB"), Path::new("/tmp/p.toml"))
            .expect_err("below two frames");
        assert!(
            problems.iter().any(|p| p.key == "limits.connection_buffer"),
            "{problems:?}"
        );
        assert!(crate::config::parse(&with("256KiB"), Path::new("/tmp/p.toml")).is_ok());
    }

    #[test]
    fn chunked_completions_keep_their_own_fields() {
        assert_eq!(completion_clash("{field}.{attr}", "file"), None);
        assert_eq!(
            completion_clash("{field}_{attr}", "file"),
            Some("upload_id")
        );
        assert_eq!(
            completion_clash("{field}.{attr}", "upload"),
            Some("upload_id")
        );
        assert_eq!(completion_clash("{attr}-{field}", "x"), None);
        assert_eq!(completion_clash("m{field}-{attr}", "x"), None);
    }

    /// Every route's template is in the namespace; a field name with whitespace is not
    /// a valid `field`.
    #[test]
    fn namespace_and_field_names_from_the_config() {
        let base =
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[backend]\nurl = \"http://127.0.0.1:1\"\n";
        let routes = "[[upload]]\npath = \"/a\"\nkind = \"multipart\"\n\
                      [[upload]]\npath = \"/b\"\nkind = \"raw\"\nfield_names = \"porter.{field}.{attr}\"\n";
        let cfg = crate::config::parse(&format!("{base}{routes}"), Path::new("/tmp/p.toml"))
            .expect("valid");
        assert!(cfg.namespace.collides("file_path"));
        assert!(cfg.namespace.collides("Porter.X.Size"));
        let bad = "[[upload]]\npath = \"/c\"\nkind = \"raw\"\nfield = \"my file\"\n";
        let problems = crate::config::parse(&format!("{base}{bad}"), Path::new("/tmp/p.toml"))
            .expect_err("a field with a space");
        assert!(
            problems.iter().any(|p| p.key.ends_with(".field")),
            "{problems:?}"
        );
    }

    #[test]
    fn status_matches() {
        assert_eq!(parse_status_match("4xx"), Ok(StatusMatch::Class(4)));
        assert_eq!(parse_status_match("409"), Ok(StatusMatch::Exact(409)));
        assert!(parse_status_match("6xx").is_err());
        assert!(parse_status_match("40").is_err());
    }

    #[test]
    fn backend_urls() {
        assert_eq!(
            parse_backend_url("http://127.0.0.1:8000"),
            Ok(BackendAddr::Tcp {
                authority: "127.0.0.1:8000".into()
            })
        );
        assert_eq!(
            parse_backend_url("unix:/run/app.sock"),
            Ok(BackendAddr::Unix("/run/app.sock".into()))
        );
        assert!(parse_backend_url("https://x").is_err());
        assert!(parse_backend_url("http://x/y").is_err());
    }
}
