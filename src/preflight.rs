//! The checks of a config that touch the world, beside its validation (which is pure:
//! `config::parse` reads nothing but the text): storage directories exist or can be
//! made and are writable, root and temp share a filesystem, key files and
//! certificates load, the secret file holds a usable key. `porter check` and `porter
//! serve` run them; `--online` reaches further (`lib::reach_bucket`, `reach_redis`).

use crate::config::{Check, Config, Problem};
use std::path::Path;

/// File-system checks shared by `porter check` and `porter serve` (after it created
/// the directories): directories exist or can be created, are writable, and root and
/// temp share a filesystem so the final rename is atomic.
pub fn check_paths(cfg: &Config) -> Vec<Problem> {
    let mut c = Check {
        problems: Vec::new(),
    };
    let s = &cfg.storage;
    let root_dev = writable_dir(&mut c, "storage.root", &s.root);
    let temp_dev = writable_dir(&mut c, "storage.temp", &s.temp);
    if let (Some(a), Some(b)) = (root_dev, temp_dev)
        && a != b
        && !s.uploads_to_s3
    {
        c.fail(
            "storage.temp",
            format!(
                "{} and storage.root {} are on different filesystems: finished files could not be renamed atomically",
                s.temp.display(),
                s.root.display()
            ),
        );
    }
    if let Some(s3) = &s.s3
        && (std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            || std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none())
    {
        for (key, path) in [
            ("storage.s3.access_key_file", &s3.access_key_file),
            ("storage.s3.secret_key_file", &s3.secret_key_file),
        ] {
            match std::fs::read_to_string(path) {
                Ok(k) if !k.trim().is_empty() => {}
                Ok(_) => c.fail(key, format!("{} is empty", path.display())),
                Err(e) => c.fail(
                    key,
                    format!(
                        "{}: {e} (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                        path.display()
                    ),
                ),
            }
        }
    }
    for (i, int) in cfg.internals.iter().enumerate() {
        if int.root.exists() && !int.root.is_dir() {
            c.fail(
                format!("internal[{i}].root"),
                format!("{} is not a directory", int.root.display()),
            );
        }
    }
    if let Err(problems) = crate::listen::tls::load(&cfg.server.tls, cfg.server.http2) {
        c.problems.extend(problems);
    }
    let secret = &cfg.backend.secret_file;
    if std::env::var_os("PORTER_SECRET").is_none() && secret.exists() {
        match std::fs::read(secret) {
            Ok(bytes) if crate::backend::sign::Secret::from_bytes(bytes.clone()).is_ok() => {}
            Ok(_) => c.fail(
                "backend.secret_file",
                format!("{} holds fewer than 32 bytes", secret.display()),
            ),
            Err(e) => c.fail(
                "backend.secret_file",
                format!("cannot read {}: {e}", secret.display()),
            ),
        }
    }
    c.problems
}

/// Returns the device of `dir`, or of its nearest existing ancestor when it will be created.
fn writable_dir(c: &mut Check, key: &str, dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => {
                let cpath = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
                // SAFETY: `cpath` is a valid NUL-terminated string that outlives the call;
                // access(2) only reads it.
                let ok = unsafe { libc::access(cpath.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
                if !ok {
                    c.fail(key, format!("{} is not writable", probe.display()));
                }
                return Some(m.dev());
            }
            Ok(_) => {
                c.fail(key, format!("{} is not a directory", probe.display()));
                return None;
            }
            Err(_) => match probe.parent() {
                Some(parent) => probe = parent,
                None => {
                    c.fail(key, format!("{} cannot be created", dir.display()));
                    return None;
                }
            },
        }
    }
}
