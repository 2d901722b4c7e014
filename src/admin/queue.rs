//! The queue API of the admin listener, for `sluice queue`: a thin translation of HTTP
//! onto the operator's queue operations ([`crate::delivery::queue_ops`]) and their
//! answers onto JSON and status codes.

use super::Response;
use super::request::{Request, Resource};
use crate::delivery::queue_ops::{self, Deleted};
use crate::envelope::QueueId;
use crate::queue::{QueueAdmin, QueueError};

pub(super) async fn queue_route(
    queue: &dyn QueueAdmin,
    resource: &Resource,
    request: &Request<'_>,
    hostname: &str,
) -> Response {
    match (request.method, resource) {
        ("GET", Resource::Queue) => answer(queue.list().await, |list| Response::json(&list)),
        ("GET", Resource::Message(id)) => show(queue, id).await,
        ("POST", Resource::Retry(id)) => found(id, queue_ops::retry(queue, id).await, |()| {
            Response::json(&serde_json::json!({ "id": id, "retried": true }))
        }),
        ("POST", Resource::RetryAll) => {
            answer(queue_ops::retry_all(queue).await, |n| Response::json(&n))
        }
        ("DELETE", Resource::Message(id)) if request.flag("bounce") => found(
            id,
            queue_ops::delete_with_bounce(queue, id, hostname).await,
            |d: Deleted| {
                Response::json(&serde_json::json!({
                    "envelope": d.envelope,
                    "size": d.size,
                    "bounce": d.bounce,
                }))
            },
        ),
        ("DELETE", Resource::Message(id)) => {
            found(id, queue_ops::delete(queue, id).await, |d: Deleted| {
                Response::json(&serde_json::json!({ "envelope": d.envelope, "size": d.size }))
            })
        }
        _ => Response::not_found("not found"),
    }
}

async fn show(queue: &dyn QueueAdmin, id: &QueueId) -> Response {
    found(id, queue.inspect(id).await, |(entry, content)| {
        Response::json(&serde_json::json!({
            "entry": entry,
            "message": String::from_utf8_lossy(&content),
        }))
    })
}

fn answer<T>(result: Result<T, QueueError>, ok: impl FnOnce(T) -> Response) -> Response {
    result.map_or_else(Response::queue_error, ok)
}

/// 404 for an id the queue does not know.
fn found<T>(
    id: &QueueId,
    result: Result<Option<T>, QueueError>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(Some(value)) => ok(value),
        Ok(None) => Response::not_found(format_args!("no message {id}")),
        Err(e) => Response::queue_error(e),
    }
}
