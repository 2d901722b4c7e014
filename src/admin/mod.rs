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
//! HTTP/1.1 is hyper's ([`server`]): one request per connection (`Connection: close`,
//! as before), a head of at most [`MAX_REQUEST_HEAD`] bytes and [`request::MAX_HEADERS`]
//! fields read within [`Limits::header_timeout`], a body (no route takes one) of at most
//! [`MAX_REQUEST_BODY`] bytes within [`Limits::body_timeout`], and at most
//! [`Limits::max_connections`] connections at once. The handler itself has no deadline:
//! `POST /queue/retry` over a long queue takes as long as it takes.

pub mod access;
#[doc(hidden)]
pub mod fuzzing;
mod quarantine;
mod queue;
pub mod request;
mod server;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;

use crate::envelope::unix_ms;
use crate::queue::quarantine::Quarantine;
use crate::queue::{QueueAdmin, QueueError};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::Readiness;
use access::Refusal;
use hyper::StatusCode;
use queue::queue_route;
use request::{Request, Resource};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use server::{Limits, run, run_with};

/// The largest request head (request line and fields), as before hyper; over it, 431.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// The largest request body; no route takes one (`sluice queue` sends none), so this
/// only keeps a stray one from being buffered without bound. Over it, 413.
pub const MAX_REQUEST_BODY: usize = 8192;
/// Within this the head must have arrived, from the connection's start.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Within this the body must have arrived once the head has.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Within this the answer must have been written once the handler has it: a client that
/// stops reading does not hold its connection slot for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are answered 503 and closed (see [`server`]).
pub const MAX_CONNECTIONS: usize = 64;
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
    status: StatusCode,
    content_type: &'static str,
    body: String,
    /// One more header: `Allow` of a 405, `WWW-Authenticate` of a 401.
    header: Option<(&'static str, &'static str)>,
}

impl Response {
    fn text(status: StatusCode, body: impl Into<String>) -> Response {
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
                status: StatusCode::OK,
                content_type: "application/json",
                body: json + "\n",
                header: None,
            },
            Err(e) => Response::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Response {
        Response::text(StatusCode::NOT_FOUND, format!("{what}\n"))
    }

    fn queue_error(e: QueueError) -> Response {
        match e {
            QueueError::Busy(_) => Response::text(StatusCode::CONFLICT, format!("{e}\n")),
            e => Response::text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }
}

/// The answer to one request whose head hyper has framed; `local` is the address the
/// client connected to.
async fn route(
    request: &Request<'_>,
    state: &AdminState,
    access: &access::Access,
    local: SocketAddr,
) -> Response {
    let Some(resource) = Resource::parse(request.path) else {
        return Response::not_found("not found");
    };
    if resource.is_queue()
        && let Err(refusal) = access.check(request, local)
    {
        state
            .metrics
            .admin_requests_refused
            .inc(refusal.metric_label());
        return refused(refusal);
    }
    if request.method != "GET" && request.origin {
        return Response::text(StatusCode::FORBIDDEN, "cross-origin requests are refused\n");
    }
    match (request.method, &resource) {
        ("GET", Resource::Health) => Response::text(StatusCode::OK, "ok\n"),
        ("GET", Resource::Ready) => readyz(
            &state.readiness,
            state.metrics.policy_revision.get().as_deref(),
        ),
        ("GET", Resource::Metrics) => {
            if let Some(queue) = state.queue.get() {
                refresh_queue_gauges(queue.as_ref(), &state.metrics).await;
            }
            Response {
                content_type: crate::telemetry::metrics::CONTENT_TYPE,
                ..Response::text(StatusCode::OK, state.metrics.render())
            }
        }
        (method, _) if !resource.allows(method) => Response {
            header: Some(("Allow", resource.allow())),
            ..Response::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        },
        (method, resource) if resource.is_quarantine() => {
            let (Some(quarantine), Some(queue)) = (state.quarantine.get(), state.queue.get())
            else {
                return Response::not_found("no quarantine here");
            };
            quarantine::quarantine_route(quarantine.as_ref(), queue.as_ref(), method, resource)
                .await
        }
        (_, resource) => {
            let Some(queue) = state.queue.get() else {
                return Response::not_found("no queue here");
            };
            queue_route(queue.as_ref(), resource, request, &state.hostname).await
        }
    }
}

/// The answer to a refused queue API request.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Host => Response::text(
            StatusCode::FORBIDDEN,
            "the Host header does not name this listener (add the name to adminAllowedHosts)\n",
        ),
        Refusal::Token => Response {
            header: Some(("WWW-Authenticate", "Bearer")),
            ..Response::text(
                StatusCode::UNAUTHORIZED,
                "the queue API needs Authorization: Bearer <the token of adminTokenFile>\n",
            )
        },
        Refusal::Disabled => Response::text(
            StatusCode::FORBIDDEN,
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
        (StatusCode::OK, "ready\n".to_string())
    } else if readiness.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for {:?}\n", readiness.pending()),
        )
    };
    if let Some(revision) = policy_revision {
        body += &format!("policy revision {revision}\n");
    }
    Response::text(status, body)
}
