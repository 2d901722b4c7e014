//! The quarantine API of the admin listener, for `sluice quarantine`: listing, showing,
//! releasing and deleting held messages. A thin translation: the release itself is
//! [`crate::queue::quarantine::release`].

use super::Response;
use super::request::Resource;
use crate::envelope::QueueId;
use crate::queue::Queue;
use crate::queue::quarantine::{Quarantine, release};

pub(super) async fn quarantine_route(
    quarantine: &dyn Quarantine,
    queue: &dyn Queue,
    method: &str,
    resource: &Resource,
) -> Response {
    match (method, resource) {
        ("GET", Resource::Quarantine) => match quarantine.list().await {
            Ok(list) => Response::json(&list),
            Err(e) => Response::queue_error(e),
        },
        ("GET", Resource::Held(id)) => match quarantine.get(id).await {
            Ok(Some((held, content))) => Response::json(&serde_json::json!({
                "held": held,
                "message": String::from_utf8_lossy(&content),
            })),
            Ok(None) => not_held(id),
            Err(e) => Response::queue_error(e),
        },
        ("POST", Resource::Release(id)) => match release(quarantine, queue, id).await {
            Ok(Some(queued)) => Response::json(&serde_json::json!({ "id": id, "queued": queued })),
            Ok(None) => not_held(id),
            Err(e) => Response::queue_error(e),
        },
        ("DELETE", Resource::Held(id)) => match quarantine.delete(id).await {
            Ok(true) => Response::json(&serde_json::json!({ "id": id, "deleted": true })),
            Ok(false) => not_held(id),
            Err(e) => Response::queue_error(e),
        },
        _ => Response::not_found("not found"),
    }
}

fn not_held(id: &QueueId) -> Response {
    Response::not_found(format_args!("no held message {id}"))
}
