//! The admin HTTP listener: `/healthz` (the process is alive), `/readyz` (every readiness
//! latch released and not draining), `/metrics` (Prometheus text format), and the queue
//! API that `sluice queue` talks to, since the spool belongs to the running process and
//! cannot be opened beside it (as postqueue talks to showq):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /queue` | every message, oldest first, as a JSON array of `QueueEntry` |
//! | `GET /queue/<id>` | `{"entry": QueueEntry, "message": content}` |
//! | `POST /queue/<id>/retry` | makes the message due now: `{"id", "retried": true}` |
//! | `POST /queue/retry` | makes every waiting message due now: `{"retried": n, "skipped": n}` |
//! | `DELETE /queue/<id>` | removes the message durably: `{"envelope": Envelope, "size": n}` |
//! | `DELETE /queue/<id>?bounce=1` | the same, and its sender gets a failure DSN: `{…, "bounce": id or null}` |
//!
//! An unknown id is 404, a message being delivered (leased) 409, a known path with the
//! wrong method 405 with `Allow`.
//!
//! `GET /metrics` refreshes the queue gauges from [`Queue::queue_stats`] first: the scrape is
//! the only reader, so that is as fresh as they can be and costs nothing in between.
//!
//! The listener has no authentication: it belongs on loopback (or behind a
//! NetworkPolicy). So that a web page in a browser on the same host cannot change the
//! queue, requests that change something are refused when they carry an `Origin` header,
//! which browsers always send with them and `sluice queue` never does.
//!
//! Probes, scrapers and the queue tools send one small request each; a minimal HTTP/1.1
//! responder that reads one bounded request head (no body) and closes is all they need,
//! so no HTTP framework is pulled in for it.

use super::metrics::Metrics;
use super::readiness::Readiness;
use crate::delivery::Outcome;
use crate::delivery::dsn::{self, ReportKind};
use crate::queue::{Envelope, Queue, QueueError, QueueId, unix_ms};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_REQUEST_HEAD: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub queue: Option<Arc<dyn Queue>>,
    /// Our host name: the reporting MTA of the bounces that `DELETE ?bounce=1` sends.
    pub hostname: String,
}

#[derive(Debug)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
            allow: None,
        }
    }

    fn json(value: &impl Serialize) -> Response {
        match serde_json::to_string_pretty(value) {
            Ok(json) => Response {
                status: "200 OK",
                content_type: "application/json",
                body: json + "\n",
                allow: None,
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

/// Serves until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
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
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &state)).await;
        });
    }
}

async fn serve(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let response = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break route(&head, state).await;
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
        .allow
        .map(|a| format!("Allow: {a}\r\n"))
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

/// The request line and the one header we look at.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    /// A browser sent it (see the module notes).
    origin: bool,
}

impl<'a> Request<'a> {
    /// `request-line = method SP request-target SP HTTP-version CRLF` (RFC 9112 3), then
    /// header fields; `None` for anything else.
    fn parse(head: &'a [u8]) -> Option<Request<'a>> {
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let mut parts = lines.next()?.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
            return None;
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let origin = lines.any(|line| {
            line.split_once(':')
                .is_some_and(|(name, _)| name.eq_ignore_ascii_case("origin"))
        });
        Some(Request {
            method,
            path,
            query,
            origin,
        })
    }

    /// Whether the query has `name` set to anything but `0`/`false`.
    fn flag(&self, name: &str) -> bool {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .any(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                key == name && !matches!(value, "0" | "false")
            })
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Health,
    Ready,
    Metrics,
    Queue,
    Message(QueueId),
    RetryAll,
    Retry(QueueId),
}

impl Resource {
    fn parse(path: &str) -> Option<Resource> {
        Some(match path {
            "/healthz" => Resource::Health,
            "/readyz" => Resource::Ready,
            "/metrics" => Resource::Metrics,
            "/queue" | "/queue/" => Resource::Queue,
            "/queue/retry" => Resource::RetryAll,
            _ => {
                let rest = path.strip_prefix("/queue/")?;
                match rest.strip_suffix("/retry") {
                    Some(id) => Resource::Retry(QueueId::parse(id)?),
                    None => Resource::Message(QueueId::parse(rest)?),
                }
            }
        })
    }

    fn allow(&self) -> &'static str {
        match self {
            Resource::Health | Resource::Ready | Resource::Metrics | Resource::Queue => "GET",
            Resource::Message(_) => "GET, DELETE",
            Resource::RetryAll | Resource::Retry(_) => "POST",
        }
    }

    fn allows(&self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

async fn route(head: &[u8], state: &AdminState) -> Response {
    let Some(request) = Request::parse(head) else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let Some(resource) = Resource::parse(request.path) else {
        return Response::not_found("not found");
    };
    if request.method != "GET" && request.origin {
        return Response::text("403 Forbidden", "cross-origin requests are refused\n");
    }
    match (request.method, &resource) {
        ("GET", Resource::Health) => Response::text("200 OK", "ok\n"),
        ("GET", Resource::Ready) => readyz(&state.readiness),
        ("GET", Resource::Metrics) => {
            if let Some(queue) = &state.queue {
                refresh_queue_gauges(queue.as_ref(), &state.metrics).await;
            }
            Response {
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                ..Response::text("200 OK", state.metrics.render())
            }
        }
        (method, _) if !resource.allows(method) => Response {
            allow: Some(resource.allow()),
            ..Response::text("405 Method Not Allowed", "method not allowed\n")
        },
        (method, resource) => {
            let Some(queue) = &state.queue else {
                return Response::not_found("no queue here");
            };
            queue_route(queue.as_ref(), method, resource, &request, &state.hostname).await
        }
    }
}

/// Sets the queue gauges; when the queue cannot say, they keep their last values and
/// the scrape is answered all the same.
async fn refresh_queue_gauges(queue: &dyn Queue, metrics: &Metrics) {
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

async fn queue_route(
    queue: &dyn Queue,
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

async fn show(queue: &dyn Queue, id: &QueueId) -> Response {
    match queue.inspect(id).await {
        Ok(Some((entry, content))) => Response::json(&serde_json::json!({
            "entry": entry,
            "message": String::from_utf8_lossy(&content),
        })),
        Ok(None) => Response::not_found(format_args!("no message {id}")),
        Err(e) => Response::queue_error(e),
    }
}

async fn retry(queue: &dyn Queue, id: &QueueId) -> Response {
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

async fn retry_all(queue: &dyn Queue) -> Response {
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

async fn delete(queue: &dyn Queue, id: &QueueId) -> Response {
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
async fn delete_and_bounce(queue: &dyn Queue, id: &QueueId, hostname: &str) -> Response {
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
        now,
    )
}

/// Takes back the DSN of a deletion that did not happen.
async fn withdraw(queue: &dyn Queue, id: &QueueId, dsn_id: &QueueId) {
    match queue.remove(dsn_id).await {
        Ok(_) => {
            tracing::info!(queue_id = %id, notification = %dsn_id, "deletion failed; its bounce was withdrawn")
        }
        Err(e) => {
            tracing::error!(queue_id = %id, notification = %dsn_id, error = %e, "deletion failed, but its bounce could not be withdrawn and will be sent")
        }
    }
}

fn readyz(readiness: &Readiness) -> Response {
    if readiness.is_ready() {
        return Response::text("200 OK", "ready\n");
    }
    let why = if readiness.is_draining() {
        "draining\n".to_string()
    } else {
        format!("waiting for {:?}\n", readiness.pending())
    };
    Response::text("503 Service Unavailable", why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance::envelope;
    use crate::queue::spool::Spool;
    use std::time::SystemTime;

    #[test]
    fn request_lines_parse_strictly() {
        let r = Request::parse(b"DELETE /queue/X?bounce=1 HTTP/1.1\r\nOrigin: http://a\r\n\r\n");
        let r = r.unwrap();
        assert_eq!(
            (r.method, r.path, r.query),
            ("DELETE", "/queue/X", Some("bounce=1"))
        );
        assert!(r.origin && r.flag("bounce") && !r.flag("other"));
        let plain = Request::parse(b"GET /queue?bounce=0 HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        assert!(!plain.origin && !plain.flag("bounce"));
        for bad in [
            &b"GET /queue\r\n\r\n"[..],
            b"GET  /queue HTTP/1.1\r\n",
            b"GET / SPDY/3\r\n",
            b"\xff / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                Request::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let id = QueueId::generate();
        assert_eq!(
            Resource::parse(&format!("/queue/{id}/retry")),
            Some(Resource::Retry(id.clone()))
        );
        assert_eq!(
            Resource::parse(&format!("/queue/{id}")),
            Some(Resource::Message(id))
        );
        assert_eq!(Resource::parse("/queue/retry"), Some(Resource::RetryAll));
        assert_eq!(Resource::parse("/queue/nonsense"), None);
        assert_eq!(Resource::parse("/queue/retry/retry"), None);
    }

    async fn call(state: &AdminState, line: &str) -> (u16, String) {
        let response = route(
            format!("{line} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            state,
        )
        .await;
        (response.status[..3].parse().unwrap(), response.body)
    }

    #[tokio::test]
    async fn queue_routes_retry_delete_and_refuse_what_they_must() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
        let state = AdminState {
            metrics: Arc::default(),
            readiness: Arc::default(),
            queue: Some(spool.clone()),
            hostname: "relay.test".into(),
        };
        let (leased, deferred) = (envelope(&["a"]), envelope(&["b"]));
        spool.enqueue(&leased, b"one").await.unwrap();
        spool.enqueue(&deferred, b"two").await.unwrap();
        let lease = spool.take(Duration::from_secs(60)).await.unwrap().unwrap();
        let other = spool.take(Duration::from_secs(60)).await.unwrap().unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        spool
            .defer(&other, later, vec![], "451 x".into())
            .await
            .unwrap();
        let unknown = QueueId::generate();
        let (a, b) = (&leased.id, &deferred.id);

        assert_eq!(call(&state, &format!("POST /queue/{a}/retry")).await.0, 409);
        assert_eq!(call(&state, &format!("DELETE /queue/{a}")).await.0, 409);
        assert_eq!(
            call(&state, &format!("POST /queue/{unknown}/retry"))
                .await
                .0,
            404
        );
        assert_eq!(
            call(&state, &format!("DELETE /queue/{unknown}")).await.0,
            404
        );
        assert_eq!(call(&state, "GET /queue/retry").await.0, 405);
        assert_eq!(call(&state, &format!("PUT /queue/{a}")).await.0, 405);
        assert_eq!(call(&state, "DELETE /queue").await.0, 405);
        assert_eq!(
            call(&state, &format!("DELETE /queue/{a}?bounce=1")).await.0,
            409
        );
        assert_eq!(
            spool.queue_stats().await.unwrap().messages,
            2,
            "no bounce queued"
        );
        let head = format!("DELETE /queue/{b} HTTP/1.1\r\nOrigin: http://evil\r\n\r\n");
        assert_eq!(route(head.as_bytes(), &state).await.status, "403 Forbidden");

        let (status, body) = call(&state, "POST /queue/retry").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "{\n  \"retried\": 1,\n  \"skipped\": 1\n}\n")
        );
        assert_eq!(call(&state, &format!("POST /queue/{b}/retry")).await.0, 200);
        let (status, body) = call(&state, &format!("DELETE /queue/{b}")).await;
        assert_eq!(status, 200, "{body}");
        let removed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(removed["envelope"]["id"], b.as_str());
        assert_eq!(removed["envelope"]["last_error"], "451 x");
        assert_eq!(removed["size"], 3);
        assert_eq!(call(&state, &format!("GET /queue/{b}")).await.0, 404);
        spool.ack(&lease).await.unwrap();
        assert_eq!(call(&state, "GET /queue").await, (200, "[]\n".into()));
    }

    #[tokio::test]
    async fn delete_with_bounce_queues_a_failure_dsn_to_the_sender_only() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
        let state = AdminState {
            metrics: Arc::default(),
            readiness: Arc::default(),
            queue: Some(spool.clone()),
            hostname: "relay.test".into(),
        };
        let mut original = envelope(&["a", "b"]);
        // NOTIFY=SUCCESS,FAILURE on the first, none on the second: both are reported.
        original.recipients[1].notify = None;
        let mut null_sender = envelope(&["c"]);
        null_sender.reverse_path = None;
        spool
            .enqueue(&original, b"Subject: x\r\n\r\nhi\r\n")
            .await
            .unwrap();
        spool.enqueue(&null_sender, b"hi\r\n").await.unwrap();

        let (status, body) = call(&state, &format!("DELETE /queue/{}?bounce=1", original.id)).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["envelope"]["id"], original.id.as_str());
        let dsn_id = QueueId::parse(answer["bounce"].as_str().unwrap()).unwrap();
        let (entry, message) = spool.inspect(&dsn_id).await.unwrap().expect("DSN queued");
        assert_eq!(entry.envelope.reverse_path, None);
        let to: Vec<_> = entry
            .envelope
            .recipients
            .iter()
            .map(|r| &r.address)
            .collect();
        assert_eq!(to, [original.reverse_path.as_ref().unwrap()]);
        let text = String::from_utf8_lossy(&message);
        for needle in [
            "Reporting-MTA: dns; relay.test\r\n",
            "Final-Recipient: rfc822; a@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n",
            "Final-Recipient: rfc822; b@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n",
            "Diagnostic-Code: X-Sluice; message deleted by the mail system administrator\r\n",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
        assert!(spool.inspect(&original.id).await.unwrap().is_none());

        // A bounce is never bounced: deleted, nothing queued.
        let (status, body) = call(
            &state,
            &format!("DELETE /queue/{}?bounce=1", null_sender.id),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"bounce\": null"), "{body}");
        let left: Vec<_> = spool
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.id)
            .collect();
        assert_eq!(left, [dsn_id]);
        let unknown = QueueId::generate();
        assert_eq!(
            call(&state, &format!("DELETE /queue/{unknown}?bounce=1"))
                .await
                .0,
            404
        );
    }

    #[tokio::test]
    async fn metrics_carry_the_queue_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
        let state = AdminState {
            metrics: Arc::default(),
            readiness: Arc::default(),
            queue: Some(spool.clone()),
            hostname: "relay.test".into(),
        };
        let old = envelope(&["a"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        spool.enqueue(&envelope(&["b"]), b"x").await.unwrap();
        spool.enqueue(&old, b"x").await.unwrap();
        let (status, text) = call(&state, "GET /metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("\nsluice_queue_messages 2\n"), "{text}");
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("sluice_queue_oldest_age_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.05..60.0).contains(&age), "{age}: the older id counts");
    }
}
