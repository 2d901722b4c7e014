//! The admin HTTP listener: `/healthz` (the process is alive), `/readyz` (every readiness
//! latch released and not draining; the body names the policy revision applied),
//! `/metrics` (Prometheus text format), and the queue API that `sluice queue` talks to,
//! since the spool belongs to the running process and cannot be opened beside it (as
//! postqueue talks to showq):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /queue` | every message, oldest first, as a JSON array of `QueueEntry` |
//! | `GET /queue/<id>` | `{"entry": QueueEntry, "message": content}` |
//! | `POST /queue/<id>/retry` | makes the message due now: `{"id", "retried": true}` |
//! | `POST /queue/retry` | makes every waiting message due now: `{"retried": n, "skipped": n}` |
//! | `DELETE /queue/<id>` | removes the message durably: `{"envelope": Envelope, "size": n}` |
//! | `DELETE /queue/<id>?bounce=1` | the same, and its sender gets a failure DSN: `{…, "bounce": id or null}` |
//! | `GET /quarantine` | every held message, oldest first, as a JSON array of `HeldMessage` |
//! | `GET /quarantine/<id>` | `{"held": HeldMessage, "message": content}` |
//! | `POST /quarantine/<id>/release` | queues the original again: `{"id", "queued": new id}` |
//! | `DELETE /quarantine/<id>` | forgets the held message: `{"id", "deleted": true}` |
//!
//! The quarantine API answers where the role was given a quarantine to manage
//! (standalone, worker; see `roles`), and 404 elsewhere.
//!
//! An unknown id is 404, a message being delivered (leased) 409, a known path with the
//! wrong method 405 with `Allow`.
//!
//! `GET /metrics` refreshes the queue gauges from [`Queue::queue_stats`] first: the scrape is
//! the only reader, so that is as fresh as they can be and costs nothing in between.
//!
//! The queue API needs access ([`access`]): a bearer token when one is configured, and
//! a `Host` naming the listener; without a token it is open on loopback only. `/healthz`,
//! `/readyz` and `/metrics` stay open (probes and scrapers send the pod's address as
//! `Host`). So that a web page in a browser on the same host cannot change the queue
//! either, requests that change something are refused when they carry an `Origin`
//! header, which browsers always send with them and `sluice queue` never does.
//!
//! Probes, scrapers and the queue tools send one small request each; a minimal HTTP/1.1
//! responder that reads one bounded request head (no body: at most
//! [`MAX_REQUEST_HEAD`] bytes and [`request::MAX_HEADERS`] fields, within
//! [`REQUEST_TIMEOUT`] for the whole exchange) and closes is all they need, so no HTTP
//! framework is pulled in for it.

pub mod access;
#[doc(hidden)]
pub mod fuzzing;
mod quarantine;
mod queue;
pub mod request;
#[cfg(test)]
mod tests;

use super::metrics::Metrics;
use super::readiness::Readiness;
use crate::envelope::unix_ms;
use crate::queue::quarantine::Quarantine;
use crate::queue::{QueueAdmin, QueueError};
use access::{Access, Refusal};
use queue::queue_route;
use request::{HeadError, Resource};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const MAX_REQUEST_HEAD: usize = 8192;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TEXT: &str = "text/plain; charset=utf-8";

/// The queue behind `/queue` and the queue gauges, once there is one.
pub type QueueSlot = Arc<std::sync::OnceLock<Arc<dyn QueueAdmin>>>;

/// A slot already holding `queue`.
pub fn queue_slot(queue: Arc<dyn QueueAdmin>) -> QueueSlot {
    Arc::new(std::sync::OnceLock::from(queue))
}

/// The quarantine behind `/quarantine`, in the roles that manage it.
pub type QuarantineSlot = Arc<std::sync::OnceLock<Arc<dyn Quarantine>>>;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Filled in once the queue is open: the probes are answered before that (a role
    /// waiting for NATS is alive but not ready).
    pub queue: QueueSlot,
    /// Filled in with the queue where the role manages held messages; releases go to
    /// `queue`.
    pub quarantine: QuarantineSlot,
    /// Our host name: the reporting MTA of the bounces that `DELETE ?bounce=1` sends.
    pub hostname: String,
}

#[derive(Debug)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    /// One more header: `Allow` of a 405, `WWW-Authenticate` of a 401.
    header: Option<(&'static str, &'static str)>,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
            header: None,
        }
    }

    fn json(value: &impl Serialize) -> Response {
        match serde_json::to_string_pretty(value) {
            Ok(json) => Response {
                status: "200 OK",
                content_type: "application/json",
                body: json + "\n",
                header: None,
            },
            Err(e) => Response::text("500 Internal Server Error", format!("{e}\n")),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Response {
        Response::text("404 Not Found", format!("{what}\n"))
    }

    fn queue_error(e: QueueError) -> Response {
        match e {
            QueueError::Busy(_) => Response::text("409 Conflict", format!("{e}\n")),
            e => Response::text("503 Service Unavailable", format!("{e}\n")),
        }
    }
}

/// Serves until `shutdown` is cancelled, the queue API as `access` says.
pub async fn run(
    listener: TcpListener,
    state: AdminState,
    access: Access,
    shutdown: CancellationToken,
) {
    let access = Arc::new(access);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (state, access) = (state.clone(), access.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &state, &access)).await;
        });
    }
}

async fn serve(mut stream: TcpStream, state: &AdminState, access: &Access) -> std::io::Result<()> {
    let local = stream.local_addr()?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let response = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break route(&head, state, access, local).await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if head.len() + n > MAX_REQUEST_HEAD {
            break Response::text("431 Request Header Fields Too Large", "request too large\n");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let allow = response
        .header
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(head: &[u8], state: &AdminState, access: &Access, local: SocketAddr) -> Response {
    let request = match request::parse(head) {
        Ok(request) => request,
        Err(HeadError::TooManyHeaders) => {
            return Response::text(
                "431 Request Header Fields Too Large",
                "too many header fields\n",
            );
        }
        Err(e) => return Response::text("400 Bad Request", format!("bad request: {e}\n")),
    };
    let Some(resource) = Resource::parse(request.path) else {
        return Response::not_found("not found");
    };
    if resource.is_queue()
        && let Err(refusal) = access.check(&request, local)
    {
        state.metrics.admin_requests_refused.inc(refusal.reason());
        return refused(refusal);
    }
    if request.method != "GET" && request.origin {
        return Response::text("403 Forbidden", "cross-origin requests are refused\n");
    }
    match (request.method, &resource) {
        ("GET", Resource::Health) => Response::text("200 OK", "ok\n"),
        ("GET", Resource::Ready) => readyz(
            &state.readiness,
            state.metrics.policy_revision.get().as_deref(),
        ),
        ("GET", Resource::Metrics) => {
            if let Some(queue) = state.queue.get() {
                refresh_queue_gauges(queue.as_ref(), &state.metrics).await;
            }
            Response {
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                ..Response::text("200 OK", state.metrics.render())
            }
        }
        (method, _) if !resource.allows(method) => Response {
            header: Some(("Allow", resource.allow())),
            ..Response::text("405 Method Not Allowed", "method not allowed\n")
        },
        (method, resource) if resource.is_quarantine() => {
            let (Some(quarantine), Some(queue)) = (state.quarantine.get(), state.queue.get())
            else {
                return Response::not_found("no quarantine here");
            };
            quarantine::quarantine_route(quarantine.as_ref(), queue.as_ref(), method, resource)
                .await
        }
        (method, resource) => {
            let Some(queue) = state.queue.get() else {
                return Response::not_found("no queue here");
            };
            queue_route(queue.as_ref(), method, resource, &request, &state.hostname).await
        }
    }
}

/// The answer to a refused queue API request.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Host => Response::text(
            "403 Forbidden",
            "the Host header does not name this listener (add the name to adminAllowedHosts)\n",
        ),
        Refusal::Token => Response {
            header: Some(("WWW-Authenticate", "Bearer")),
            ..Response::text(
                "401 Unauthorized",
                "the queue API needs Authorization: Bearer <the token of adminTokenFile>\n",
            )
        },
        Refusal::Disabled => Response::text(
            "403 Forbidden",
            "the queue API is off: the admin listener is not on loopback and no adminTokenFile is configured\n",
        ),
    }
}

/// Sets the queue gauges; when the queue cannot say, they keep their last values and
/// the scrape is answered all the same.
async fn refresh_queue_gauges(queue: &dyn QueueAdmin, metrics: &Metrics) {
    match queue.queue_stats().await {
        Ok(stats) => {
            let now = unix_ms(SystemTime::now());
            let age = stats
                .oldest
                .map_or(0, |id| now.saturating_sub(id.timestamp_ms()));
            metrics.set_queue(stats.messages, Duration::from_millis(age));
        }
        Err(e) => tracing::warn!(error = %e, "queue statistics unavailable for /metrics"),
    }
}

/// The state on the first line; then, once there is one, the policy revision applied,
/// so that a look at one pod tells whether it follows the latest push.
fn readyz(readiness: &Readiness, policy_revision: Option<&str>) -> Response {
    let (status, mut body) = if readiness.is_ready() {
        ("200 OK", "ready\n".to_string())
    } else if readiness.is_draining() {
        ("503 Service Unavailable", "draining\n".to_string())
    } else {
        (
            "503 Service Unavailable",
            format!("waiting for {:?}\n", readiness.pending()),
        )
    };
    if let Some(revision) = policy_revision {
        body += &format!("policy revision {revision}\n");
    }
    Response::text(status, body)
}
