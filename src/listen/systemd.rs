//! systemd integration (docs/reference/cli.md): readiness notifications and socket activation.
//!
//! Every function is a no-op when porter is not run by systemd (`NOTIFY_SOCKET` or
//! `LISTEN_FDS` unset), so the same code path serves tests and production.

use sd_notify::NotifyState;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // `notify` leaves the environment alone (unsetting it is not safe once threads run).
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Listeners are open and the config is loaded.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload has begun; `ready` follows when it is over (whatever its outcome).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // Type=notify-reload wants the time the reload began.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if systemd asks for it.
/// As sd_watchdog_enabled(3): `WATCHDOG_PID`, when set, must name this process.
pub fn watchdog_interval() -> Option<Duration> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let usec = var("WATCHDOG_USEC").filter(|u| *u > 0)?;
    if std::env::var_os("WATCHDOG_PID").is_some()
        && var("WATCHDOG_PID") != Some(u64::from(std::process::id()))
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` on the runtime forever: if the runtime stalls, the pings stop
/// and systemd restarts porter.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// Sockets passed by socket activation (`LISTEN_FDS`, for this process), as TCP
/// listeners. This reads and then unsets the environment variables, as
/// sd_listen_fds(3) does, so that no child inherits them.
///
/// # Safety
///
/// It unsets environment variables ([`std::env::remove_var`]): call it before any
/// other thread exists.
pub unsafe fn activated_listeners() -> std::io::Result<Vec<std::net::TcpListener>> {
    // SAFETY: no other thread exists yet (this function's own contract).
    let fds: Vec<RawFd> = unsafe { sd_notify::listen_fds_and_unset_env() }?.collect();
    fds.into_iter().map(listener).collect()
}

fn listener(fd: RawFd) -> std::io::Result<std::net::TcpListener> {
    check_stream_socket(fd)?;
    // SAFETY: `fd` comes from LISTEN_FDS for this very process (sd_notify checked
    // LISTEN_PID), so systemd passed it to us open and it is owned by nobody else in
    // this process; `check_stream_socket` verified it is a listening stream socket, so
    // a TcpListener wrapping (and eventually closing) it is sound.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) })
}

fn check_stream_socket(fd: RawFd) -> std::io::Result<()> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`, a live c_int; an
    // invalid fd makes it fail with EBADF rather than touch memory.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if kind != libc::SOCK_STREAM {
        return Err(std::io::Error::other(format!(
            "socket-activated fd {fd} is not a stream socket"
        )));
    }
    Ok(())
}
