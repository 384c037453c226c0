//! Where an `X-Accel-Redirect` or `X-Sendfile` target points, resolved beneath its root
//! without ever leaving it (docs/guides/downloads.md). Every refusal is a 404 plus a warning log line.

use crate::route::percent_decode;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
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
/// `root` (blocking).
pub fn open_beneath(root: &Path, candidate: &Path) -> Result<(File, Metadata), String> {
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
    // Non-blocking: the open runs on a worker, and opening a FIFO (or a device) would
    // wait for a writer; such a file is refused just below. Regular files ignore the
    // flag, so the reads that follow are unchanged.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&real)
        .map_err(|e| format!("{}: {e}", real.display()))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    Ok((file, meta))
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
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.txt"), b"ok").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("ok.txt", root.join("inner")).unwrap();
        assert!(open_beneath(&root, &root.join("ok.txt")).is_ok());
        assert!(open_beneath(&root, &root.join("inner")).is_ok());
        assert!(open_beneath(&root, &root.join("link")).is_err());
        assert!(open_beneath(&root, &root.join("missing")).is_err());
        assert!(open_beneath(&root, &root).is_err(), "a directory");
    }
}
