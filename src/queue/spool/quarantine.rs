//! The quarantine of `sluice standalone`: held originals in `quarantine/` inside the
//! spool directory (covered by the spool's lock), one file per message.
//!
//! A file `ID.held` is the line `sluice-held 1`, the record as one line of JSON (serde
//! escapes every line break inside it), a line feed, then the content byte for byte.
//! `hold` writes `.tmp-ID-N`, fsyncs it, renames it into place and fsyncs the directory,
//! so that it returns `Ok` only once the file and its name are durable, and a crash
//! leaves either the whole file or none (leftover temporary files are removed at open).
//! Not in the redb spool: held messages are rare, may be large, and stay for days; a
//! file each keeps them out of the queue's group commit and its reopen-after-error path.
//!
//! Reads trust the disk no more than NATS: the record is read no further than
//! [`max_record_json`] bytes, checked ([`check_record`]) and must name the file's id, and
//! the content must be exactly the size the record says, within the limits.

use crate::envelope::QueueId;
use crate::queue::QueueError;
use crate::queue::jetstream::codec::EnvelopeLimits;
use crate::queue::quarantine::{
    HeldMessage, Quarantine, check_record, decode_record, max_record_json, normalised, sort,
};
use async_trait::async_trait;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const DIR: &str = "quarantine";
const SUFFIX: &str = ".held";
const TMP_PREFIX: &str = ".tmp-";
const MAGIC: &[u8] = b"sluice-held 1\n";
/// The most entries `list` returns, as the JetStream queue's `list_limit`.
const LIST_LIMIT: usize = 10_000;

/// Held messages in `SPOOL/quarantine/`.
pub struct SpoolQuarantine {
    dir: PathBuf,
    limits: EnvelopeLimits,
    next_tmp: AtomicU64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> QueueError {
    let context = format!("{what} {}", path.display());
    if e.kind() == ErrorKind::StorageFull {
        QueueError::full(context, Some(e.into()))
    } else {
        QueueError::unavailable(context, e)
    }
}

fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync directory", dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::unavailable("quarantine I/O failed", e))?
}

impl SpoolQuarantine {
    /// Opens (creating it if needed) the quarantine of the spool in `spool_dir`; what is
    /// read back must fit `limits` (the relay's `limits`).
    pub async fn open(spool_dir: &Path, limits: EnvelopeLimits) -> Result<Self, QueueError> {
        let (spool_dir, dir) = (spool_dir.to_path_buf(), spool_dir.join(DIR));
        let open_dir = dir.clone();
        blocking(move || {
            fs::create_dir_all(&open_dir)
                .map_err(|e| io_error("cannot create quarantine directory", &open_dir, e))?;
            sync_dir(&spool_dir)?;
            let entries = fs::read_dir(&open_dir)
                .map_err(|e| io_error("cannot read quarantine directory", &open_dir, e))?;
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(entry.path());
                }
            }
            Ok(())
        })
        .await?;
        Ok(SpoolQuarantine {
            dir,
            limits,
            next_tmp: AtomicU64::new(0),
        })
    }

    /// The directory the held messages are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &QueueId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }
}

/// Reads the record at the start of `file` (named for `id`, `len` bytes long), checked.
fn read_record(
    file: &mut File,
    id: &QueueId,
    len: u64,
    limits: &EnvelopeLimits,
) -> Result<(HeldMessage, u64), String> {
    let most = (MAGIC.len() + max_record_json(limits) + 1) as u64;
    let mut head = Vec::new();
    Read::by_ref(file)
        .take(most)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let rest = head.strip_prefix(MAGIC).ok_or("not a held message file")?;
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no end of the record within its bound")?;
    let record = decode_record(&rest[..end], limits)?;
    if &record.envelope.id != id {
        return Err(format!("the record is of {}", record.envelope.id));
    }
    let offset = (MAGIC.len() + end + 1) as u64;
    if len.checked_sub(offset) != Some(record.size) {
        return Err(format!(
            "{} bytes of content, the record says {}",
            len.saturating_sub(offset),
            record.size
        ));
    }
    Ok((record, offset))
}

/// One held message from its file; `None` when there is no such file.
fn read_held(
    path: &Path,
    id: &QueueId,
    limits: &EnvelopeLimits,
    with_body: bool,
) -> Result<Option<(HeldMessage, Vec<u8>)>, QueueError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot open held message", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| io_error("cannot read held message", path, e))?
        .len();
    let (record, offset) = read_record(&mut file, id, len, limits).map_err(|e| {
        QueueError::corrupt(path.display(), format!("held message is invalid: {e}"))
    })?;
    if !with_body {
        return Ok(Some((record, Vec::new())));
    }
    // The size was checked against the limits and the file's length.
    let mut body = Vec::with_capacity(record.size as usize);
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| {
            Read::by_ref(&mut file)
                .take(record.size)
                .read_to_end(&mut body)
        })
        .map_err(|e| io_error("cannot read held message", path, e))?;
    if body.len() as u64 != record.size {
        return Err(QueueError::unavailable_because(format!(
            "held message {} changed while read",
            path.display()
        )));
    }
    Ok(Some((record, body)))
}

#[async_trait]
impl Quarantine for SpoolQuarantine {
    async fn hold(&self, record: &HeldMessage, body: &[u8]) -> Result<(), QueueError> {
        let record = normalised(record, body);
        check_record(&record, &self.limits).map_err(|e| {
            QueueError::corrupt(&record.envelope.id, format!("cannot hold it: {e}"))
        })?;
        let json = serde_json::to_vec(&record).map_err(|e| QueueError::Encode(Arc::new(e)))?;
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let id = &record.envelope.id;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{id}-{n}"));
        let (path, dir, body) = (self.path(id), self.dir.clone(), body.to_vec());
        blocking(move || {
            let write = || -> std::io::Result<()> {
                let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                file.write_all(MAGIC)?;
                file.write_all(&json)?;
                file.write_all(b"\n")?;
                file.write_all(&body)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)
            };
            if let Err(e) = write() {
                let _ = fs::remove_file(&tmp);
                return Err(io_error("cannot write held message", &path, e));
            }
            sync_dir(&dir)
        })
        .await?;
        tracing::info!(queue_id = %id, reason = %record.reason, "message held in the quarantine");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<HeldMessage>, QueueError> {
        let (dir, limits) = (self.dir.clone(), self.limits);
        let mut records = blocking(move || {
            let entries =
                fs::read_dir(&dir).map_err(|e| io_error("cannot read quarantine", &dir, e))?;
            let mut records = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_error("cannot read quarantine", &dir, e))?;
                let name = entry.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(SUFFIX))
                    .and_then(QueueId::parse)
                else {
                    continue;
                };
                match read_held(&entry.path(), &id, &limits, false) {
                    Ok(Some((record, _))) => records.push(record),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "invalid held message skipped"),
                }
                if records.len() >= LIST_LIMIT {
                    break;
                }
            }
            Ok(records)
        })
        .await?;
        sort(&mut records);
        Ok(records)
    }

    async fn get(&self, id: &QueueId) -> Result<Option<(HeldMessage, Vec<u8>)>, QueueError> {
        let (path, id, limits) = (self.path(id), id.clone(), self.limits);
        blocking(move || read_held(&path, &id, &limits, true)).await
    }

    async fn delete(&self, id: &QueueId) -> Result<bool, QueueError> {
        let (path, dir) = (self.path(id), self.dir.clone());
        let deleted = blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir).map(|()| true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("cannot delete held message", &path, e)),
        })
        .await?;
        if deleted {
            tracing::info!(queue_id = %id, "held message deleted");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::quarantine::contract::{Harness, quarantine_contract_tests, record};
    use crate::queue::spool::Spool;
    use std::sync::Arc;
    use tempfile::TempDir;

    #[derive(Default)]
    struct SpoolHarness {
        dir: Option<TempDir>,
        queue: tokio::sync::OnceCell<Arc<Spool>>,
    }

    impl SpoolHarness {
        fn new() -> Self {
            SpoolHarness {
                dir: Some(tempfile::tempdir().unwrap()),
                ..Default::default()
            }
        }

        fn spool_dir(&self) -> &Path {
            self.dir.as_ref().unwrap().path()
        }
    }

    #[async_trait]
    impl Harness for SpoolHarness {
        async fn open(&self) -> Arc<dyn Quarantine> {
            let limits = EnvelopeLimits::default();
            Arc::new(
                SpoolQuarantine::open(self.spool_dir(), limits)
                    .await
                    .unwrap(),
            )
        }

        async fn plant(&self, name: &str, record_json: &str, body: &[u8]) {
            let mut content = MAGIC.to_vec();
            content.extend_from_slice(record_json.as_bytes());
            content.push(b'\n');
            content.extend_from_slice(body);
            let path = self.spool_dir().join(DIR).join(format!("{name}{SUFFIX}"));
            fs::write(path, content).unwrap();
        }

        async fn queue(&self) -> Arc<dyn crate::queue::QueueAdmin> {
            let dir = self.spool_dir().join("queue");
            let spool = self
                .queue
                .get_or_init(async || Arc::new(Spool::open(&dir).await.unwrap()))
                .await;
            spool.clone()
        }
    }

    quarantine_contract_tests!(SpoolHarness::new());

    #[tokio::test]
    async fn hold_leaves_only_whole_files_and_open_clears_leftovers() {
        let harness = SpoolHarness::new();
        let q = harness.open().await;
        let held = record(&["a"], 1, b"body");
        q.hold(&held, b"body").await.unwrap();
        let dir = harness.spool_dir().join(DIR);
        fs::write(
            dir.join(format!("{TMP_PREFIX}{}-0", held.envelope.id)),
            b"half",
        )
        .unwrap();
        fs::write(dir.join("notes.txt"), b"not ours").unwrap();
        let q = harness.open().await;
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [format!("{}{SUFFIX}", held.envelope.id), "notes.txt".into()]
        );
        assert_eq!(q.list().await.unwrap(), std::slice::from_ref(&held));
        // A file cut short (a disk that lied) is refused, not read past its end.
        let path = dir.join(format!("{}{SUFFIX}", held.envelope.id));
        let content = fs::read(&path).unwrap();
        fs::write(&path, &content[..content.len() - 1]).unwrap();
        assert!(q.get(&held.envelope.id).await.is_err());
        assert!(q.list().await.unwrap().is_empty());
        assert!(harness.queue().await.list().await.unwrap().is_empty());
    }
}
