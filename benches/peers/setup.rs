//! How each server under test is configured and started: porter and each peer doing the
//! same job in its own folder of the same storage location, against the same backend.

use crate::support::servers::{Server, free_addr};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the peers were found (`scripts/bench` installs them and sets these variables);
/// a peer that is not there is reported as "not installed".
pub struct Peers {
    pub nginx: Option<PathBuf>,
    /// A Python with Django and gunicorn.
    pub python: Option<PathBuf>,
    pub rustus: Option<PathBuf>,
    /// A `node_modules` holding `@tus/server` and `@tus/file-store`.
    pub tus_node: Option<PathBuf>,
}

impl Peers {
    pub fn locate() -> Peers {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let existing = |p: Option<PathBuf>| p.filter(|p| p.exists());
        Peers {
            nginx: existing(Some(PathBuf::from("/usr/sbin/nginx"))),
            python: existing(var("PORTER_BENCH_PYTHON")),
            rustus: existing(var("PORTER_BENCH_RUSTUS")),
            tus_node: var("PORTER_BENCH_NODE_PATH").filter(|p| p.join("@tus/server").exists()),
        }
    }

    /// Each peer's version, for the report.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(nginx) = &self.nginx {
            let v = first_line(Command::new(nginx).arg("-v"), true);
            out.push(("nginx".into(), v.replace("nginx version: ", "")));
        }
        if let Some(python) = &self.python {
            let code = "import django, gunicorn, sys; \
                        print('Django', django.get_version(), '+ gunicorn', gunicorn.__version__, \
                        '(Python', sys.version.split()[0] + ')')";
            out.push((
                "Django".into(),
                first_line(Command::new(python).args(["-c", code]), false),
            ));
        }
        if let Some(rustus) = &self.rustus {
            out.push((
                "rustus".into(),
                first_line(Command::new(rustus).arg("--version"), false),
            ));
        }
        if let Some(modules) = &self.tus_node {
            let package = modules.join("@tus/server/package.json");
            let text = std::fs::read_to_string(package).unwrap_or_default();
            let version = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["version"].as_str().map(String::from))
                .unwrap_or_default();
            let node = first_line(Command::new("node").arg("--version"), false);
            out.push((
                "@tus/server".into(),
                format!("{version} + @tus/file-store (Node {node})"),
            ));
        }
        out
    }
}

fn first_line(cmd: &mut Command, stderr: bool) -> String {
    let out = cmd.output().ok();
    let text = out
        .map(|o| String::from_utf8_lossy(if stderr { &o.stderr } else { &o.stdout }).into_owned());
    text.unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// porter with every route the scenarios use: multipart and raw, each without hashes and
/// with md5+sha256; tus without hashes (like the tus peers); downloads from `files`.
/// `fsync = false` only where a scenario says so: it is on by default.
pub fn porter(
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
    fsync: bool,
) -> Result<Server, String> {
    porter_with(dir, backend, files, fsync, "")
}

/// [`porter`] with `fsync = false` and its access log on (`[log] level = "info"`),
/// written to `dir/porter.log` as stderr goes to a file under systemd or `2>`.
pub fn porter_logged(dir: &Path, backend: SocketAddr, files: &Path) -> Result<Server, String> {
    porter_with(dir, backend, files, false, LOGGED)
}

/// Marks a porter whose log level is `info` (access lines on).
const LOGGED: &str = "#logged\n";

/// porter storing finished files in S3 (`s3` is its `[storage.s3]` table): the
/// multipart and raw routes only (resumable kinds keep their data on local disk).
pub fn porter_s3(
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
    s3: &str,
) -> Result<Server, String> {
    porter_with(
        dir,
        backend,
        files,
        true,
        &format!("backend = \"s3\"\n{s3}"),
    )
}

/// porter on S3 with shared state in Redis (`[state]`): the multipart and raw routes,
/// and the tus route (`/files`), whose uploads any instance of the same tables continues.
pub fn porter_shared(
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
    s3: &str,
    redis: &str,
) -> Result<Server, String> {
    porter_with(
        dir,
        backend,
        files,
        true,
        &format!("backend = \"s3\"\n{s3}[state]\nurl = \"{redis}\"\n"),
    )
}

fn porter_with(
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
    fsync: bool,
    storage: &str,
) -> Result<Server, String> {
    let addr = free_addr();
    let route = |path: &str, kind: &str, hashes: &str| {
        format!(
            "[[upload]]\npath = \"{path}\"\nkind = \"{kind}\"\nmax_file_size = \"8GiB\"\n\
             hashes = [{hashes}]\n\n"
        )
    };
    let both = "\"md5\", \"sha256\"";
    let text = format!(
        "[server]\nlisten = [\"{addr}\"]\nshutdown_grace = \"2s\"\n\n\
         [backend]\nurl = \"http://{backend}\"\n\n\
         [storage]\nroot = {}\ntemp = {}\nmin_free = \"0\"\nfsync = {fsync}\n{storage}\n\
         {}{}{}{}{}\
         [[internal]]\nprefix = \"/protected/\"\nroot = {}\n\n\
         [log]\nlevel = \"{}\"\n",
        quoted(&dir.join("root")),
        quoted(&dir.join("tmp")),
        route("/upload", "multipart", ""),
        route("/upload-hashed", "multipart", both),
        route("/raw", "raw", ""),
        route("/raw-hashed", "raw", both),
        if storage.is_empty() || storage.contains("[state]") {
            // Hashed on S3 (the scale-out figure); not locally, as rustus does not hash.
            route("/files", "tus", if storage.is_empty() { "" } else { both })
                .replace("[[upload]]\n", "[[upload]]\nnotify = \"/tus-done\"\n")
        } else {
            String::new()
        },
        quoted(files),
        if storage == LOGGED { "info" } else { "warn" },
    );
    let config = dir.join("porter.toml");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_porter"));
    cmd.args(["serve", "-c"]).arg(&config).env("NO_COLOR", "1");
    cmd.env(
        "PORTER_SECRET",
        "porter-bench-secret-0123456789abcdef0123456789",
    );
    Server::spawn(
        "porter",
        cmd,
        addr,
        &dir.join("porter.log"),
        &[libc::SIGTERM],
    )
}

/// Stock nginx: `/raw` offloads the body with `client_body_in_file_only` (kept in
/// `dir/body` for the app) and hands the
/// backend `$request_body_file`; `/protected/` serves X-Accel-Redirect targets from
/// `files` with `sendfile on`; everything else goes to the backend.
pub fn nginx(bin: &Path, dir: &Path, backend: SocketAddr, files: &Path) -> Result<Server, String> {
    nginx_with(bin, dir, backend, files, false)
}

/// [`nginx`] writing its access log (the default `combined` format) to `dir/access.log`.
pub fn nginx_logged(
    bin: &Path,
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
) -> Result<Server, String> {
    nginx_with(bin, dir, backend, files, true)
}

fn nginx_with(
    bin: &Path,
    dir: &Path,
    backend: SocketAddr,
    files: &Path,
    logged: bool,
) -> Result<Server, String> {
    let addr = free_addr();
    let d = dir.display();
    // SAFETY: geteuid(2) has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let access = if logged {
        format!("\"{d}/access.log\"")
    } else {
        "off".to_string()
    };
    let conf = format!(
        "{user}daemon off;\nmaster_process on;\nworker_processes auto;\n\
         pid \"{d}/nginx.pid\";\nerror_log \"{d}/error.log\" warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log {access};\n  sendfile on;\n  tcp_nopush on;\n\
         keepalive_requests 1000000;\n  client_max_body_size 0;\n\
         client_body_temp_path \"{d}/body\";\n  proxy_temp_path \"{d}/proxy\";\n\
         fastcgi_temp_path \"{d}/fastcgi\";\n  uwsgi_temp_path \"{d}/uwsgi\";\n\
         scgi_temp_path \"{d}/scgi\";\n\
         upstream app {{ server {backend}; keepalive 64; }}\n\
         server {{\n    listen {addr} backlog=4096;\n\
         location /protected/ {{ internal; alias \"{}/\"; }}\n\
         location /raw {{ client_body_in_file_only on; proxy_pass_request_body off; \
         proxy_set_header Content-Length \"\"; proxy_set_header X-File $request_body_file; \
         proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
         location / {{ proxy_pass http://app; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
        files.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir).arg("-c").arg(&path);
    cmd.arg("-e").arg(dir.join("error.log"));
    let signals = [libc::SIGQUIT, libc::SIGTERM];
    Server::spawn("nginx", cmd, addr, &dir.join("nginx.out"), &signals)
}

/// Django (`benches/peers/django_peer.py`) under gunicorn with 2 × cores + 1 sync
/// workers, gunicorn's own advice.
pub fn django(python: &Path, dir: &Path) -> Result<Server, String> {
    let addr = free_addr();
    let workers = 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    for sub in ["media", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new(python);
    cmd.args(["-m", "gunicorn", "--chdir"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers"))
        .args(["--workers", &workers.to_string(), "--timeout", "600"])
        .args(["--backlog", "4096", "--log-level", "warning"])
        .args(["--bind", &addr.to_string(), "django_peer:application"])
        .env("BENCH_MEDIA_ROOT", dir.join("media"))
        .env("BENCH_UPLOAD_TEMP", dir.join("tmp"));
    Server::spawn(
        "Django",
        cmd,
        addr,
        &dir.join("gunicorn.log"),
        &[libc::SIGTERM],
    )
}

/// rustus storing files in `dir/data`, tus at `/files/`.
pub fn rustus(bin: &Path, dir: &Path) -> Result<Server, String> {
    let addr = free_addr();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .arg("--data-dir")
        .arg(&data)
        .arg("--info-dir")
        .arg(dir)
        .args(["--url", "/files", "--max-body-size", "67108864"])
        .args(["--log-level", "WARN"]);
    Server::spawn(
        "rustus",
        cmd,
        addr,
        &dir.join("rustus.log"),
        &[libc::SIGTERM],
    )
}

/// @tus/server with @tus/file-store in `dir/data`, tus at `/files/`.
pub fn tus_node(modules: &Path, dir: &Path) -> Result<Server, String> {
    let addr = free_addr();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peers/tus_server.mjs"
    ))
    .arg(modules)
    .arg(addr.port().to_string())
    .arg(&data);
    Server::spawn(
        "@tus/server",
        cmd,
        addr,
        &dir.join("tus-node.log"),
        &[libc::SIGTERM],
    )
}
