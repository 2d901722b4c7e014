//! The database file's storage backend: redb's own file backend, with a switch that
//! makes the disk act full, for rehearsing a full disk (the tests do) without filling
//! one. The spool opens its database through [`open`] only, so a rehearsal goes through
//! the very code that serves mail.

use redb::backends::FileBackend;
use redb::{Builder, Database, DatabaseError, StorageBackend};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// While on, every write to the spool's database file and every growth of it fails
/// with ENOSPC (`ErrorKind::StorageFull`), as on a full file system. Off by default;
/// nothing in a running relay turns it on.
#[derive(Debug, Clone, Default)]
pub struct DiskFullSwitch(Arc<AtomicBool>);

impl DiskFullSwitch {
    pub fn set_full(&self, full: bool) {
        self.0.store(full, Ordering::SeqCst);
    }

    fn is_full(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        match self.is_full() {
            true => Err(io::Error::from(io::ErrorKind::StorageFull)),
            false => Ok(()),
        }
    }
}

/// redb's file backend behind the switch.
#[derive(Debug)]
struct Backend {
    file: FileBackend,
    switch: DiskFullSwitch,
}

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }

    /// Shrinking frees space and works on a full disk too.
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.file.len()? {
            self.switch.check()?;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.file.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.switch.check()?;
        self.file.write(offset, data)
    }
}

/// Opens (or creates) the database at `path`; like `Database::create`, and behind
/// `switch` when there is one.
pub(super) fn open(
    path: &Path,
    switch: Option<&DiskFullSwitch>,
    cache_size: usize,
) -> Result<Database, DatabaseError> {
    let mut builder = Builder::new();
    builder.set_cache_size(cache_size);
    let Some(switch) = switch else {
        return builder.create(path);
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = Backend {
        file: FileBackend::new(file)?,
        switch: switch.clone(),
    };
    builder.create_with_backend(backend)
}
