//! The queue between ingress and worker: the [`Queue`] trait, the envelope it carries,
//! and its backends ([`spool`], the embedded crash-safe store of `sluice standalone`).
//!
//! The contract every backend keeps (ARCHITECTURE.md, invariant 1): `enqueue` returns
//! `Ok` only once the message and its envelope are durable, and a message leaves the
//! queue only through `ack`, after its final disposition, or through `remove`, the
//! operator's delete (`sluice queue delete`), which never touches a leased message.

#[cfg(test)]
pub(crate) mod conformance;
mod id;
pub mod jetstream;
pub mod quarantine;
pub mod spool;

pub use id::QueueId;

use crate::smtp::address::{MailParams, Recipient, ReversePath};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Everything about a message except its content: who sent it, to whom, and how it
/// reached us. Travels with the body through every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    pub reverse_path: ReversePath,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    /// When the 250 was given, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub client_ip: IpAddr,
    pub helo: String,
    pub authenticated_user: Option<String>,
    /// Whether the ingress vouched for the sender: success notices (NOTIFY=SUCCESS) go
    /// only to such senders, so that anyone cannot have us mail a chosen address. Absent
    /// in envelopes written before it existed, which read as untrusted.
    #[serde(default, skip_serializing_if = "SenderTrust::is_untrusted")]
    pub sender_trust: SenderTrust,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// The reason of the last deferral, for `sluice queue show` and bounces; at most
    /// [`MAX_LAST_ERROR`] bytes (see [`bounded_reason`]).
    pub last_error: Option<String>,
    /// When the sender was sent its one delay warning (`retry.delayWarning`), in
    /// milliseconds since the Unix epoch; stored so that a restart does not warn again.
    /// Absent in envelopes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_warned_at_ms: Option<u64>,
    /// The message's W3C trace context, started by the ingress that accepted it.
    /// Absent in envelopes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::telemetry::trace::TraceParent>,
}

/// How far the ingress that accepted a message trusts its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderTrust {
    /// Anyone on the network: the reverse-path may be forged.
    #[default]
    Untrusted,
    /// The session authenticated (SASL).
    Authenticated,
    /// The client is in a trusted network of the policy.
    TrustedNetwork,
}

impl SenderTrust {
    pub fn is_untrusted(&self) -> bool {
        *self == SenderTrust::Untrusted
    }
}

/// The most of a deferral's reason a queue keeps. A remote server's reply can run to any
/// length, and the envelope travels in every republished message, whose headers must
/// fit NATS's max payload within the room left at enqueue; one reply line is at most 512
/// octets (RFC 5321 4.5.3.1.5), and that says enough.
pub const MAX_LAST_ERROR: usize = 512;

/// `reason` cut to at most [`MAX_LAST_ERROR`] bytes on a character boundary, ending in
/// `…` when cut. Every backend stores deferral reasons through this.
pub fn bounded_reason(mut reason: String) -> String {
    const MARK: &str = "…";
    if reason.len() > MAX_LAST_ERROR {
        let mut end = MAX_LAST_ERROR - MARK.len();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(MARK);
    }
    reason
}

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

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue storage failed: {0}")]
    Storage(String),
    #[error("queue is full: {0}")]
    Full(String),
    #[error("no message {0} holds this lease")]
    LeaseLost(QueueId),
    /// The message is leased (being delivered) and cannot be removed now.
    #[error("message {0} is being delivered")]
    Busy(QueueId),
    #[error("queue is shut down")]
    Closed,
}

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

    /// Whether the store answers now, for readiness and for refusing connections while
    /// it does not. The embedded spool always does.
    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }

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
        QueueError::Storage(format!("cannot read message body {}: {e}", path.display()))
    })?;
    if content.len() as u64 != len {
        return Err(QueueError::Storage(format!(
            "message body {} has {} bytes, not {len}",
            path.display(),
            content.len()
        )));
    }
    Ok(content)
}

/// Milliseconds since the Unix epoch, the time unit of envelopes.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_without_a_delay_warning_read_and_write_as_before() {
        let mut envelope = conformance::envelope(&["a"]);
        let json = serde_json::to_value(&envelope).unwrap();
        assert!(json.get("delay_warned_at_ms").is_none(), "{json}");
        let old: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(old, envelope);
        envelope.delay_warned_at_ms = Some(1_700_000_000_000);
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope);
    }

    #[test]
    fn envelopes_without_sender_trust_read_as_untrusted() {
        let mut envelope = conformance::envelope(&["a"]);
        envelope.sender_trust = SenderTrust::TrustedNetwork;
        let mut json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["sender_trust"], "trustedNetwork", "{json}");
        json.as_object_mut().unwrap().remove("sender_trust");
        let old: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(old.sender_trust, SenderTrust::Untrusted);
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("sender_trust").is_none(), "{json}");
    }
}
