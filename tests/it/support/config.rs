//! porter.toml as a builder, so a test says only what differs:
//! `Config::new().set("limits.max_concurrent_uploads", 1).upload(Upload::multipart("/upload"))`.
//! Keys are porter's own (docs/reference/config.md); values any TOML value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// A porter.toml under construction.
#[derive(Clone, Debug, Default)]
pub struct Config(Table);

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// A config written as TOML text (a shipped example's, say).
    pub fn from_toml(text: &str) -> Config {
        Config(text.parse().unwrap_or_else(|e| panic!("TOML: {e}")))
    }

    /// Sets the dotted `key` (`"server.idle_timeout"`) to `value`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Config {
        let (tables, last) = key.rsplit_once('.').map_or(("", key), |(t, l)| (t, l));
        let mut at = &mut self.0;
        for name in tables.split('.').filter(|n| !n.is_empty()) {
            at = at
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{name} in {key} is not a table"));
        }
        at.insert(last.to_string(), value.into());
        self
    }

    /// Sets `key` unless the test already did.
    fn or_set(self, key: &str, value: impl Into<Value>) -> Config {
        if self.has(key) {
            self
        } else {
            self.set(key, value)
        }
    }

    /// Whether the dotted `key` is set.
    pub fn has(&self, key: &str) -> bool {
        let mut at = Some(&self.0);
        let mut parts = key.split('.').peekable();
        while let Some(name) = parts.next() {
            let Some(v) = at.and_then(|t| t.get(name)) else {
                return false;
            };
            if parts.peek().is_none() {
                return true;
            }
            at = v.as_table();
        }
        false
    }

    /// The app at `addr`.
    pub fn backend(self, addr: SocketAddr) -> Config {
        self.set("backend.url", format!("http://{addr}"))
    }

    /// `server.listen` on one loopback port (0: the kernel picks).
    pub fn listen(self, port: u16) -> Config {
        self.set("server.listen", vec![format!("127.0.0.1:{port}")])
    }

    /// TLS with the certificate and key files `cert_key` (as `Pki::leaf` returns them).
    pub fn tls(self, (cert, key): &(PathBuf, PathBuf)) -> Config {
        self.set("server.tls.cert", cert.display().to_string())
            .set("server.tls.key", key.display().to_string())
    }

    /// One more `[[upload]]` route.
    pub fn upload(self, route: Upload) -> Config {
        self.push("upload", route.0)
    }

    /// One more `[[internal]]` location: `prefix` served from `root`.
    pub fn internal(self, prefix: &str, root: impl Into<Value>) -> Config {
        self.table(
            "internal",
            [("prefix", prefix.into()), ("root", root.into())],
        )
    }

    /// One more table of `entries` in the array of tables `array` (`[[array]]`).
    pub fn table<'a>(
        self,
        array: &str,
        entries: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Config {
        let t = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.push(array, t)
    }

    /// The progress endpoint at `path`.
    pub fn progress(self, path: &str) -> Config {
        self.set("progress.path", path)
    }

    /// The metrics listener on loopback `port`.
    pub fn metrics(self, port: u16) -> Config {
        self.set("metrics.listen", format!("127.0.0.1:{port}"))
    }

    /// Everything `other` sets, on top of this (its routes after these).
    pub fn merge(mut self, other: Config) -> Config {
        merge(&mut self.0, other.0);
        self
    }

    fn push(mut self, array: &str, table: Table) -> Config {
        let list = self
            .0
            .entry(array)
            .or_insert_with(|| Value::Array(Vec::new()));
        list.as_array_mut()
            .unwrap_or_else(|| panic!("{array} is not an array"))
            .push(Value::Table(table));
        self
    }

    /// Storage in `root` and `tmp` next to the config, with no free-space floor,
    /// unless the test says otherwise.
    pub fn with_storage_defaults(self) -> Config {
        self.or_set("storage.root", "root")
            .or_set("storage.temp", "tmp")
            .or_set("storage.min_free", 0)
    }

    pub fn text(&self) -> String {
        toml::to_string(&self.0).expect("a config serialises")
    }

    /// Writes the config for the real binary as `dir/porter.toml` (listening on a port
    /// the kernel picks unless the test chose one); returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let text = self
            .clone()
            .or_set("server.listen", vec!["127.0.0.1:0"])
            .with_storage_defaults()
            .text();
        let path = dir.join("porter.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// One `[[upload]]` route.
#[derive(Clone, Debug)]
pub struct Upload(Table);

impl Upload {
    pub fn new(path: &str, kind: &str) -> Upload {
        Upload(Table::new()).set("path", path).set("kind", kind)
    }

    pub fn multipart(path: &str) -> Upload {
        Upload::new(path, "multipart")
    }

    pub fn raw(path: &str) -> Upload {
        Upload::new(path, "raw")
    }

    /// A tus route that tells the app at `notify`.
    pub fn tus(path: &str, notify: &str) -> Upload {
        Upload::new(path, "tus").set("notify", notify)
    }

    /// A django-chunked-upload route whose completions go to `complete`.
    pub fn chunked(path: &str, complete: &str) -> Upload {
        Upload::new(path, "chunked").set("complete", complete)
    }

    pub fn nginx_resumable(path: &str) -> Upload {
        Upload::new(path, "nginx-resumable")
    }

    /// Sets any route key.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Upload {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn hashes(self, names: &[&str]) -> Upload {
        self.set("hashes", names.to_vec())
    }

    pub fn max_file_size(self, size: impl Into<Value>) -> Upload {
        self.set("max_file_size", size)
    }

    pub fn expire(self, after: &str) -> Upload {
        self.set("expire", after)
    }

    pub fn authorize(self, path: &str) -> Upload {
        self.set("authorize", path)
    }

    pub fn accept(self, types: &[&str]) -> Upload {
        self.set("accept", types.to_vec())
    }

    pub fn forward(self, format: &str) -> Upload {
        self.set("forward", format)
    }

    /// This route and `next` in one config.
    pub fn and(self, next: Upload) -> Config {
        Config::from(self).upload(next)
    }
}

impl From<Upload> for Config {
    fn from(route: Upload) -> Config {
        Config::new().upload(route)
    }
}
