//! Raft snapshots on disk: one file per group in `data/raft/snapshots/`, replaced
//! atomically (written to a temporary file, fsynced, renamed over the old one, the
//! directory fsynced). A quorum queue's state machine lives in memory; the snapshot is
//! what lets openraft purge the log behind it, so it must be durable before the purge:
//! [`SnapshotFiles::save`] returns only once it is.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The snapshot files of the node's groups.
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// The snapshot files under `dir` (created on the first save).
    pub fn new(dir: &Path) -> SnapshotFiles {
        SnapshotFiles {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, group: u64) -> PathBuf {
        self.dir.join(format!("{group:016x}.snap"))
    }

    /// Replaces group `group`'s snapshot with `bytes`, durably: when this returns, a
    /// crash leaves either the old file or the new one, never a part of either.
    pub fn save(&self, group: u64, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(group);
        let tmp = path.with_extension("snap.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Group `group`'s last saved snapshot, if it has one.
    pub fn load(&self, group: u64) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(group)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes group `group`'s snapshot (its queue was deleted).
    pub fn remove(&self, group: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(group)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_load_reads_remove_forgets() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("raftsnap-{}", std::process::id()));
        let files = SnapshotFiles::new(&dir.join("snapshots"));
        assert_eq!(files.load(7)?, None);
        files.save(7, b"one")?;
        files.save(7, b"two")?;
        assert_eq!(files.load(7)?.as_deref(), Some(&b"two"[..]));
        assert_eq!(files.load(8)?, None);
        files.remove(7)?;
        files.remove(7)?;
        assert_eq!(files.load(7)?, None);
        std::fs::remove_dir_all(&dir)
    }
}
