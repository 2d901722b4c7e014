//! Noticing that configuration files changed (policy files, TLS certificates), by polling
//! their metadata. Polling sees Kubernetes' atomic symlink swaps of mounted Secrets and
//! ConfigMaps, which inotify-based watchers often miss, and costs a few `stat` calls.

use std::path::PathBuf;
use std::time::SystemTime;

pub struct FileWatch {
    paths: Vec<PathBuf>,
    stamps: Vec<Option<(SystemTime, u64)>>,
}

impl FileWatch {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let stamps = paths.iter().map(stamp).collect();
        FileWatch { paths, stamps }
    }

    /// True when any file's modification time or length differs from the last call.
    pub fn changed(&mut self) -> bool {
        let now: Vec<_> = self.paths.iter().map(stamp).collect();
        let changed = now != self.stamps;
        self.stamps = now;
        changed
    }
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
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
}
