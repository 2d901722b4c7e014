//! The admin listener's connections, on hyper's HTTP/1.1 server: accepting under a
//! connection limit, the deadlines of each phase of a request, and shutdown.
//!
//! A connection goes through three phases, each with its own deadline:
//! - **head**: from the accept until hyper has framed the request head,
//!   [`Limits::header_timeout`] (hyper's own header-read timeout too, and a slowloris
//!   trickling one header byte at a time is cut all the same);
//! - **handling**: reading the body (bounded by [`Limits::body_timeout`] and
//!   [`super::MAX_REQUEST_BODY`]), then the route, with no deadline: a `POST
//!   /queue/retry` over a long queue must finish, and dropping it half-way would leave
//!   the operator guessing which messages were retried;
//! - **answering**: writing the response, [`super::WRITE_TIMEOUT`].
//!
//! Over [`Limits::max_connections`], a new connection is answered `503` at once and
//! closed, rather than left waiting in the accept backlog: a probe or `sluice queue`
//! learns immediately that the listener is busy instead of timing out, and nothing is
//! spent on it (the answer is one non-blocking write into an empty socket buffer).
//!
//! Shutdown stops the accepting; a connection in its head phase is closed, one whose
//! request is being handled finishes it (hyper's graceful shutdown), as before.

use super::access::Access;
use super::request::{MAX_HEADERS, Request};
use super::{AdminState, MAX_REQUEST_BODY, MAX_REQUEST_HEAD, Response, route};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// The answer to a connection over the limit, written before closing it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nConnection: close\r\n\r\ntoo many admin connections, try again\n";

/// The bounds of the listener; [`Default`] is the constants of [`super`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: super::MAX_CONNECTIONS,
            header_timeout: super::HEADER_TIMEOUT,
            body_timeout: super::BODY_TIMEOUT,
            write_timeout: super::WRITE_TIMEOUT,
        }
    }
}

/// Where a connection is; its deadline depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Handling,
    Answering,
}

/// Serves until `shutdown` is cancelled, the queue API as `access` says, with the
/// default [`Limits`].
pub async fn run(
    listener: TcpListener,
    state: AdminState,
    access: Access,
    shutdown: CancellationToken,
) {
    run_with(listener, state, access, Limits::default(), shutdown).await
}

/// [`run`] with other bounds (the tests make them small).
pub async fn run_with(
    listener: TcpListener,
    state: AdminState,
    access: Access,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let access = Arc::new(access);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = limits.max_connections,
                "admin connection refused: too many"
            );
            let _ = stream.try_write(BUSY);
            continue;
        };
        let (state, access, shutdown) = (state.clone(), access.clone(), shutdown.clone());
        tokio::spawn(connection(stream, state, access, limits, shutdown, slot));
    }
}

/// Serves one connection (one request: no keep-alive) within the deadlines of its
/// phases; `_slot` is its place under the connection limit, given back on return.
async fn connection(
    stream: TcpStream,
    state: AdminState,
    access: Arc<Access>,
    limits: Limits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (phase_tx, mut phase) = watch::channel(Phase::Head);
    let phase_tx = Arc::new(phase_tx);
    let service = service_fn(move |request| {
        let (state, access, phase) = (state.clone(), access.clone(), phase_tx.clone());
        async move {
            phase.send_replace(Phase::Handling);
            let response = handle(request, &state, &access, local, limits.body_timeout).await;
            phase.send_replace(Phase::Answering);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        // The field names as before (`Content-Type`, `Allow`), for scripts that grep.
        .title_case_headers(true)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let current = *phase.borrow_and_update();
        let deadline = match current {
            Phase::Head => Some(limits.header_timeout),
            Phase::Handling => None,
            Phase::Answering => Some(limits.write_timeout),
        };
        let expiry = async {
            match deadline {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = expiry => {
                tracing::debug!(phase = ?current, "admin connection timed out");
                return;
            }
            changed = phase.changed() => if changed.is_err() {
                // The service is gone with hyper's connection, which ends next.
                continue;
            },
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Reads the (bounded) body, then routes; every answer closes the connection.
async fn handle(
    request: hyper::Request<Incoming>,
    state: &AdminState,
    access: &Access,
    local: SocketAddr,
    body_timeout: Duration,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_REQUEST_BODY).collect();
    let response = match tokio::time::timeout(body_timeout, body).await {
        Err(_) => Response::text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Response::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
        }
        Ok(Err(e)) => Response::text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
        Ok(Ok(_)) => match Request::from_parts(&parts) {
            Ok(request) => route(&request, state, access, local).await,
            Err(e) => Response::text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
        },
    };
    into_hyper(response)
}

fn into_hyper(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut answer = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *answer.status_mut() = response.status;
    let headers = answer.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(response.content_type),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if let Some((name, value)) = response.header {
        headers.insert(name, HeaderValue::from_static(value));
    }
    answer
}
