//! The `porter` command: `serve`, `check`, `gc` (docs/reference/cli.md).

use clap::{Parser, Subcommand};
use porter::config::{self, Config, Listen, Problem};
use porter::listen::systemd;
use porter::server;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "porter", version, about = "An upload-offloading reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (default: $PORTER_CONFIG, else /etc/porter/porter.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and print it with defaults filled in.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also check that the backend is reachable.
        #[arg(long)]
        online: bool,
    },
    /// One pass of garbage collection, then exit.
    Gc {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

const EXIT_CONFIG: u8 = 1;
const EXIT_START: u8 = 2;

fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("PORTER_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/porter/porter.toml"))
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn print_problems(path: &std::path::Path, problems: Vec<Problem>) -> ExitCode {
    eprintln!(
        "{}",
        config::ConfigError {
            file: path.to_path_buf(),
            problems
        }
    );
    ExitCode::from(EXIT_CONFIG)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config_path(config)),
        Command::Check { config, online } => check(config_path(config), online),
        Command::Gc { config } => gc(config_path(config)),
    }
}

fn check(path: PathBuf, online: bool) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems = porter::preflight::check_paths(&cfg);
    if online && let Err(e) = reach_backend(&cfg) {
        problems.push(Problem {
            key: "backend.url".into(),
            reason: e,
        });
    }
    if online
        && let Some(s3) = &cfg.storage.s3
        && let Err(e) = reach_bucket(s3)
    {
        problems.push(Problem {
            key: "storage.s3".into(),
            reason: format!("bucket {:?}: {e}", s3.bucket),
        });
    }
    if online
        && let Some(state) = &cfg.storage.state
        && let Err(e) = reach_redis(state)
    {
        problems.push(Problem {
            key: "state.url".into(),
            reason: e,
        });
    }
    if !problems.is_empty() {
        return print_problems(&path, problems);
    }
    match toml::to_string(&cfg.effective) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot print the config: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn reach_bucket(s3: &config::S3Storage) -> Result<(), String> {
    block_on(porter::reach_bucket(s3))
}

fn reach_redis(state: &config::SharedState) -> Result<(), String> {
    block_on(porter::reach_redis(state))
}

/// Runs one `--online` check on a runtime of its own.
fn block_on(check: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(check)
}

fn reach_backend(cfg: &Config) -> Result<(), String> {
    let timeout = cfg.backend.connect_timeout;
    match &cfg.backend.addr {
        config::BackendAddr::Tcp { authority } => {
            use std::net::ToSocketAddrs;
            let addrs: Vec<_> = authority
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {authority}: {e}"))?
                .collect();
            addrs
                .iter()
                .find_map(|a| std::net::TcpStream::connect_timeout(a, timeout).ok())
                .map(|_| ())
                .ok_or_else(|| format!("cannot connect to {authority}"))
        }
        config::BackendAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p)
            .map(|_| ())
            .map_err(|e| format!("cannot connect to {}: {e}", p.display())),
    }
}

/// A tokio runtime from `builder`, or the exit code for one that cannot start.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::from(EXIT_START)
    })
}

fn gc(path: PathBuf) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(porter::collect_garbage(&cfg)) {
        Ok((partials, uploads)) => {
            println!(
                "removed {partials} stale partial file(s) and {uploads} expired resumable upload(s)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gc failed: {e}");
            ExitCode::from(EXIT_START)
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::filter::Targets;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .or_else(|| cfg.log.level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    use tracing_subscriber::prelude::*;
    let registry = tracing_subscriber::registry().with(filter);
    porter::access_log::use_json(cfg.log.json);
    if cfg.log.json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        // Colours only for a terminal: a log file or the journal gets plain text, so
        // `grep status=500` finds what it should.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init();
    }
}

/// Raises the open-file soft limit to fit `max_connections` client connections plus
/// `max_requests` requests, HTTP/2 streams included (each may hold a backend connection,
/// a file and its lock), plus room for the rest.
fn raise_nofile(max_connections: usize, max_requests: usize) {
    let want = (max_connections as u64)
        .saturating_add((max_requests as u64).saturating_mul(3))
        .saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit; getrlimit only writes to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= want {
        return;
    }
    let new = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit with rlim_cur <= rlim_max; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 || new.rlim_cur < want {
        tracing::warn!(
            limit = new.rlim_cur,
            want,
            "open-file limit is below what max_connections and max_requests need"
        );
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    if let Err(e) = porter::store::LocalStore::open(&cfg.storage) {
        eprintln!("storage: {e}");
        return ExitCode::from(EXIT_START);
    }
    let problems = porter::preflight::check_paths(&cfg);
    if !problems.is_empty() {
        return print_problems(&path, problems);
    }
    raise_nofile(cfg.server.max_connections, cfg.server.max_requests);
    // Before any thread exists: socket activation reads and unsets the environment.
    let bound = match bind(&cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    runtime.spawn(signals(path.clone(), tx));
    match runtime.block_on(server::run(bound, cfg, rx)) {
        Err(porter::StartError::Secret(e)) => {
            eprintln!("{}: backend.secret_file: {e}", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_START)
        }
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
    }
}

/// Binds every `server.listen` entry; `"systemd"` takes the socket-activated ones.
fn bind(cfg: &Config) -> Result<Vec<server::Bound>, String> {
    let mut bound = Vec::new();
    for entry in &cfg.server.listen {
        match entry {
            Listen::Addr(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                if let Ok(local) = l.local_addr() {
                    tracing::info!(%local, "listening");
                }
                bound.push(server::Bound {
                    entry: entry.clone(),
                    listener: l,
                });
            }
            Listen::Systemd => {
                // SAFETY: `serve` binds before it starts the runtime or any thread.
                let activated = unsafe { systemd::activated_listeners() }
                    .map_err(|e| format!("socket activation: {e}"))?;
                if activated.is_empty() {
                    return Err("server.listen has \"systemd\" but no sockets were passed (LISTEN_FDS is unset or not for this process)".into());
                }
                for l in activated {
                    if let Ok(local) = l.local_addr() {
                        tracing::info!(%local, "listening on a socket-activated listener");
                    }
                    bound.push(server::Bound {
                        entry: Listen::Systemd,
                        listener: l,
                    });
                }
            }
        }
    }
    Ok(bound)
}

/// SIGTERM and SIGINT drain and stop; SIGHUP re-reads the config file and reloads.
async fn signals(path: PathBuf, tx: tokio::sync::mpsc::Sender<server::Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot watch signals");
        return;
    };
    loop {
        let control = tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                server::Control::Shutdown
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received");
                server::Control::Shutdown
            }
            _ = hup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP received: reloading");
                server::Control::Reload(reload_config(&path).map(Box::new))
            }
        };
        let stop = matches!(control, server::Control::Shutdown);
        if tx.send(control).await.is_err() || stop {
            return;
        }
    }
}

/// The config file as a reload sees it: parsed, validated, paths and certificates checked.
fn reload_config(path: &std::path::Path) -> Result<Config, String> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    let problems = porter::preflight::check_paths(&cfg);
    if problems.is_empty() {
        return Ok(cfg);
    }
    Err(config::ConfigError {
        file: path.to_path_buf(),
        problems,
    }
    .to_string())
}
