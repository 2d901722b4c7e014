//! Messages held for review (issue 11): the original of a message whose attachments a
//! filter rule quarantined. The stripped copy goes on to its recipients through the
//! queue; the original waits here until an admin releases it (re-queued to the same
//! recipients, byte for byte) or deletes it (`sluice quarantine list|show|release|delete`).
//!
//! The contract every backend keeps: `hold` returns `Ok` only once the record and its
//! content are durable, since the ingress answers 250 after it (ARCHITECTURE.md,
//! invariant 1: a held original is as acknowledged as a queued message).

#[cfg(test)]
pub(crate) mod contract;
mod release;

pub use release::release;

use super::QueueError;
use super::jetstream::codec::{self, EnvelopeLimits};
use crate::envelope::{Envelope, QueueId};
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

/// The most of a hold's reason that is kept: one line for `sluice quarantine list`.
pub const MAX_REASON: usize = crate::envelope::MAX_LAST_ERROR;

/// The most JSON a stored record may take: the envelope's bound and the reason's.
pub(crate) fn max_record_json(limits: &EnvelopeLimits) -> usize {
    limits
        .max_envelope_json()
        .saturating_add(2 * MAX_REASON + 1024)
}

/// The record as every backend stores it: `size` is the content's, and the reason is one
/// line of at most [`MAX_REASON`] bytes (control characters become spaces), so that what
/// is held can always be read back.
pub(crate) fn normalised(record: &HeldMessage, body: &[u8]) -> HeldMessage {
    let reason: String = record
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeldMessage {
        reason: crate::envelope::bounded_reason(reason),
        size: body.len() as u64,
        ..record.clone()
    }
}

/// Whether `record` could have been held by us: its envelope is one our ingress writes
/// (paths through the SMTP parser, counts and sizes within `limits`), and its reason is
/// one bounded line. Everything a backend reads back goes through this: a record is
/// shown to an admin and, on release, its envelope is queued for delivery.
pub(crate) fn check_record(record: &HeldMessage, limits: &EnvelopeLimits) -> Result<(), String> {
    if record.reason.len() > MAX_REASON || record.reason.chars().any(char::is_control) {
        return Err("reason: too long or with control characters".into());
    }
    let meta = codec::Meta {
        envelope: record.envelope.clone(),
        not_before_ms: None,
        body_size: record.size,
        body_object: None,
    };
    codec::check(&meta, limits)
}

/// Decodes a stored record (at most [`max_record_json`] bytes) and checks it.
pub(crate) fn decode_record(json: &[u8], limits: &EnvelopeLimits) -> Result<HeldMessage, String> {
    if json.len() > max_record_json(limits) {
        return Err(format!("a record of {} bytes", json.len()));
    }
    let record: HeldMessage = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    check_record(&record, limits)?;
    Ok(record)
}

/// Oldest first; ids break ties.
pub(crate) fn sort(records: &mut [HeldMessage]) {
    records.sort_by(|a, b| (a.held_at_ms, &a.envelope.id).cmp(&(b.held_at_ms, &b.envelope.id)));
}
