//! Releasing a held message: its original goes back into the queue, to the recipients
//! it was accepted for, byte for byte, and leaves the quarantine.

use super::Quarantine;
use crate::envelope::{Envelope, QueueId, unix_ms};
use crate::queue::{Queue, QueueError};
use std::time::SystemTime;

/// Queues the original held as `id` under a new queue id (the stripped copy may still be
/// queued under the old one), then deletes the held copy; returns the new id, or `None`
/// when nothing is held as `id`.
///
/// The order keeps invariant 1: the enqueue is durable before the held copy goes. A crash
/// (or a failed delete) between the two leaves the original both queued and held, and a
/// second release would queue it again: at worst a duplicate, never a loss. Two releases
/// of one id running at once can likewise both queue it.
///
/// The new envelope is the held one with a new id, no attempts or deferral recorded, and
/// `received_at_ms` set to now: the queue's maximal lifetime counts from the release, so
/// that a message held for days is not expired into a bounce at once.
pub async fn release(
    quarantine: &dyn Quarantine,
    queue: &dyn Queue,
    id: &QueueId,
) -> Result<Option<QueueId>, QueueError> {
    let Some((held, body)) = quarantine.get(id).await? else {
        return Ok(None);
    };
    let envelope = Envelope {
        id: QueueId::generate(),
        received_at_ms: unix_ms(SystemTime::now()),
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        ..held.envelope
    };
    queue.enqueue(&envelope, &body).await?;
    tracing::info!(queue_id = %id, released_as = %envelope.id, "held message released");
    match quarantine.delete(id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(queue_id = %id, "released message was deleted from the quarantine meanwhile")
        }
        Err(e) => {
            tracing::error!(queue_id = %id, released_as = %envelope.id, error = %e, "released, but the held copy is still held: releasing it again queues it twice");
            return Err(e);
        }
    }
    Ok(Some(envelope.id))
}
