//! Messages held for review (issue 11): the original of a message whose attachments a
//! filter rule quarantined. The stripped copy goes on to its recipients through the
//! queue; the original waits here until an admin releases it (re-queued to the same
//! recipients, byte for byte) or deletes it (`sluice quarantine list|show|release|delete`).
//!
//! The contract every backend keeps: `hold` returns `Ok` only once the record and its
//! content are durable, since the ingress answers 250 after it (ARCHITECTURE.md,
//! invariant 1: a held original is as acknowledged as a queued message).

use super::{Envelope, QueueError, QueueId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What is kept beside a held message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldMessage {
    /// The envelope as it was accepted; its `id` is the quarantine's key and the queue
    /// id of the stripped copy, if one was queued.
    pub envelope: Envelope,
    /// Why it is held: the check and the findings, one line, for `sluice quarantine list`.
    pub reason: String,
    /// When it was held, in milliseconds since the Unix epoch.
    pub held_at_ms: u64,
    /// The content's size in octets.
    pub size: u64,
}

#[async_trait]
pub trait Quarantine: Send + Sync + 'static {
    /// Keeps `body` (the message as received) with `record`, durably.
    async fn hold(&self, record: &HeldMessage, body: &[u8]) -> Result<(), QueueError>;
    /// Every held message, oldest first.
    async fn list(&self) -> Result<Vec<HeldMessage>, QueueError>;
    /// One held message with its content; `None` when there is none by that id.
    async fn get(&self, id: &QueueId) -> Result<Option<(HeldMessage, Vec<u8>)>, QueueError>;
    /// Forgets a held message; `Ok(false)` when there was none by that id.
    async fn delete(&self, id: &QueueId) -> Result<bool, QueueError>;
}
