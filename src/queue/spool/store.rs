//! The on-disk layout: one redb database, `spool.redb`, with three tables keyed by the
//! queue id (fixed-length Crockford base32, so key order is id order is age order):
//!
//! | table | value |
//! | --- | --- |
//! | `envelopes` | the [`Envelope`] as serde_json |
//! | `bodies` | the message content, byte for byte |
//! | `schedule` | `(due_at_ms, body size)`: all the index needs, so open never parses an envelope |
//!
//! Every change to a message touches its rows in one write transaction, so the tables
//! always agree. This module holds the blocking reads; writes go through the committer.

use super::disk::{self, DiskFullSwitch};
use crate::envelope::{Envelope, QueueId};
use crate::queue::QueueError;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use std::path::Path;

pub(super) const ENVELOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("envelopes");
pub(super) const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
pub(super) const SCHEDULE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("schedule");

pub(super) const DB_FILE: &str = "spool.redb";

/// Turns any redb error into a queue error; a full disk is reported as [`QueueError::Full`]
/// so the ingress can answer 452 rather than 451.
///
/// A `Database` that met an I/O error refuses everything after it ("Previous I/O
/// error"), but that is still a storage error, not a full disk: the committer keeps
/// the first error of the outage to answer with (see `committer`).
pub(super) fn storage_error(e: impl Into<redb::Error>) -> QueueError {
    let e: redb::Error = e.into();
    match &e {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            QueueError::full("spool database", Some(e.into()))
        }
        _ => QueueError::unavailable("spool database", e),
    }
}

/// True when the error poisoned the database: redb answers every later call with
/// `PreviousIo` until it is dropped and opened again.
pub(super) fn poisons(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// A copy of a queue error, for answering every caller of a failed group commit: the
/// source is shared, not flattened.
pub(super) fn copy_error(e: &QueueError) -> QueueError {
    e.clone()
}

fn corrupt(what: &str, id: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::corrupt(id, format!("spool {what} is unreadable: {e}"))
}

fn parse_id(key: &str) -> Result<QueueId, QueueError> {
    QueueId::deserialize(key.into_deserializer())
        .map_err(|e: serde::de::value::Error| corrupt("key", key, e))
}

pub(super) fn parse_envelope(id: &str, bytes: &[u8]) -> Result<Envelope, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("envelope", id, e))
}

/// Opens (or creates) the database and makes sure the tables exist, so that readers never
/// meet a missing table. After a crash redb repairs the file here: the last committed
/// transaction is what we get back, and an interrupted one is gone entirely.
/// redb's page cache: its default of 1 GiB made a standalone relay's RSS grow by that
/// much under a load of large messages (bench/memory.py), beside the ingress's memory
/// budget. Bodies are written once and read once, so a small cache costs little.
const CACHE_SIZE: usize = 64 << 20;

pub(super) fn open_database(
    dir: &Path,
    switch: Option<&DiskFullSwitch>,
) -> Result<Database, QueueError> {
    let db = disk::open(&dir.join(DB_FILE), switch, CACHE_SIZE).map_err(storage_error)?;
    let txn = db.begin_write().map_err(storage_error)?;
    {
        txn.open_table(ENVELOPES).map_err(storage_error)?;
        txn.open_table(BODIES).map_err(storage_error)?;
        txn.open_table(SCHEDULE).map_err(storage_error)?;
    }
    txn.commit().map_err(storage_error)?;
    Ok(db)
}

/// Every message's `(id, due_at_ms, size)`, for rebuilding the index at open.
pub(super) fn load_schedule(db: &Database) -> Result<Vec<(QueueId, u64, u64)>, QueueError> {
    let txn = db.begin_read().map_err(storage_error)?;
    let schedule = txn.open_table(SCHEDULE).map_err(storage_error)?;
    let envelopes = txn.open_table(ENVELOPES).map_err(storage_error)?;
    let (s, e) = (
        schedule.len().map_err(storage_error)?,
        envelopes.len().map_err(storage_error)?,
    );
    if s != e {
        tracing::warn!(schedule = s, envelopes = e, "spool tables disagree");
    }
    let mut out = Vec::with_capacity(s as usize);
    for row in schedule.iter().map_err(storage_error)? {
        let (key, value) = row.map_err(storage_error)?;
        let (due_at_ms, size) = value.value();
        out.push((parse_id(key.value())?, due_at_ms, size));
    }
    Ok(out)
}

/// A message's envelope and body, as `take` hands them out.
pub(super) fn read_message(
    db: &Database,
    id: &QueueId,
) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
    let txn = db.begin_read().map_err(storage_error)?;
    let envelopes = txn.open_table(ENVELOPES).map_err(storage_error)?;
    let bodies = txn.open_table(BODIES).map_err(storage_error)?;
    let Some(envelope) = envelopes.get(id.as_str()).map_err(storage_error)? else {
        return Ok(None);
    };
    let envelope = parse_envelope(id.as_str(), envelope.value())?;
    let Some(body) = bodies.get(id.as_str()).map_err(storage_error)? else {
        return Err(corrupt("body", id.as_str(), "missing"));
    };
    Ok(Some((envelope, body.value().to_vec())))
}

/// One stored message without its body, as `list` shows it.
pub(super) struct Stored {
    pub envelope: Envelope,
    pub due_at_ms: u64,
    pub size: u64,
}

/// Every message, oldest first (key order), without reading a single body.
pub(super) fn read_all(db: &Database) -> Result<Vec<Stored>, QueueError> {
    let txn = db.begin_read().map_err(storage_error)?;
    let envelopes = txn.open_table(ENVELOPES).map_err(storage_error)?;
    let schedule = txn.open_table(SCHEDULE).map_err(storage_error)?;
    let mut out = Vec::new();
    for (env_row, sched_row) in envelopes
        .iter()
        .map_err(storage_error)?
        .zip(schedule.iter().map_err(storage_error)?)
    {
        let (env_key, env_value) = env_row.map_err(storage_error)?;
        let (sched_key, sched_value) = sched_row.map_err(storage_error)?;
        if env_key.value() != sched_key.value() {
            return Err(corrupt("schedule", env_key.value(), "out of step"));
        }
        let (due_at_ms, size) = sched_value.value();
        out.push(Stored {
            envelope: parse_envelope(env_key.value(), env_value.value())?,
            due_at_ms,
            size,
        });
    }
    Ok(out)
}

/// One message with its body.
pub(super) fn read_one(
    db: &Database,
    id: &QueueId,
) -> Result<Option<(Stored, Vec<u8>)>, QueueError> {
    let txn = db.begin_read().map_err(storage_error)?;
    let envelopes = txn.open_table(ENVELOPES).map_err(storage_error)?;
    let schedule = txn.open_table(SCHEDULE).map_err(storage_error)?;
    let bodies = txn.open_table(BODIES).map_err(storage_error)?;
    let Some(envelope) = envelopes.get(id.as_str()).map_err(storage_error)? else {
        return Ok(None);
    };
    let envelope = parse_envelope(id.as_str(), envelope.value())?;
    let (due_at_ms, size) = schedule
        .get(id.as_str())
        .map_err(storage_error)?
        .ok_or_else(|| corrupt("schedule", id.as_str(), "missing"))?
        .value();
    let body = bodies
        .get(id.as_str())
        .map_err(storage_error)?
        .ok_or_else(|| corrupt("body", id.as_str(), "missing"))?
        .value()
        .to_vec();
    let stored = Stored {
        envelope,
        due_at_ms,
        size,
    };
    Ok(Some((stored, body)))
}
