//! The queue between ingress and worker: the [`Queue`] trait and its backends
//! ([`spool`], the embedded crash-safe store of `sluice standalone`, and [`jetstream`]).
//! What a queue carries, the [`Envelope`], lives in the leaf [`crate::envelope`].
//!
//! The contract every backend keeps (ARCHITECTURE.md, invariant 1): `enqueue` returns
//! `Ok` only once the message and its envelope are durable, and a message leaves the
//! queue only through `ack`, after its final disposition, or through `remove`, the
//! operator's delete (`sluice queue delete`), which never touches a leased message.

#[cfg(test)]
pub(crate) mod conformance;
pub mod jetstream;
pub mod quarantine;
pub mod spool;

use crate::envelope::{Envelope, QueueId};
use crate::smtp::address::Recipient;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A message taken from the queue for delivery. Until it is acked or deferred, no other
/// taker sees it; when the lease runs out it becomes due again (at-least-once delivery).
#[derive(Debug, Clone)]
pub struct Lease {
    pub envelope: Envelope,
    pub body: Vec<u8>,
    /// Identifies this lease, so that a stale holder cannot ack a message re-leased to
    /// someone else.
    pub token: u64,
    /// True when the backend knows that an earlier lease of this stored message ended
    /// without ack or defer: its holder died or its lease lapsed, possibly after some
    /// recipients took the message. A possible duplicate: the worker looks up what was
    /// delivered before. Each backend documents how far it can know this.
    pub redelivered: bool,
}

/// One line of `sluice queue list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub envelope: Envelope,
    pub size: u64,
    /// When the message is next due, in milliseconds since the Unix epoch.
    pub due_at_ms: u64,
    pub leased: bool,
}

/// How many messages are queued and which has waited longest: the queue gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub messages: u64,
    /// The smallest id; ids sort by acceptance time ([`QueueId::timestamp_ms`]).
    pub oldest: Option<QueueId>,
}

/// The error a [`QueueError`] keeps as its source: shared, so that one failed group
/// commit can answer each of its callers with the same error (the spool's committer).
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync>;

/// What went wrong in a queue, by what it means for the caller: an outage
/// ([`QueueError::is_outage`]: the ingress answers 451/452 and the process is not ready)
/// or one bad record ([`QueueError::Corrupt`]: logged and counted, the queue is up).
/// Variants keep the error they come from ([`std::error::Error::source`] hands out that
/// error itself, so a caller can downcast it); the message shows it too, because most
/// callers log only the message.
#[derive(Debug, Clone)]
pub enum QueueError {
    /// The store cannot be reached or written now: NATS unreachable or without quorum,
    /// an I/O error, a database that must be reopened.
    Unavailable {
        context: String,
        source: Option<ErrorSource>,
    },
    /// No room: a full disk, a stream at its limits, an envelope over the max payload.
    Full {
        context: String,
        source: Option<ErrorSource>,
    },
    /// A stored record that cannot be read back: `id` is its queue id, or the key or
    /// path it was found under when it has no valid id.
    Corrupt { id: String, reason: String },
    /// An envelope or record that could not be encoded for storage.
    Encode(Arc<serde_json::Error>),
    /// No message holds this lease any more (it ran out and was taken again, or removed).
    LeaseLost(QueueId),
    /// The message is leased (being delivered) and cannot be removed now.
    Busy(QueueId),
    /// The queue was closed (the process is stopping).
    Closed,
}

// By hand rather than with thiserror: its `#[source]` would hand out the `Arc`, behind
// which the original error cannot be downcast.
impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Unavailable { context, source } => {
                write!(f, "queue unavailable: {context}{}", suffix(source))
            }
            QueueError::Full { context, source } => {
                write!(f, "queue is full: {context}{}", suffix(source))
            }
            QueueError::Corrupt { id, reason } => {
                write!(f, "queued message {id} is corrupt: {reason}")
            }
            QueueError::Encode(e) => write!(f, "cannot encode for the queue: {e}"),
            QueueError::LeaseLost(id) => write!(f, "no message {id} holds this lease"),
            QueueError::Busy(id) => write!(f, "message {id} is being delivered"),
            QueueError::Closed => f.write_str("queue is shut down"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Unavailable { source, .. } | QueueError::Full { source, .. } => {
                let source: &(dyn std::error::Error + 'static) = source.as_deref()?;
                Some(source)
            }
            QueueError::Encode(e) => Some(&**e),
            _ => None,
        }
    }
}

fn suffix(source: &Option<ErrorSource>) -> String {
    source
        .as_ref()
        .map(|e| format!(": {e:#}"))
        .unwrap_or_default()
}

impl QueueError {
    /// An outage with the error that caused it.
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        QueueError::Unavailable {
            context: context.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// An outage noticed by the queue itself, with no error beneath it.
    pub fn unavailable_because(context: impl Into<String>) -> Self {
        QueueError::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    /// No room, with the error that said so, if any.
    pub fn full(
        context: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        QueueError::Full {
            context: context.into(),
            source: source.map(Arc::from),
        }
    }

    pub fn corrupt(id: impl ToString, reason: impl ToString) -> Self {
        QueueError::Corrupt {
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether the queue as a whole cannot serve now (readiness is withdrawn), as
    /// opposed to one message or one call going wrong while the queue is up.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            QueueError::Unavailable { .. } | QueueError::Full { .. } | QueueError::Closed
        )
    }

    /// The variant as a metric label value (`reason` of the queue error counters).
    pub fn metric_label(&self) -> &'static str {
        match self {
            QueueError::Unavailable { .. } => "unavailable",
            QueueError::Full { .. } => "full",
            QueueError::Corrupt { .. } => "corrupt",
            QueueError::Encode(_) => "encode",
            QueueError::LeaseLost(_) => "lease_lost",
            QueueError::Busy(_) => "busy",
            QueueError::Closed => "closed",
        }
    }
}

/// The hot path: what the ingress and the worker do with every message.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores the message durably; the ingress answers 250 only after `Ok`.
    async fn enqueue(&self, envelope: &Envelope, body: &[u8]) -> Result<(), QueueError>;

    /// Stores a message whose body the ingress received into the file `body` (`len`
    /// bytes), with the same guarantee as [`Queue::enqueue`]. The file stays the
    /// caller's: it is read, never moved or removed. This default reads it whole into
    /// memory; a backend that can stream it says so in [`Queue::file_body_memory`].
    async fn enqueue_file(
        &self,
        envelope: &Envelope,
        body: &Path,
        len: u64,
    ) -> Result<(), QueueError> {
        let content = read_body_file(body, len).await?;
        self.enqueue(envelope, &content).await
    }

    /// How many bytes of memory [`Queue::enqueue_file`] holds for a body of `len`
    /// bytes: what the ingress reserves from its memory budget before calling it.
    fn file_body_memory(&self, len: u64) -> u64 {
        len
    }

    /// Returns when a message may be due, when something was enqueued or deferred, or
    /// after `max`, so that a worker need not poll; it may return with nothing to take.
    async fn wait_for_work(&self, max: Duration);

    /// Takes the next message that is due, leased for `lease`; `None` when nothing is due.
    async fn take(&self, lease: Duration) -> Result<Option<Lease>, QueueError>;

    /// Removes a message after its final disposition.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Puts a message back until `until`, with the recipients still to deliver to and the
    /// reason of this deferral; `attempts` is incremented. The rest of the envelope is
    /// stored as `lease.envelope` has it, so the holder may note more there (the worker
    /// records its delay warning that way).
    async fn defer(
        &self,
        lease: &Lease,
        until: SystemTime,
        remaining: Vec<Recipient>,
        reason: String,
    ) -> Result<(), QueueError>;

    /// Whether the store answers now, for readiness and for refusing connections while
    /// it does not. The embedded spool always does.
    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// The operator's view of a queue (`sluice queue list|show|retry|delete`, the queue
/// gauges): a backend implements it beside [`Queue`], so that the ingress and the worker
/// hold only the hot path, and the admin listener, which also enqueues a bounce when it
/// deletes, holds both.
#[async_trait]
pub trait QueueAdmin: Queue {
    /// All messages, oldest first.
    async fn list(&self) -> Result<Vec<QueueEntry>, QueueError>;

    /// One message with its content.
    async fn inspect(&self, id: &QueueId) -> Result<Option<(QueueEntry, Vec<u8>)>, QueueError>;

    /// Makes a queued message due now (`sluice queue retry`), and wakes `wait_for_work`.
    ///
    /// `Ok(true)` when the message is now takeable (it was waiting, or already due);
    /// `Ok(false)` when there is no such message or it is leased, that is being delivered
    /// right now: the lease is left alone, and its holder's ack or defer decides what
    /// happens next. A retry is a hint, not a change of record: a backend need not write
    /// it down, so after a restart the stored schedule may apply again.
    async fn retry_now(&self, id: &QueueId) -> Result<bool, QueueError>;

    /// Deletes a message that is not leased, durably (`sluice queue delete`), and returns
    /// its envelope and content as they were, for a bounce. `Ok(None)` when there is no
    /// such message; [`QueueError::Busy`] when it is leased (a lease that has run out does
    /// not count: its holder's ack will find [`QueueError::LeaseLost`]).
    async fn remove(&self, id: &QueueId) -> Result<Option<(Envelope, Vec<u8>)>, QueueError>;

    /// The size of the queue and its oldest message, for metrics scraped every few
    /// seconds. This default reads every envelope; a backend should answer from what it
    /// keeps in memory.
    async fn queue_stats(&self) -> Result<QueueStats, QueueError> {
        let list = self.list().await?;
        Ok(QueueStats {
            messages: list.len() as u64,
            oldest: list.into_iter().map(|e| e.envelope.id).min(),
        })
    }
}

/// Reads a body file of `len` bytes, as [`Queue::enqueue_file`] hands it over.
pub async fn read_body_file(path: &Path, len: u64) -> Result<Vec<u8>, QueueError> {
    let content = tokio::fs::read(path).await.map_err(|e| {
        QueueError::unavailable(format!("cannot read message body {}", path.display()), e)
    })?;
    if content.len() as u64 != len {
        return Err(QueueError::unavailable_because(format!(
            "message body {} has {} bytes, not {len}",
            path.display(),
            content.len()
        )));
    }
    Ok(content)
}
