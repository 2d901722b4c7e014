//! The committer: one dedicated thread that owns every write to the database.
//!
//! Callers send a [`Request`] and await its oneshot. The thread blocks for the first
//! request, then drains whatever else is already waiting (up to a size bound) and writes
//! the whole batch in ONE write transaction committed with `Durability::Immediate`: one
//! fsync round for all of them (group commit). While that fsync runs, new requests pile up
//! in the channel and make up the next batch, so the batch size grows with the load on
//! its own, with no timer and no added latency when the queue is idle.
//!
//! The index is updated here, after the commit and before the replies, so a request
//! whose caller went away (the SMTP client hung up mid-await) still leaves index and
//! database in agreement.
//!
//! **Storage errors.** After an I/O error (a full disk above all) redb refuses every
//! later call until the `Database` is dropped and opened again. So the committer drops
//! it at once, answers every request with the error that began the outage (a full disk
//! stays `Full`, for the 452) and tries to open the database again every
//! [`REOPEN_INTERVAL`]: opening runs redb's recovery, which brings back exactly the last
//! committed transaction, and the index adopts any message that the failed commit made
//! durable after all. Nothing acknowledged is lost, and mail is accepted again within
//! a second or so of the space coming back, with no restart.

use super::disk::DiskFullSwitch;
use super::store::{self, BODIES, ENVELOPES, SCHEDULE, copy_error, poisons, storage_error};
use super::{Shared, Slot};
use crate::envelope::QueueId;
use crate::queue::QueueError;
use redb::{Database, Durability};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Between two attempts at opening the database again after a storage error.
pub(super) const REOPEN_INTERVAL: Duration = Duration::from_millis(500);

/// At most this many requests share one transaction…
const MAX_BATCH_OPS: usize = 4096;
/// …and at most about this many bytes of content.
const MAX_BATCH_BYTES: usize = 32 << 20;

pub(super) enum Op {
    /// Writes a new message, due at `due_at_ms`.
    Enqueue {
        id: QueueId,
        envelope: Vec<u8>,
        body: Vec<u8>,
        due_at_ms: u64,
    },
    /// Replaces a leased message's envelope and due time; the body stays.
    Defer {
        id: QueueId,
        envelope: Vec<u8>,
        due_at_ms: u64,
        size: u64,
    },
    /// Deletes a leased message.
    Ack { id: QueueId },
    /// Deletes a message that `Index::begin_remove` took out of reach, handing back
    /// what it deleted.
    Remove { id: QueueId },
}

/// The rows a [`Op::Remove`] deleted, read in the deleting transaction itself, so they
/// are exactly what was removed.
pub(super) struct Removed {
    pub envelope: Vec<u8>,
    pub body: Vec<u8>,
}

/// What a committed request hands back: the deleted rows for a `Remove` that found its
/// message, `None` otherwise.
pub(super) type Done = Option<Removed>;

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Enqueue { envelope, body, .. } => envelope.len() + body.len(),
            Op::Defer { envelope, .. } => envelope.len(),
            Op::Ack { .. } | Op::Remove { .. } => 0,
        }
    }
}

pub(super) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done, QueueError>>,
}

/// Where the database file is, for opening it again.
pub(super) struct Location {
    pub dir: PathBuf,
    pub switch: Option<DiskFullSwitch>,
}

pub(super) fn spawn(
    db: Arc<Database>,
    location: Location,
    shared: Arc<Shared>,
    requests: Receiver<Request>,
) -> std::io::Result<JoinHandle<()>> {
    let committer = Committer {
        db: Some(db),
        location,
        shared,
        outage: None,
        reopened_at: None,
    };
    std::thread::Builder::new()
        .name("spool-committer".into())
        .spawn(move || committer.run(&requests))
}

/// The database is unusable since a storage error.
struct Outage {
    /// The error that began it, answered to every request until the database is back.
    error: QueueError,
    next_attempt: Instant,
}

struct Committer {
    /// `None` during an outage.
    db: Option<Arc<Database>>,
    location: Location,
    shared: Arc<Shared>,
    outage: Option<Outage>,
    /// When the database was last opened again.
    reopened_at: Option<Instant>,
}

impl Committer {
    /// Runs until every sender is gone and the channel is drained, so that a clean
    /// shutdown still commits (and answers) everything that was sent before it.
    fn run(mut self, requests: &Receiver<Request>) {
        loop {
            let first = match &self.outage {
                None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(o) => {
                    requests.recv_timeout(o.next_attempt.saturating_duration_since(Instant::now()))
                }
            };
            let first = match first {
                Ok(first) => Some(first),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self
                .outage
                .as_ref()
                .is_some_and(|o| Instant::now() >= o.next_attempt)
            {
                self.reopen();
            }
            let Some(first) = first else { continue };
            let mut bytes = first.op.bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match requests.try_recv() {
                    Ok(next) => {
                        bytes += next.op.bytes();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let (Some(db), None) = (&self.db, &self.outage) else {
            let error = self
                .outage
                .as_ref()
                .map_or(QueueError::Closed, |o| copy_error(&o.error));
            return finish(&self.shared, batch, Err(error));
        };
        match write(db, &self.shared, batch.iter().map(|r| &r.op)) {
            Ok(done) => finish(&self.shared, batch, Ok(done)),
            // One bad request must not fail the others: retry them one transaction each.
            Err(Failure {
                error,
                poisoned: false,
            }) if batch.len() > 1 => {
                tracing::warn!(%error, ops = batch.len(), "spool group commit failed; retrying one by one");
                for request in batch {
                    self.commit_batch(vec![request]);
                }
            }
            Err(Failure { error, poisoned }) => {
                if poisoned {
                    self.begin_outage(copy_error(&error));
                }
                finish(&self.shared, batch, Err(error));
            }
        }
    }

    /// Drops the poisoned database; [`Committer::reopen`] follows at once, or
    /// [`REOPEN_INTERVAL`] after the last reopen. On a really full disk opening works
    /// (it needs no new space) and the next write fails again: without that pause every
    /// refused message would cost a reopen, and a reopen may run redb's recovery over
    /// the whole file.
    fn begin_outage(&mut self, error: QueueError) {
        tracing::error!(%error, "spool storage failed; reopening the database");
        *self.shared.lock_slot() = Slot::Reopening(copy_error(&error));
        self.db = None;
        let now = Instant::now();
        let next_attempt = self
            .reopened_at
            .map_or(now, |at| now.max(at + REOPEN_INTERVAL));
        self.outage = Some(Outage {
            error,
            next_attempt,
        });
    }

    /// Opens the database again (redb recovers it), brings the index in line with it,
    /// and ends the outage; on failure tries again after [`REOPEN_INTERVAL`].
    fn reopen(&mut self) {
        let Some(outage) = self.outage.as_mut() else {
            return;
        };
        let opened = store::open_database(&self.location.dir, self.location.switch.as_ref())
            .and_then(|db| Ok((store::load_schedule(&db)?, db)));
        match opened {
            Ok((schedule, db)) => {
                let adopted = self.shared.lock_index().adopt(schedule);
                let db = Arc::new(db);
                *self.shared.lock_slot() = Slot::Open(db.clone());
                self.db = Some(db);
                self.outage = None;
                self.reopened_at = Some(Instant::now());
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                self.shared.notify.notify_waiters();
                tracing::info!(adopted, "spool database reopened; accepting again");
            }
            Err(e) => {
                tracing::debug!(error = %e, "spool database cannot be reopened yet");
                // A full disk stays the reason while it lasts; else the newer error.
                if !matches!(outage.error, QueueError::Full { .. })
                    || matches!(e, QueueError::Full { .. })
                {
                    outage.error = e;
                }
                outage.next_attempt = Instant::now() + REOPEN_INTERVAL;
            }
        }
    }
}

/// A failed write, with whether it poisoned the database.
struct Failure {
    error: QueueError,
    poisoned: bool,
}

fn failure(e: impl Into<redb::Error>) -> Failure {
    let e = e.into();
    Failure {
        poisoned: poisons(&e),
        error: storage_error(e),
    }
}

/// Writes `ops` in one transaction; on success, one [`Done`] per op, in order.
fn write<'a>(
    db: &Database,
    shared: &Shared,
    ops: impl Iterator<Item = &'a Op>,
) -> Result<Vec<Done>, Failure> {
    let mut txn = db.begin_write().map_err(failure)?;
    txn.set_durability(Durability::Immediate);
    let mut done = Vec::new();
    {
        let mut envelopes = txn.open_table(ENVELOPES).map_err(failure)?;
        let mut bodies = txn.open_table(BODIES).map_err(failure)?;
        let mut schedule = txn.open_table(SCHEDULE).map_err(failure)?;
        for op in ops {
            let mut removed = None;
            match op {
                Op::Enqueue {
                    id,
                    envelope,
                    body,
                    due_at_ms,
                } => {
                    let key = id.as_str();
                    envelopes
                        .insert(key, envelope.as_slice())
                        .map_err(failure)?;
                    bodies.insert(key, body.as_slice()).map_err(failure)?;
                    schedule
                        .insert(key, (*due_at_ms, body.len() as u64))
                        .map_err(failure)?;
                }
                Op::Defer {
                    id,
                    envelope,
                    due_at_ms,
                    size,
                } => {
                    let key = id.as_str();
                    envelopes
                        .insert(key, envelope.as_slice())
                        .map_err(failure)?;
                    schedule.insert(key, (*due_at_ms, *size)).map_err(failure)?;
                }
                Op::Ack { id } => {
                    let key = id.as_str();
                    envelopes.remove(key).map_err(failure)?;
                    bodies.remove(key).map_err(failure)?;
                    schedule.remove(key).map_err(failure)?;
                }
                Op::Remove { id } => {
                    let key = id.as_str();
                    let envelope = envelopes.remove(key).map_err(failure)?;
                    let envelope = envelope.map(|e| e.value().to_vec());
                    let body = bodies.remove(key).map_err(failure)?;
                    let body = body.map(|b| b.value().to_vec()).unwrap_or_default();
                    schedule.remove(key).map_err(failure)?;
                    removed = envelope.map(|envelope| Removed { envelope, body });
                }
            }
            done.push(removed);
        }
    }
    txn.commit().map_err(failure)?;
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared
        .operations
        .fetch_add(done.len() as u64, Ordering::Relaxed);
    Ok(done)
}

/// Brings the index in line with what is now durable (or not), wakes the waiting
/// workers, and answers the callers.
fn finish(shared: &Shared, batch: Vec<Request>, result: Result<Vec<Done>, QueueError>) {
    let mut wake = false;
    {
        let mut index = shared.lock_index();
        for request in &batch {
            match (&request.op, result.is_ok()) {
                (Op::Enqueue { id, due_at_ms, .. }, true) => {
                    index.commit_enqueue(id, *due_at_ms);
                    wake = true;
                }
                (Op::Enqueue { id, .. }, false) => index.abort_enqueue(id),
                (Op::Defer { id, due_at_ms, .. }, true) => {
                    index.commit_defer(id, *due_at_ms);
                    wake = true;
                }
                (Op::Ack { id }, true) => index.commit_ack(id),
                (Op::Defer { id, .. } | Op::Ack { id }, false) => {
                    index.abort_settle(id);
                    wake = true;
                }
                (Op::Remove { id }, true) => index.commit_remove(id),
                (Op::Remove { id }, false) => {
                    index.abort_remove(id);
                    wake = true;
                }
            }
        }
    }
    if wake {
        shared.notify.notify_waiters();
    }
    let answers: Vec<Result<Done, QueueError>> = match result {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(e) => batch.iter().map(|_| Err(copy_error(&e))).collect(),
    };
    for (request, answer) in batch.into_iter().zip(answers) {
        // The caller may have gone away; its request is settled all the same.
        let _ = request.reply.send(answer);
    }
}
