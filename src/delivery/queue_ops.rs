//! What an operator does to queued mail (`sluice queue retry|delete`): make a message or
//! every message due now, delete one, or delete one and tell its sender with a failure
//! DSN. They live beside the worker because a bounce is delivery's knowledge (which
//! recipients are left, what a DSN says, in which order the durable writes keep the
//! invariant); the admin listener only translates HTTP onto these calls.
//!
//! Each answers `Ok(None)` for an id the queue does not know and
//! [`QueueError::Busy`] for a message being delivered right now.

use crate::delivery::Outcome;
use crate::delivery::dsn::{self, ReportKind};
use crate::envelope::{Envelope, QueueId};
use crate::queue::{QueueAdmin, QueueError};
use serde::Serialize;

/// The enhanced status code of recipients whose message the operator deleted: no
/// subject of RFC 3463 covers an administrative decision (X.7.x is about the sender's
/// authorization), so only the class is known: permanent, X.0.0.
pub const DELETED_STATUS: &str = "5.0.0";
/// The diagnostic of such a bounce (shown as `X-Sluice; …`).
pub const DELETED_REASON: &str = "message deleted by the mail system administrator";

/// What `retry_all` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryCounts {
    /// Made due now.
    pub retried: u64,
    /// Being delivered, or gone meanwhile.
    pub skipped: u64,
}

/// A message taken out of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// Its envelope as it was removed.
    pub envelope: Envelope,
    /// Its size in octets.
    pub size: usize,
    /// The failure DSN queued for its sender, when one was asked for and is due.
    pub bounce: Option<QueueId>,
}

/// Makes one message due now.
pub async fn retry(queue: &dyn QueueAdmin, id: &QueueId) -> Result<Option<()>, QueueError> {
    if queue.retry_now(id).await? {
        return Ok(Some(()));
    }
    // Not takeable: tell a lease (being delivered now) from an unknown id.
    match queue.inspect(id).await? {
        Some(_) => Err(QueueError::Busy(id.clone())),
        None => Ok(None),
    }
}

/// Makes every waiting message due now, one after the other; a message being delivered
/// is skipped. Takes as long as the queue is long: callers must not bound it by a
/// request timeout (see `crate::admin`).
pub async fn retry_all(queue: &dyn QueueAdmin) -> Result<RetryCounts, QueueError> {
    let mut counts = RetryCounts {
        retried: 0,
        skipped: 0,
    };
    for entry in queue.list().await? {
        match queue.retry_now(&entry.envelope.id).await? {
            true => counts.retried += 1,
            false => counts.skipped += 1,
        }
    }
    Ok(counts)
}

/// Removes a message durably, without telling anyone.
pub async fn delete(queue: &dyn QueueAdmin, id: &QueueId) -> Result<Option<Deleted>, QueueError> {
    Ok(queue.remove(id).await?.map(|(envelope, content)| Deleted {
        envelope,
        size: content.len(),
        bounce: None,
    }))
}

/// Removes the message and queues, for its sender, a failure DSN about every recipient
/// still left (the envelope's recipients: those delivered or bounced earlier are gone
/// from it). No DSN for a null reverse-path or when every recipient's NOTIFY excludes
/// FAILURE: [`dsn::build`] decides. `hostname` is the reporting MTA.
///
/// The order is read, queue the DSN, remove, so that no crash can lose both: a crash
/// between the two durable writes leaves the message and a DSN too many, and the
/// operator, who got no answer, sees the message still listed. The other order would
/// lose the message and its bounce in that place. When the removal then fails (the
/// worker took the message meanwhile, it was delivered, the queue failed) the DSN is
/// withdrawn, so that the sender is not told of a failure that did not happen; only a
/// DSN that the worker has already taken (it is due at once) still goes out, and that is
/// logged.
pub async fn delete_with_bounce(
    queue: &dyn QueueAdmin,
    id: &QueueId,
    hostname: &str,
) -> Result<Option<Deleted>, QueueError> {
    let Some((entry, content)) = queue.inspect(id).await? else {
        return Ok(None);
    };
    if entry.leased {
        return Err(QueueError::Busy(id.clone()));
    }
    let dsn = bounce(&entry.envelope, &content, hostname);
    if let Some((envelope, message)) = &dsn {
        queue.enqueue(envelope, message).await?;
    }
    let dsn_id = dsn.map(|(envelope, _)| envelope.id);
    let removed = queue.remove(id).await;
    if let (Some(dsn_id), false) = (&dsn_id, matches!(removed, Ok(Some(_)))) {
        withdraw(queue, id, dsn_id).await;
    }
    let Some((envelope, content)) = removed? else {
        return Ok(None);
    };
    if envelope != entry.envelope {
        // Attempted between our read and the removal: the DSN may name a recipient that
        // has been delivered since.
        tracing::warn!(queue_id = %id, "message changed while being deleted; its bounce lists the recipients it had before");
    }
    tracing::info!(queue_id = %id, notification = ?dsn_id, "message deleted with a bounce");
    Ok(Some(Deleted {
        envelope,
        size: content.len(),
        bounce: dsn_id,
    }))
}

/// The failure DSN about every recipient of a deleted message.
fn bounce(envelope: &Envelope, content: &[u8], hostname: &str) -> Option<(Envelope, Vec<u8>)> {
    let reports: Vec<_> = envelope
        .recipients
        .iter()
        .map(|r| {
            let outcome = Outcome::Failed {
                remote_mta: None,
                status: DELETED_STATUS.to_string(),
                reply: DELETED_REASON.to_string(),
            };
            (r.clone(), outcome)
        })
        .collect();
    dsn::build(
        envelope,
        &reports,
        ReportKind::Failure,
        content,
        hostname,
        // An operator's deletion holds no policy; the default keeps the same protection.
        usize::try_from(crate::policy::DEFAULT_BOUNCE_SIZE_LIMIT).unwrap_or(usize::MAX),
        chrono::Utc::now(),
    )
}

/// Takes back the DSN of a deletion that did not happen.
async fn withdraw(queue: &dyn QueueAdmin, id: &QueueId, dsn_id: &QueueId) {
    match queue.remove(dsn_id).await {
        Ok(_) => {
            tracing::info!(queue_id = %id, notification = %dsn_id, "deletion failed; its bounce was withdrawn")
        }
        Err(e) => {
            tracing::error!(queue_id = %id, notification = %dsn_id, error = %e, "deletion failed, but its bounce could not be withdrawn and will be sent")
        }
    }
}
