//! Where an `X-Accel-Redirect` or `X-Sendfile` target points, resolved beneath its root
//! without ever leaving it (docs/guides/downloads.md). Every refusal is a 404 plus a warning log line.

use crate::route::percent_decode;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// A file location below one of the configured roots (not yet checked on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the `[[internal]]` (or `[[static]]`) entry it belongs to.
    pub entry: usize,
    pub path: PathBuf,
}

/// A location table: `(prefix, root)` pairs, prefixes normalised without a trailing `/`.
pub trait Locations {
    fn prefix(&self, i: usize) -> Option<(&str, &Path)>;
}

impl Locations for [(String, PathBuf)] {
    fn prefix(&self, i: usize) -> Option<(&str, &Path)> {
        self.get(i).map(|(p, r)| (p.as_str(), r.as_path()))
    }
}

/// Joins already-decoded `/`-separated segments under `root`, refusing `.`, `..` and
/// NUL. A request path is decoded once, by routing: decoding it again here would turn
/// `%2541` into `A` (a second parser's reading of the same name).
pub fn join_segments(root: &Path, rest: &[u8]) -> Result<PathBuf, String> {
    if rest.contains(&0) {
        return Err("the target contains a NUL byte".into());
    }
    let mut path = root.to_path_buf();
    for seg in rest.split(|b| *b == b'/').filter(|s| !s.is_empty()) {
        if seg == b"." || seg == b".." {
            return Err("the target contains a dot segment".into());
        }
        path.push(OsStr::from_bytes(seg));
    }
    Ok(path)
}

fn decode(value: &str) -> Result<Vec<u8>, String> {
    let raw = value.split('?').next().unwrap_or("");
    let decoded = percent_decode(raw.as_bytes());
    if decoded.contains(&0) {
        return Err("the target contains a NUL byte".into());
    }
    Ok(decoded)
}

/// `X-Accel-Redirect: /prefix/rest` (percent-decoded, query ignored) → `root/rest`.
pub fn by_prefix(entries: &[(String, PathBuf)], value: &str) -> Result<Candidate, String> {
    let decoded = decode(value)?;
    let best = (0..entries.len())
        .filter_map(|i| entries.prefix(i).map(|(p, r)| (i, p, r)))
        .filter(|(_, p, _)| {
            let p = p.as_bytes();
            decoded.starts_with(p) && decoded.get(p.len()) == Some(&b'/')
        })
        .max_by_key(|(_, p, _)| p.len());
    let Some((entry, prefix, root)) = best else {
        return Err("the target matches no [[internal]] prefix".into());
    };
    let path = join_segments(root, &decoded[prefix.len()..])?;
    Ok(Candidate { entry, path })
}

/// `X-Sendfile: /abs/path` (percent-decoded) → that path, if under some root.
pub fn by_path(entries: &[(String, PathBuf)], value: &str) -> Result<Candidate, String> {
    let decoded = decode(value)?;
    if decoded.first() != Some(&b'/') {
        return Err("X-Sendfile needs an absolute path".into());
    }
    let path = join_segments(Path::new("/"), &decoded)?;
    entries
        .iter()
        .enumerate()
        .find(|(_, (_, root))| path.starts_with(root))
        .map(|(entry, _)| Candidate {
            entry,
            path: path.clone(),
        })
        .ok_or_else(|| "X-Sendfile points outside every [[internal]] root".to_string())
}

/// Opens `candidate` if, with every symlink resolved, it is a regular file beneath
/// `root` (blocking only on a filesystem that can block: see `download::open`).
///
/// First in one step: `openat2` with `RESOLVE_BENEATH` from the root's directory, so
/// the kernel resolves the path and refuses any step out of the root as it opens. It
/// also refuses what stays inside only in the end (an absolute symlink that points back
/// into the root, a `..` that climbs out and back), and it is missing on old kernels or
/// under some seccomp filters: then, and for every refusal, the second way decides and
/// words the reason: every symlink resolved by `canonicalize`, the real path checked
/// against the root's, then opened, and the opened file's own path (as the kernel
/// names it in `/proc/self/fd`) checked again. Without that last check a symlink
/// swapped in between the first check and the open could lead out, and a client that
/// can write under a root could steer requests onto this way on purpose. Both ways
/// accept exactly the files whose real path lies beneath the root's.
pub fn open_beneath(root: &Path, candidate: &Path) -> Result<(File, Metadata), String> {
    let file = match in_one_step(root, candidate) {
        Ok(file) => file,
        Err(_) => by_real_path(root, candidate)?,
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", candidate.display()));
    }
    Ok((file, meta))
}

/// Non-blocking: the open may run on a worker, and opening a FIFO (or a device) would
/// wait for a writer; such a file is refused by `open_beneath`. Regular files ignore
/// the flag, so the reads that follow (on any thread) are unchanged.
fn flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

fn in_one_step(root: &Path, candidate: &Path) -> rustix::io::Result<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let rel = candidate
        .strip_prefix(root)
        .map_err(|_| rustix::io::Errno::INVAL)?;
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let fd = rustix::fs::openat2(&dir, rel, flags(), Mode::empty(), how)?;
    Ok(File::from(fd))
}

fn by_real_path(root: &Path, candidate: &Path) -> Result<File, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("root {}: {e}", root.display()))?;
    let real = candidate
        .canonicalize()
        .map_err(|e| format!("{}: {e}", candidate.display()))?;
    if !real.starts_with(&root) || real.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{} resolves outside {}",
            candidate.display(),
            root.display()
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY) // as `flags`
        .open(&real)
        .map_err(|e| format!("{}: {e}", real.display()))?;
    opened_within(&file, &root).map_err(|e| format!("{}: {e}", candidate.display()))?;
    Ok(file)
}

/// Whether the file open as `file` lies beneath `root` (a real path), by the path the
/// kernel keeps for the descriptor: what was opened, whatever the name led to then.
fn opened_within(file: &File, root: &Path) -> Result<(), String> {
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| format!("cannot tell what was opened: {e}"))?;
    if !opened.starts_with(root) {
        return Err(format!(
            "swapped for a way out of {} while it was opened",
            root.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(String, PathBuf)> {
        vec![
            ("/protected".into(), "/srv/files".into()),
            ("/protected/big".into(), "/mnt/big".into()),
        ]
    }

    #[test]
    fn prefixes() {
        let e = entries();
        assert_eq!(
            by_prefix(&e, "/protected/a/b.txt?x=1").unwrap().path,
            PathBuf::from("/srv/files/a/b.txt")
        );
        assert_eq!(
            by_prefix(&e, "/protected/big/x").unwrap(),
            Candidate {
                entry: 1,
                path: "/mnt/big/x".into()
            }
        );
        assert_eq!(
            by_prefix(&e, "/protected/caf%C3%A9").unwrap().path,
            PathBuf::from("/srv/files/café")
        );
        for bad in [
            "/protected/../etc/passwd",
            "/protected/%2e%2e/x",
            "/protected/a/./b",
            "/protected/a%00b",
            "/other/x",
            "/protectedx/y",
            "/protected",
        ] {
            assert!(by_prefix(&e, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_paths() {
        let e = entries();
        assert_eq!(by_path(&e, "/srv/files/a").unwrap().entry, 0);
        assert!(by_path(&e, "/srv/files/../../etc/passwd").is_err());
        assert!(by_path(&e, "/srv/filesystem/x").is_err());
        assert!(by_path(&e, "/etc/passwd").is_err());
        assert!(by_path(&e, "relative").is_err());
    }

    #[test]
    fn symlink_escape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real_root = dir.path().join("root");
        std::fs::create_dir_all(real_root.join("sub")).unwrap();
        std::fs::write(real_root.join("ok.txt"), b"ok").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        let link =
            |to: &Path, at: &str| std::os::unix::fs::symlink(to, real_root.join(at)).unwrap();
        link(&dir.path().join("secret"), "link");
        link(Path::new("ok.txt"), "inner");
        link(&real_root.join("ok.txt"), "absolute_inside");
        link(Path::new("../root/ok.txt"), "out_and_back");
        link(Path::new("../secret"), "relative_out");
        link(dir.path(), "dir_out");
        link(Path::new("/proc/self/root/etc/hostname"), "magic");
        // The configured root may itself be a symlink (a deploy's `current`).
        let root = dir.path().join("current");
        std::os::unix::fs::symlink(&real_root, &root).unwrap();
        let opens = |rest: &str| open_beneath(&root, &root.join(rest)).is_ok();
        for ok in ["ok.txt", "inner", "absolute_inside", "out_and_back"] {
            assert!(opens(ok), "{ok}");
        }
        for bad in [
            "link",
            "relative_out",
            "dir_out/secret",
            "magic",
            "missing",
            "sub",
            "",
        ] {
            assert!(!opens(bad), "{bad:?}");
        }
        // The second way's last check looks at what was opened, not at the name.
        let real_root = real_root.canonicalize().unwrap();
        let inside = File::open(real_root.join("ok.txt")).unwrap();
        assert!(opened_within(&inside, &real_root).is_ok());
        let outside = File::open(dir.path().join("secret")).unwrap();
        assert!(opened_within(&outside, &real_root).is_err());
        // The plain case takes the one-step way (openat2), not the fallback.
        assert!(in_one_step(&root, &root.join("ok.txt")).is_ok());
        assert!(in_one_step(&root, &root.join("absolute_inside")).is_err());
        assert!(in_one_step(&root, &root.join("dir_out/secret")).is_err());
    }
}
