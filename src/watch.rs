//! Noticing that configuration files changed (policy files, TLS certificates), by polling
//! their metadata. Polling sees Kubernetes' atomic symlink swaps of mounted Secrets and
//! ConfigMaps, which inotify-based watchers often miss, and costs a few `stat` calls.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::SystemTime;

pub struct FileWatch {
    paths: Vec<PathBuf>,
    stamps: Vec<Option<Stamp>>,
}

/// What a path leads to, as far as a change matters. `stat` follows symlinks, so this is
/// the file at the end of a Secret volume's `key -> ..data/key` chain. The identity
/// (device, inode) changes with every swap of `..data` and every rename over the file,
/// whatever the new file's length and modification time (a copy that keeps times, a new
/// certificate of the same length); the change time, which no one can set, changes with
/// every rewrite in place; the modification time and length are kept for file systems
/// whose inode numbers are not stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    changed: (i64, i64),
    modified: SystemTime,
    len: u64,
}

impl FileWatch {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let stamps = paths.iter().map(stamp).collect();
        FileWatch { paths, stamps }
    }

    /// True when any path leads to another file than at the last call, or its file was
    /// written, or it appeared or disappeared.
    pub fn changed(&mut self) -> bool {
        let now: Vec<_> = self.paths.iter().map(stamp).collect();
        let changed = now != self.stamps;
        self.stamps = now;
        changed
    }
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        device: meta.dev(),
        inode: meta.ino(),
        changed: (meta.ctime(), meta.ctime_nsec()),
        modified: meta.modified().ok()?,
        len: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_a_rewrite_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut watch = FileWatch::new(vec![path.clone()]);
        assert!(!watch.changed());
        std::fs::write(&path, "longer").unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed());
    }

    #[test]
    fn notices_a_symlink_swap_to_a_file_of_the_same_length_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("v1"), dir.path().join("v2"));
        std::fs::write(&old, "same").unwrap();
        std::fs::write(&new, "SAME").unwrap();
        let time = std::fs::metadata(&old).unwrap().modified().unwrap();
        let file = std::fs::File::options().write(true).open(&new).unwrap();
        file.set_modified(time).unwrap();
        let link = dir.path().join("tls.crt");
        std::os::unix::fs::symlink(&old, &link).unwrap();
        let mut watch = FileWatch::new(vec![link.clone()]);
        assert!(!watch.changed());
        let tmp = dir.path().join("tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(watch.changed(), "the path leads to another file");
        assert!(!watch.changed());
    }
}
