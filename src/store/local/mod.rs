//! Local files: partial files in `storage.temp`, finished ones in `storage.root/ab/cd/<id>`.
//!
//! A partial file is `flock`ed while its upload is alive, so a sweep (at start-up or by
//! `porter gc`, possibly in another process) removes exactly the orphans: a file it can
//! lock has no writer. Temp and root share a filesystem, so the final move is one
//! atomic `rename` of a complete file. With `fsync`, the syncs come after the rename
//! (see `adopt`); a crash in between can leave a file under `root` whose bytes did not
//! reach the disk, and its `.unsent` marker makes the next start delete it.

mod resumable;

pub use resumable::LocalResumable;

use super::{Committed, Location, PartFile, Store, StoreError, Unsent};
use crate::config::Storage;
use crate::filesystem;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// Partial files end with this, so a sweep never touches anything else in `temp`.
const PART_SUFFIX: &str = ".part";
const UNSENT_SUFFIX: &str = ".unsent";

#[derive(Debug, Clone)]
pub struct LocalStore {
    cfg: Storage,
    /// Shared by every clone: which `ab/cd` folders are known durable.
    synced: Arc<SyncedFolders>,
    /// `temp` and `root` are on filesystems of this machine's own disks or memory (not
    /// NFS, SMB, FUSE), whose metadata changes never wait on a network.
    on_local_fs: bool,
}

/// The `ab/cd` folders whose entries in `ab/` and `root` this process has synced (one
/// bit for each of the 65,536). A file renamed into any other folder syncs them first
/// (with `fsync`), whoever made the folder: another upload a moment ago that has not
/// synced them yet, another instance, an earlier run. So no upload is reported
/// durable on a folder entry a crash could still lose; each folder pays the two extra
/// syncs once per process.
#[derive(Debug)]
struct SyncedFolders(Vec<AtomicU64>);

impl SyncedFolders {
    fn new() -> SyncedFolders {
        SyncedFolders((0..1024).map(|_| AtomicU64::new(0)).collect())
    }

    /// The bit of the folder of `id` (its first four hex digits), if it has one.
    fn bit(id: &str) -> Option<(usize, u64)> {
        let i = usize::from(u16::from_str_radix(id.get(0..4)?, 16).ok()?);
        Some((i / 64, 1 << (i % 64)))
    }

    fn contains(&self, id: &str) -> bool {
        Self::bit(id)
            .and_then(|(w, b)| {
                self.0
                    .get(w)
                    .map(|word| word.load(Ordering::Acquire) & b != 0)
            })
            .unwrap_or(false)
    }

    fn insert(&self, id: &str) {
        if let Some(word) = Self::bit(id).and_then(|(w, b)| self.0.get(w).map(|word| (word, b))) {
            word.0.fetch_or(word.1, Ordering::Release);
        }
    }
}

impl LocalStore {
    /// Creates `root` and `temp` if missing.
    pub fn open(cfg: &Storage) -> io::Result<LocalStore> {
        ensure_dir(&cfg.root, cfg.dir_mode)?;
        ensure_dir(&cfg.temp, cfg.dir_mode)?;
        Ok(LocalStore {
            cfg: cfg.clone(),
            synced: Arc::new(SyncedFolders::new()),
            on_local_fs: filesystem::of_path(&cfg.temp).is_local()
                && filesystem::of_path(&cfg.root).is_local(),
        })
    }

    /// Moves a complete file (open as `file`, at `temp`) to `root/ab/cd/<id>`, durably
    /// when `fsync` is set. On failure nothing is left under `root`.
    ///
    /// The rename comes before the syncs, so that the file's `fsync` commits its data,
    /// its inode and its new name together: a journaling filesystem (ext4's jbd2, XFS's
    /// log) commits everything pending at once, and the uploads that finish together
    /// share that commit (group commit, done by the filesystem); the folder's `fsync`
    /// then finds its change already committed. Synced the other way round, each upload
    /// waited for two commits of its own. Until both syncs return the app is not told.
    /// A crash in between: a new file's `.unsent` marker, made before the rename, makes
    /// the next start delete it; a resumable upload's bytes were synced by the requests
    /// that appended them.
    pub fn adopt(&self, file: &File, temp: &Path, id: &str) -> io::Result<Location> {
        let cfg = &self.cfg;
        let dir = self.final_dir(id);
        let dest = dir.join(id);
        // The `ab/cd` folder almost always exists: try the rename first, and make the
        // folders only when it says they are missing (one `stat` less per upload).
        match fs::rename(temp, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && temp.exists() => {
                ensure_dir(&dir, cfg.dir_mode)?;
                fs::rename(temp, &dest)?;
            }
            r => r?,
        }
        if cfg.fsync
            && let Err(e) = file.sync_all().and_then(|()| self.sync_final(&dir, id))
        {
            // Back where it was: a resumable upload's file is its only copy, and a
            // failed sync (EMFILE opening the folder, say) may pass on a retry.
            if fs::rename(&dest, temp).is_err() {
                let _ = fs::remove_file(&dest);
            }
            return Err(e);
        }
        Ok(Location {
            key: format!("{}/{}/{id}", &id[0..2], &id[2..4]),
            path: Some(dest),
            bucket: String::new(),
        })
    }

    /// The location of a finished file `id`, if it exists.
    pub fn existing(&self, id: &str) -> Option<Location> {
        let dest = self.final_dir(id).join(id);
        dest.is_file().then(|| Location {
            key: format!("{}/{}/{id}", &id[0..2], &id[2..4]),
            path: Some(dest),
            bucket: String::new(),
        })
    }

    /// Creates and locks `temp/<id>.unsent` (see `Unsent`).
    fn mark_unsent(&self, id: &str) -> io::Result<Unsent> {
        let marker = self.cfg.temp.join(format!("{id}{UNSENT_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.cfg.file_mode)
            .open(&marker)?;
        if let Err(e) = file.try_lock() {
            let _ = fs::remove_file(&marker);
            return Err(io::Error::other(e.to_string()));
        }
        Ok(Unsent::new(marker, file))
    }

    /// An unlocked `<id>.unsent` marker: its request died between committing the file and
    /// telling the app. Deletes the file and the marker; whether it did.
    fn settle_unsent(&self, marker: &Path) -> io::Result<bool> {
        let name = marker.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(id) = name.as_deref().and_then(|n| n.strip_suffix(UNSENT_SUFFIX)) else {
            return Ok(false);
        };
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let Ok(file) = File::open(marker) else {
            return Ok(false);
        };
        if file.try_lock().is_err() {
            return Ok(false);
        }
        match fs::remove_file(self.final_dir(id).join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::remove_file(marker)?;
        tracing::warn!(
            id,
            "deleted a file whose app was never told (porter stopped in between)"
        );
        Ok(true)
    }

    /// The storage settings.
    pub fn settings(&self) -> &Storage {
        &self.cfg
    }

    /// Makes the file's directory entry durable, and the folder's own entries in `ab`
    /// and `root` unless this process already synced them (`SyncedFolders`), or a
    /// crash could lose a fresh folder with the file in it.
    fn sync_final(&self, dir: &Path, id: &str) -> io::Result<()> {
        sync_dir(dir)?;
        if !self.synced.contains(id) {
            let ab = dir.parent().unwrap_or(dir);
            sync_dir(ab)?;
            sync_dir(&self.cfg.root)?;
            self.synced.insert(id);
        }
        Ok(())
    }

    fn final_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join(&id[0..2]).join(&id[2..4])
    }
}

/// Creates `dir` and missing parents with `mode` (umask would otherwise strip the
/// group bits `dir_mode` exists for).
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, mode)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store for LocalStore {
    fn quick_small_files(&self) -> bool {
        !self.cfg.fsync && self.on_local_fs
    }

    fn create(&self, id: Uuid) -> Result<Box<dyn PartFile>, StoreError> {
        let id = id.simple().to_string();
        let path = self.cfg.temp.join(format!("{id}{PART_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.cfg.file_mode)
            .open(&path)?;
        let part = LocalPart {
            file: Some(file),
            temp: path,
            id,
            store: self.clone(),
        };
        let f = part
            .file
            .as_ref()
            .ok_or(StoreError::Io(io::ErrorKind::Other.into()))?;
        f.set_permissions(fs::Permissions::from_mode(self.cfg.file_mode))?;
        f.try_lock()
            .map_err(|e| StoreError::Io(io::Error::other(e.to_string())))?;
        Ok(Box::new(part))
    }

    fn remove(&self, loc: &Location) -> io::Result<()> {
        let Some(path) = &loc.path else { return Ok(()) };
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn free_bytes(&self) -> io::Result<u64> {
        free_bytes(&self.cfg.temp)
    }

    fn sweep(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.cfg.temp)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(UNSENT_SUFFIX) {
                removed += usize::from(self.settle_unsent(&path)?);
                continue;
            }
            if !path.to_string_lossy().ends_with(PART_SUFFIX) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Free bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of
    // the right type; statvfs(3) fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rc == 0, so statvfs initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

struct LocalPart {
    /// `None` once committed (or moved out), so `Drop` knows nothing is left to delete.
    file: Option<File>,
    temp: PathBuf,
    id: String,
    store: LocalStore,
}

impl PartFile for LocalPart {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        match &mut self.file {
            Some(f) => Ok(f.write_all(buf)?),
            None => Err(StoreError::Io(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<Committed, StoreError> {
        // The marker first: a crash between it and the rename leaves nothing behind.
        let unsent = self.store.mark_unsent(&self.id)?;
        let file = self
            .file
            .take()
            .ok_or(StoreError::Io(io::ErrorKind::BrokenPipe.into()))?;
        let result = self.store.adopt(&file, &self.temp, &self.id);
        drop(file);
        if result.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        Ok(Committed {
            location: result?,
            unsent: Some(unsent),
        })
    }
}

impl Drop for LocalPart {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_folder_is_synced_once_and_odd_ids_always() {
        let synced = SyncedFolders::new();
        assert!(!synced.contains("ab12ffff"));
        synced.insert("ab12ffff");
        assert!(synced.contains("ab12000000"), "same ab/cd folder");
        assert!(
            !synced.contains("ab13ffff"),
            "a neighbour is its own folder"
        );
        synced.insert("ffffabcd");
        assert!(synced.contains("ffff0000") && synced.contains("ab12"));
        synced.insert("zz12");
        assert!(!synced.contains("zz12"), "no folder bit: synced every time");
        assert!(!synced.contains("a"));
    }

    fn store(dir: &Path) -> LocalStore {
        LocalStore::open(&Storage {
            root: dir.join("root"),
            temp: dir.join("tmp"),
            fsync: true,
            min_free: 0,
            file_mode: 0o640,
            dir_mode: 0o2750,
            s3: None,
            uploads_to_s3: false,
            state: None,
        })
        .unwrap()
    }

    #[test]
    fn commit_moves_into_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let id = Uuid::new_v4();
        let mut p = s.create(id).unwrap();
        p.write_all(b"hello").unwrap();
        let loc = p.commit().unwrap().location;
        let hex = id.simple().to_string();
        assert_eq!(loc.key, format!("{}/{}/{hex}", &hex[..2], &hex[2..4]));
        let path = loc.path.clone().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        s.remove(&loc).unwrap();
        assert!(!path.exists());
        s.remove(&loc).unwrap();
    }

    #[test]
    fn a_file_whose_app_was_never_told_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // While its request lives, the marker is locked: the sweep keeps the file.
        let mut p = s.create(Uuid::new_v4()).unwrap();
        p.write_all(b"x").unwrap();
        let committed = p.commit().unwrap();
        let live = committed.location.path.clone().unwrap();
        assert_eq!(s.sweep().unwrap(), 0);
        assert!(live.exists());
        // What a request that died before telling the app leaves: file + unlocked marker.
        let id = Uuid::new_v4().simple().to_string();
        let dead = s.final_dir(&id).join(&id);
        ensure_dir(dead.parent().unwrap(), 0o2750).unwrap();
        fs::write(&dead, b"orphan").unwrap();
        fs::write(dir.path().join("tmp").join(format!("{id}.unsent")), b"").unwrap();
        assert_eq!(s.sweep().unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists());
        // Told: the marker goes, the file stays the app's.
        let mut stored = crate::store::Stored::new(committed, std::sync::Arc::new(s.clone()));
        stored.keep();
        drop(stored);
        assert!(live.exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_part_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut p = s.create(Uuid::new_v4()).unwrap();
        p.write_all(b"x").unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn sweep_spares_live_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let live = s.create(Uuid::new_v4()).unwrap();
        fs::write(dir.path().join("tmp").join("orphan.part"), b"x").unwrap();
        fs::write(dir.path().join("tmp").join("other.txt"), b"x").unwrap();
        assert_eq!(s.sweep().unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 2);
        drop(live);
        assert!(s.free_bytes().unwrap() > 0);
    }
}
