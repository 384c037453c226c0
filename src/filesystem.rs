//! What kind of filesystem a path or a descriptor lives on, by its `statfs` magic
//! number. porter does small file work right on an event loop (an open, a whole read
//! of a small file, finishing a small upload) only where that cannot wait on a
//! network: a filesystem of this machine's own disks or memory. NFS, SMB, FUSE and
//! anything unknown count as possibly remote, and their work goes to the blocking pool.

use std::os::fd::AsFd;
use std::path::Path;

/// Where a filesystem keeps its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// tmpfs or ramfs: reads never wait on a device.
    Memory,
    /// ext2/3/4, XFS, btrfs, f2fs, ZFS, overlayfs (containers).
    LocalDisk,
    /// Anything else, or unknown: NFS, SMB, FUSE, procfs…
    Remote,
}

impl Kind {
    /// Memory or a local disk: metadata work there never waits on a network.
    pub fn is_local(self) -> bool {
        self != Kind::Remote
    }

    fn of_magic(magic: u32) -> Kind {
        const MEMORY: [u32; 2] = [
            0x0102_1994, // tmpfs
            0x8584_58F6, // ramfs
        ];
        const LOCAL_DISK: [u32; 6] = [
            0xEF53,      // ext2/3/4
            0x5846_5342, // XFS
            0x9123_683E, // btrfs
            0xF2F5_2010, // f2fs
            0x2FC1_2FC1, // ZFS
            0x794C_7630, // overlayfs
        ];
        if MEMORY.contains(&magic) {
            Kind::Memory
        } else if LOCAL_DISK.contains(&magic) {
            Kind::LocalDisk
        } else {
            Kind::Remote
        }
    }
}

/// The kind of the filesystem holding `path`; `Remote` if it cannot be told. (The magic
/// numbers are 32-bit; `f_type` is wider on some targets and signed on others, so it is
/// compared truncated, never sign-extended.)
pub fn of_path(path: &Path) -> Kind {
    rustix::fs::statfs(path).map_or(Kind::Remote, |st| Kind::of_magic(st.f_type as u32))
}

/// The kind of the filesystem holding the open file `fd`; `Remote` if it cannot be told.
pub fn of_file(fd: impl AsFd) -> Kind {
    rustix::fs::fstatfs(fd).map_or(Kind::Remote, |st| Kind::of_magic(st.f_type as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Disks and memory count as local; anything unknown (procfs here) does not.
    #[test]
    fn local_filesystems_by_magic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(of_path(dir.path()).is_local());
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(of_path(Path::new("/dev/shm")), Kind::Memory);
            let f = tempfile::tempfile_in("/dev/shm").unwrap();
            assert_eq!(of_file(&f), Kind::Memory);
        }
        assert_eq!(of_path(Path::new("/proc")), Kind::Remote);
        assert_eq!(of_path(Path::new("/no/such/dir")), Kind::Remote);
    }
}
