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

use super::Shared;
use super::store::{BODIES, ENVELOPES, SCHEDULE, copy_error, storage_error};
use crate::queue::{QueueError, QueueId};
use redb::{Database, Durability};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

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

pub(super) fn spawn(
    db: Arc<Database>,
    shared: Arc<Shared>,
    requests: Receiver<Request>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spool-committer".into())
        .spawn(move || run(&db, &shared, &requests))
}

/// Runs until every sender is gone and the channel is drained, so that a clean shutdown
/// still commits (and answers) everything that was sent before it.
fn run(db: &Database, shared: &Shared, requests: &Receiver<Request>) {
    while let Ok(first) = requests.recv() {
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
        commit_batch(db, shared, batch);
    }
}

fn commit_batch(db: &Database, shared: &Shared, batch: Vec<Request>) {
    match write(db, shared, batch.iter().map(|r| &r.op)) {
        Ok(done) => finish(shared, batch, Ok(done)),
        // One bad request must not fail the others: retry them one transaction each.
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, ops = batch.len(), "spool group commit failed; retrying one by one");
            for request in batch {
                let result = write(db, shared, std::iter::once(&request.op));
                finish(shared, vec![request], result);
            }
        }
        Err(e) => finish(shared, batch, Err(e)),
    }
}

/// Writes `ops` in one transaction; on success, one [`Done`] per op, in order.
fn write<'a>(
    db: &Database,
    shared: &Shared,
    ops: impl Iterator<Item = &'a Op>,
) -> Result<Vec<Done>, QueueError> {
    let mut txn = db.begin_write().map_err(storage_error)?;
    txn.set_durability(Durability::Immediate);
    let mut done = Vec::new();
    {
        let mut envelopes = txn.open_table(ENVELOPES).map_err(storage_error)?;
        let mut bodies = txn.open_table(BODIES).map_err(storage_error)?;
        let mut schedule = txn.open_table(SCHEDULE).map_err(storage_error)?;
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
                        .map_err(storage_error)?;
                    bodies.insert(key, body.as_slice()).map_err(storage_error)?;
                    schedule
                        .insert(key, (*due_at_ms, body.len() as u64))
                        .map_err(storage_error)?;
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
                        .map_err(storage_error)?;
                    schedule
                        .insert(key, (*due_at_ms, *size))
                        .map_err(storage_error)?;
                }
                Op::Ack { id } => {
                    let key = id.as_str();
                    envelopes.remove(key).map_err(storage_error)?;
                    bodies.remove(key).map_err(storage_error)?;
                    schedule.remove(key).map_err(storage_error)?;
                }
                Op::Remove { id } => {
                    let key = id.as_str();
                    let envelope = envelopes.remove(key).map_err(storage_error)?;
                    let envelope = envelope.map(|e| e.value().to_vec());
                    let body = bodies.remove(key).map_err(storage_error)?;
                    let body = body.map(|b| b.value().to_vec()).unwrap_or_default();
                    schedule.remove(key).map_err(storage_error)?;
                    removed = envelope.map(|envelope| Removed { envelope, body });
                }
            }
            done.push(removed);
        }
    }
    txn.commit().map_err(storage_error)?;
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
