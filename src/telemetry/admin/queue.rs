//! The queue API of the admin listener: listing, showing, retrying and deleting
//! messages (with an optional bounce) for `sluice queue`.

use super::Response;
use super::request::{Request, Resource};
use crate::delivery::Outcome;
use crate::delivery::dsn::{self, ReportKind};
use crate::envelope::{Envelope, QueueId};
use crate::queue::{QueueAdmin, QueueError};

pub(super) async fn queue_route(
    queue: &dyn QueueAdmin,
    method: &str,
    resource: &Resource,
    request: &Request<'_>,
    hostname: &str,
) -> Response {
    match (method, resource) {
        ("GET", Resource::Queue) => match queue.list().await {
            Ok(list) => Response::json(&list),
            Err(e) => Response::queue_error(e),
        },
        ("GET", Resource::Message(id)) => show(queue, id).await,
        ("POST", Resource::Retry(id)) => retry(queue, id).await,
        ("POST", Resource::RetryAll) => retry_all(queue).await,
        ("DELETE", Resource::Message(id)) if request.flag("bounce") => {
            delete_and_bounce(queue, id, hostname).await
        }
        ("DELETE", Resource::Message(id)) => delete(queue, id).await,
        _ => Response::not_found("not found"),
    }
}

async fn show(queue: &dyn QueueAdmin, id: &QueueId) -> Response {
    match queue.inspect(id).await {
        Ok(Some((entry, content))) => Response::json(&serde_json::json!({
            "entry": entry,
            "message": String::from_utf8_lossy(&content),
        })),
        Ok(None) => Response::not_found(format_args!("no message {id}")),
        Err(e) => Response::queue_error(e),
    }
}

async fn retry(queue: &dyn QueueAdmin, id: &QueueId) -> Response {
    match queue.retry_now(id).await {
        Ok(true) => Response::json(&serde_json::json!({ "id": id, "retried": true })),
        // Not takeable: tell a lease (being delivered now) from an unknown id.
        Ok(false) => match queue.inspect(id).await {
            Ok(Some(_)) => Response::queue_error(QueueError::Busy(id.clone())),
            Ok(None) => Response::not_found(format_args!("no message {id}")),
            Err(e) => Response::queue_error(e),
        },
        Err(e) => Response::queue_error(e),
    }
}

async fn retry_all(queue: &dyn QueueAdmin) -> Response {
    let list = match queue.list().await {
        Ok(list) => list,
        Err(e) => return Response::queue_error(e),
    };
    let (mut retried, mut skipped) = (0u64, 0u64);
    for entry in list {
        match queue.retry_now(&entry.envelope.id).await {
            Ok(true) => retried += 1,
            Ok(false) => skipped += 1,
            Err(e) => return Response::queue_error(e),
        }
    }
    Response::json(&serde_json::json!({ "retried": retried, "skipped": skipped }))
}

async fn delete(queue: &dyn QueueAdmin, id: &QueueId) -> Response {
    match queue.remove(id).await {
        Ok(Some((envelope, content))) => {
            Response::json(&serde_json::json!({ "envelope": envelope, "size": content.len() }))
        }
        Ok(None) => Response::not_found(format_args!("no message {id}")),
        Err(e) => Response::queue_error(e),
    }
}

/// The enhanced status code of recipients whose message the operator deleted: no
/// subject of RFC 3463 covers an administrative decision (X.7.x is about the sender's
/// authorization), so only the class is known: permanent, X.0.0.
pub const DELETED_STATUS: &str = "5.0.0";
/// The diagnostic of such a bounce (shown as `X-Sluice; …`).
pub const DELETED_REASON: &str = "message deleted by the mail system administrator";

/// `DELETE /queue/<id>?bounce=1`: removes the message and queues, for its sender, a
/// failure DSN about every recipient still left (the envelope's recipients: those
/// delivered or bounced earlier are gone from it). None for a null reverse-path or when
/// every recipient's NOTIFY excludes FAILURE: [`dsn::build`] decides.
///
/// The order is read, queue the DSN, remove, so that no crash can lose both: a crash
/// between the two durable writes leaves the message and a DSN too many, and the
/// operator, who got no answer, sees the message still listed. The other order would
/// lose the message and its bounce in that place. When the removal then fails (the
/// worker took the message meanwhile, it was delivered, the queue failed) the DSN is
/// withdrawn, so that the sender is not told of a failure that did not happen; only a
/// DSN that the worker has already taken (it is due at once) still goes out, and that is
/// logged.
async fn delete_and_bounce(queue: &dyn QueueAdmin, id: &QueueId, hostname: &str) -> Response {
    let (entry, content) = match queue.inspect(id).await {
        Ok(Some(found)) => found,
        Ok(None) => return Response::not_found(format_args!("no message {id}")),
        Err(e) => return Response::queue_error(e),
    };
    if entry.leased {
        return Response::queue_error(QueueError::Busy(id.clone()));
    }
    let dsn = bounce(&entry.envelope, &content, hostname);
    if let Some((envelope, message)) = &dsn
        && let Err(e) = queue.enqueue(envelope, message).await
    {
        return Response::queue_error(e);
    }
    let dsn_id = dsn.map(|(envelope, _)| envelope.id);
    let removed = queue.remove(id).await;
    if let (Some(dsn_id), false) = (&dsn_id, matches!(removed, Ok(Some(_)))) {
        withdraw(queue, id, dsn_id).await;
    }
    match removed {
        Ok(Some((envelope, content))) => {
            if envelope != entry.envelope {
                // Attempted between our read and the removal: the DSN may name a
                // recipient that has been delivered since.
                tracing::warn!(queue_id = %id, "message changed while being deleted; its bounce lists the recipients it had before");
            }
            tracing::info!(queue_id = %id, notification = ?dsn_id, "message deleted with a bounce");
            Response::json(&serde_json::json!({
                "envelope": envelope,
                "size": content.len(),
                "bounce": dsn_id,
            }))
        }
        Ok(None) => Response::not_found(format_args!("no message {id}")),
        Err(e) => Response::queue_error(e),
    }
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
    let now = chrono::Utc::now();
    dsn::build(
        envelope,
        &reports,
        ReportKind::Failure,
        content,
        hostname,
        // The admin listener holds no policy; the default keeps the same protection.
        usize::try_from(crate::policy::DEFAULT_BOUNCE_SIZE_LIMIT).unwrap_or(usize::MAX),
        now,
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
