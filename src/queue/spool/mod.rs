//! The embedded spool: the crash-safe [`Queue`] of `sluice standalone`, in one directory.
//!
//! * **Storage**: one redb database (see [`store`] for the tables). Every change is one
//!   write transaction committed with `Durability::Immediate`, so `enqueue` returns `Ok`
//!   only once the message is fsync'd, and after `kill -9` redb's recovery brings back
//!   exactly the last committed transaction: no acknowledged message is lost, and no
//!   half-written one is visible.
//! * **Group commit**: all writes (enqueue, ack, defer, remove) go through a single committer
//!   thread that puts every request waiting at that moment into one transaction (see
//!   [`committer`]); many concurrent SMTP sessions share each fsync.
//! * **Scheduling**: an in-memory [`index`] of due times and leases, rebuilt at open from
//!   a small table. Leases are never written down: after a crash every leased message is
//!   due again (at-least-once delivery). Hence `Lease::redelivered` covers the leases
//!   that ran out in this process only: after a crash nothing tells the spool that a
//!   message was being delivered, and its next lease is not marked. Nor are retries
//!   written (`retry_now` moves a due time in the index only): a retry is a hint, and
//!   after a restart the stored schedule applies.
//! * **Storage errors**: after an I/O error (a full disk) the committer drops the
//!   database, answers with the error (`Full` for ENOSPC, so the ingress says 452) and
//!   opens it again every half second until that works, re-running redb's recovery;
//!   no restart is needed once space is back (see [`committer`]). [`DiskFullSwitch`]
//!   rehearses a full disk.
//! * **Exclusivity**: the directory is locked (`lock` file, `flock`) while open; a
//!   second opener, in this process or another, gets a clear error.
//!
//! No runtime thread ever touches the disk: writes go to the committer thread, reads
//! run on `spawn_blocking`.

mod committer;
mod disk;
mod index;
mod quarantine;
mod store;
#[cfg(test)]
mod tests;

use crate::envelope::{Envelope, QueueId, unix_ms};
use crate::queue::{Lease, Queue, QueueAdmin, QueueEntry, QueueError, QueueStats};
use crate::smtp::address::Recipient;
use async_trait::async_trait;
use committer::{Done, Location, Op, Request};
pub use disk::DiskFullSwitch;
use index::{Index, Removal};
pub use quarantine::SpoolQuarantine;
use redb::Database;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, oneshot};

/// The name of the lock file inside the spool directory.
const LOCK_FILE: &str = "lock";

/// State shared between the spool handle and its committer thread.
pub(super) struct Shared {
    index: Mutex<Index>,
    /// Woken when a message may have become takeable (enqueue, defer, failed settle, close).
    notify: Notify,
    commits: AtomicU64,
    operations: AtomicU64,
    /// Times the database was opened again after a storage error.
    reopens: AtomicU64,
    /// The database for readers; the committer swaps it when it reopens it.
    slot: Mutex<Slot>,
}

/// Where readers find the database.
pub(super) enum Slot {
    Open(Arc<Database>),
    /// Dropped after a storage error, being opened again; reads fail with this error.
    Reopening(QueueError),
    Closed,
}

impl Shared {
    fn lock_index(&self) -> MutexGuard<'_, Index> {
        // The index is consistent between statements; a panic elsewhere cannot tear it.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }
}

/// Counters of the spool, for metrics and for the group-commit tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Write transactions committed (each one fsync round).
    pub commits: u64,
    /// Enqueues, acks, defers and removals committed; `operations / commits` is the mean batch size.
    pub operations: u64,
    /// Messages in the queue now.
    pub messages: usize,
    /// Times the database was opened again after a storage error.
    pub reopens: u64,
}

/// The embedded spool. Open it with [`Spool::open`]; close it with [`Spool::close`] (or
/// drop it, which also commits everything already sent and waits for the committer).
pub struct Spool {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` once closed.
    requests: Mutex<Option<Sender<Request>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Held (and locked) while open; declared last so it is released last.
    lock: Mutex<Option<File>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> QueueError {
    let context = format!("{what} {}", path.display());
    if e.kind() == std::io::ErrorKind::StorageFull {
        QueueError::full(context, Some(e.into()))
    } else {
        QueueError::unavailable(context, e)
    }
}

/// Takes the directory's lock file, writing our pid into it for the next opener's error.
fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("cannot open spool lock", &path, e))?;
    match file.try_lock() {
        Ok(()) => {
            let pid = std::process::id();
            let write = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{pid}"));
            write.map_err(|e| io_error("cannot write spool lock", &path, e))?;
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            Err(QueueError::unavailable_because(format!(
                "spool {} is already open in another process or handle{by}",
                dir.display()
            )))
        }
        Err(TryLockError::Error(e)) => Err(io_error("cannot lock spool", &path, e)),
    }
}

impl Spool {
    /// Opens the spool in `dir`, creating the directory and database if needed, recovering
    /// after a crash if needed, and locking the directory against a second opener.
    pub async fn open(dir: &Path) -> Result<Spool, QueueError> {
        Self::open_with(dir, None).await
    }

    /// [`Spool::open`] on a disk that `switch` can make full: for rehearsing a full disk.
    pub async fn open_with(
        dir: &Path,
        switch: Option<DiskFullSwitch>,
    ) -> Result<Spool, QueueError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, switch))
            .await
            .map_err(|e| QueueError::unavailable("spool open failed", e))?
    }

    fn open_blocking(dir: PathBuf, switch: Option<DiskFullSwitch>) -> Result<Spool, QueueError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error("cannot create spool directory", &dir, e))?;
        let lock_file = lock_dir(&dir)?;
        let db = Arc::new(store::open_database(&dir, switch.as_ref())?);
        let mut index = Index::default();
        for (id, due_at_ms, size) in store::load_schedule(&db)? {
            index.load(id, due_at_ms, size);
        }
        let messages = index.len();
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            notify: Notify::new(),
            commits: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            slot: Mutex::new(Slot::Open(db.clone())),
        });
        let (sender, receiver) = std::sync::mpsc::channel();
        let location = Location {
            dir: dir.clone(),
            switch,
        };
        let committer = committer::spawn(db, location, shared.clone(), receiver)
            .map_err(|e| QueueError::unavailable("cannot start spool committer", e))?;
        tracing::info!(dir = %dir.display(), messages, "spool opened");
        Ok(Spool {
            dir,
            shared,
            requests: Mutex::new(Some(sender)),
            committer: Mutex::new(Some(committer)),
            lock: Mutex::new(Some(lock_file)),
        })
    }

    /// The directory this spool lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            operations: self.shared.operations.load(Ordering::Relaxed),
            messages: self.shared.lock_index().len(),
            reopens: self.shared.reopens.load(Ordering::Relaxed),
        }
    }

    /// Stops the spool: everything already sent to the committer is committed and
    /// answered, later calls fail with [`QueueError::Closed`], the database is closed and
    /// the directory unlocked, so it can be opened again at once.
    pub async fn close(&self) {
        drop(lock(&self.requests).take());
        let committer = lock(&self.committer).take();
        if let Some(handle) = committer {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let slot = std::mem::replace(&mut *self.shared.lock_slot(), Slot::Closed);
        if let Slot::Open(mut db) = slot {
            // Readers still running hold a reference; the database closes with the last.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        let _ = tokio::task::spawn_blocking(move || drop(db)).await;
                        break;
                    }
                    Err(shared) if tokio::time::Instant::now() < deadline => {
                        db = shared;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => {
                        tracing::warn!("spool closed with reads still running");
                        break;
                    }
                }
            }
        }
        drop(lock(&self.lock).take());
        self.shared.notify.notify_waiters();
        tracing::info!(dir = %self.dir.display(), "spool closed");
    }

    fn database(&self) -> Result<Arc<Database>, QueueError> {
        match &*self.shared.lock_slot() {
            Slot::Open(db) => Ok(db.clone()),
            Slot::Reopening(e) => Err(store::copy_error(e)),
            Slot::Closed => Err(QueueError::Closed),
        }
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.database()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| QueueError::unavailable("spool read failed", e))?
    }

    /// Hands `op` to the committer.
    fn submit(&self, op: Op) -> Result<oneshot::Receiver<Result<Done, QueueError>>, QueueError> {
        let (reply, answer) = oneshot::channel();
        let requests = lock(&self.requests);
        let sender = requests.as_ref().ok_or(QueueError::Closed)?;
        sender
            .send(Request { op, reply })
            .map_err(|_| QueueError::Closed)?;
        Ok(answer)
    }

    async fn enqueue_owned(&self, envelope: &Envelope, body: Vec<u8>) -> Result<(), QueueError> {
        let id = envelope.id.clone();
        let size = body.len() as u64;
        let op = Op::Enqueue {
            id: id.clone(),
            envelope: to_json(envelope)?,
            body,
            due_at_ms: now_ms(),
        };
        if !self.shared.lock_index().reserve(&id, size) {
            return Err(QueueError::unavailable_because(format!(
                "message {id} is already queued"
            )));
        }
        // From here on the committer settles the reservation, even if we are cancelled.
        match self.submit(op) {
            Ok(answer) => answer.await.map_err(|_| QueueError::Closed)?.map(drop),
            Err(e) => {
                self.shared.lock_index().abort_enqueue(&id);
                Err(e)
            }
        }
    }

    /// Commits an ack or defer of `id`, whose lease `begin_settle` already took.
    async fn settle(&self, id: &QueueId, op: Op) -> Result<(), QueueError> {
        match self.submit(op) {
            Ok(answer) => answer.await.map_err(|_| QueueError::Closed)?.map(drop),
            Err(e) => {
                self.shared.lock_index().abort_settle(id);
                Err(e)
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Closing the channel makes the committer commit what it has and stop.
        drop(
            self.requests
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let committer = self
            .committer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = committer {
            let _ = handle.join();
        }
    }
}

fn to_json(envelope: &Envelope) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(envelope).map_err(|e| QueueError::Encode(Arc::new(e)))
}

#[async_trait]
impl Queue for Spool {
    /// Waits until a message may be takeable, so that a worker need not poll `take`.
    ///
    /// Returns at once if a message is due (or a lease has run out); otherwise when the
    /// earliest due time or lease end arrives, when a message is enqueued or deferred,
    /// when the spool is closed, or after `max`, whichever comes first. It may return
    /// without anything to take (another worker got there first): the worker loop is
    /// `loop { spool.wait_for_work(max).await; while let Some(l) = spool.take(d).await? { … } }`.
    async fn wait_for_work(&self, max: Duration) {
        let notified = self.shared.notify.notified();
        tokio::pin!(notified);
        // Registered before looking at the index, so a wake-up in between is not lost.
        notified.as_mut().enable();
        if lock(&self.requests).is_none() {
            return;
        }
        let now = now_ms();
        let wait = match self.shared.lock_index().next_ready_ms() {
            Some(at) if at <= now => return,
            Some(at) => max.min(Duration::from_millis(at - now)),
            None => max,
        };
        let _ = tokio::time::timeout(wait, notified).await;
    }

    async fn enqueue(&self, envelope: &Envelope, body: &[u8]) -> Result<(), QueueError> {
        self.enqueue_owned(envelope, body.to_vec()).await
    }

    /// Reads the file into the buffer that goes to the committer: one copy, not two.
    async fn enqueue_file(
        &self,
        envelope: &Envelope,
        body: &Path,
        len: u64,
    ) -> Result<(), QueueError> {
        let content = crate::queue::read_body_file(body, len).await?;
        self.enqueue_owned(envelope, content).await
    }

    /// The body read back, and redb's copy of it in the write transaction.
    fn file_body_memory(&self, len: u64) -> u64 {
        len.saturating_mul(2)
    }

    async fn take(&self, lease: Duration) -> Result<Option<Lease>, QueueError> {
        let db = self.database()?;
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        loop {
            let taken = {
                let mut index = self.shared.lock_index();
                index
                    .take(now_ms(), lease_ms)
                    .map(|(id, token)| (index.lapsed(&id), id, token))
            };
            let Some((redelivered, id, token)) = taken else {
                return Ok(None);
            };
            // If this future is dropped from here on, the lease simply runs out.
            let (db, read_id) = (db.clone(), id.clone());
            let read = tokio::task::spawn_blocking(move || store::read_message(&db, &read_id))
                .await
                .map_err(|e| QueueError::unavailable("spool read failed", e))
                .and_then(|r| r);
            match read {
                Ok(Some((envelope, body))) => {
                    return Ok(Some(Lease {
                        envelope,
                        body,
                        token,
                        redelivered,
                    }));
                }
                Ok(None) => {
                    tracing::warn!(%id, "spool index had a message the database has not");
                    self.shared.lock_index().forget(&id);
                }
                Err(e) => {
                    self.shared.lock_index().release(&id, token);
                    return Err(e);
                }
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let id = &lease.envelope.id;
        if self
            .shared
            .lock_index()
            .begin_settle(id, lease.token)
            .is_none()
        {
            return Err(QueueError::LeaseLost(id.clone()));
        }
        self.settle(id, Op::Ack { id: id.clone() }).await
    }

    async fn defer(
        &self,
        lease: &Lease,
        until: SystemTime,
        remaining: Vec<Recipient>,
        reason: String,
    ) -> Result<(), QueueError> {
        let id = &lease.envelope.id;
        let mut envelope = lease.envelope.clone();
        envelope.recipients = remaining;
        envelope.attempts = envelope.attempts.saturating_add(1);
        envelope.last_error = Some(crate::envelope::bounded_reason(reason));
        let json = to_json(&envelope)?;
        let Some(size) = self.shared.lock_index().begin_settle(id, lease.token) else {
            return Err(QueueError::LeaseLost(id.clone()));
        };
        let op = Op::Defer {
            id: id.clone(),
            envelope: json,
            due_at_ms: unix_ms(until),
            size,
        };
        self.settle(id, op).await
    }
}

#[async_trait]
impl QueueAdmin for Spool {
    async fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        let stored = self.read(store::read_all).await?;
        let now = now_ms();
        let index = self.shared.lock_index();
        Ok(stored
            .into_iter()
            .map(|s| QueueEntry {
                leased: index.is_leased(&s.envelope.id, now),
                due_at_ms: index.due_at_ms(&s.envelope.id).unwrap_or(s.due_at_ms),
                envelope: s.envelope,
                size: s.size,
            })
            .collect())
    }

    async fn inspect(&self, id: &QueueId) -> Result<Option<(QueueEntry, Vec<u8>)>, QueueError> {
        let read_id = id.clone();
        let Some((s, body)) = self.read(move |db| store::read_one(db, &read_id)).await? else {
            return Ok(None);
        };
        let index = self.shared.lock_index();
        let entry = QueueEntry {
            envelope: s.envelope,
            size: s.size,
            due_at_ms: index.due_at_ms(id).unwrap_or(s.due_at_ms),
            leased: index.is_leased(id, now_ms()),
        };
        Ok(Some((entry, body)))
    }

    /// Moves the due time in the index only (see the module notes): nothing is written.
    async fn retry_now(&self, id: &QueueId) -> Result<bool, QueueError> {
        if lock(&self.requests).is_none() {
            return Err(QueueError::Closed);
        }
        let due = self.shared.lock_index().retry_now(id, now_ms());
        if due {
            self.shared.notify.notify_waiters();
        }
        Ok(due)
    }

    async fn remove(&self, id: &QueueId) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        let removal = self.shared.lock_index().begin_remove(id, now_ms());
        match removal {
            Removal::Started => {}
            Removal::Absent => return Ok(None),
            Removal::Leased => return Err(QueueError::Busy(id.clone())),
        }
        // From here on the committer settles the removal, even if we are cancelled.
        let answer = match self.submit(Op::Remove { id: id.clone() }) {
            Ok(answer) => answer,
            Err(e) => {
                self.shared.lock_index().abort_remove(id);
                return Err(e);
            }
        };
        let Some(removed) = answer.await.map_err(|_| QueueError::Closed)?? else {
            tracing::warn!(%id, "spool index had a message the database has not");
            return Ok(None);
        };
        let envelope = store::parse_envelope(id.as_str(), &removed.envelope)?;
        tracing::info!(%id, "message removed from the spool");
        Ok(Some((envelope, removed.body)))
    }

    /// From the index alone: no database read.
    async fn queue_stats(&self) -> Result<QueueStats, QueueError> {
        if lock(&self.requests).is_none() {
            return Err(QueueError::Closed);
        }
        Ok(self.shared.lock_index().stats())
    }
}
