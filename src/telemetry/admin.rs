//! The admin HTTP listener: `/healthz` (the process is alive), `/readyz` (every readiness
//! latch released and not draining), `/metrics` (Prometheus text format), and `/queue`
//! (the messages in the queue as JSON; `/queue/<id>` one message with its content), since
//! the spool belongs to the running process and cannot be opened beside it.
//!
//! Probes and scrapers send one small GET each; a minimal HTTP/1.1 responder that reads
//! one bounded request head and closes is all they need, so no HTTP framework is pulled
//! in for it.

use super::metrics::Metrics;
use super::readiness::Readiness;
use crate::queue::{Queue, QueueId};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_REQUEST_HEAD: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub queue: Option<Arc<dyn Queue>>,
}

type Response = (&'static str, &'static str, String);

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
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, content_type, body) = route(&head, state).await;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(head: &[u8], state: &AdminState) -> Response {
    let first_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = first_line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let text = "text/plain; charset=utf-8";
    match (method, path) {
        (Some(b"GET"), Some(b"/healthz")) => ("200 OK", text, "ok\n".into()),
        (Some(b"GET"), Some(b"/readyz")) => readyz(&state.readiness),
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        (Some(b"GET"), Some(path)) if path.starts_with(b"/queue") => queue(path, state).await,
        (Some(b"GET"), _) => ("404 Not Found", text, "not found\n".into()),
        _ => ("405 Method Not Allowed", text, "only GET\n".into()),
    }
}

async fn queue(path: &[u8], state: &AdminState) -> Response {
    let not_found = (
        "404 Not Found",
        "text/plain; charset=utf-8",
        "not found\n".to_string(),
    );
    let Some(queue) = &state.queue else {
        return not_found;
    };
    let path = String::from_utf8_lossy(path);
    let result = match path.strip_prefix("/queue").unwrap_or_default() {
        "" | "/" => queue
            .list()
            .await
            .map(|list| serde_json::to_string_pretty(&list)),
        id => match QueueId::parse(id.trim_start_matches('/')) {
            Some(id) => match queue.inspect(&id).await {
                Ok(Some((entry, content))) => {
                    Ok(serde_json::to_string_pretty(&serde_json::json!({
                        "entry": entry,
                        "message": String::from_utf8_lossy(&content),
                    })))
                }
                Ok(None) => return not_found,
                Err(e) => Err(e),
            },
            None => return not_found,
        },
    };
    match result {
        Ok(Ok(json)) => ("200 OK", "application/json", json + "\n"),
        Ok(Err(e)) => (
            "500 Internal Server Error",
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
        Err(e) => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

fn readyz(readiness: &Readiness) -> Response {
    let text = "text/plain; charset=utf-8";
    if readiness.is_ready() {
        return ("200 OK", text, "ready\n".into());
    }
    let why = if readiness.is_draining() {
        "draining\n".to_string()
    } else {
        format!("waiting for {:?}\n", readiness.pending())
    };
    ("503 Service Unavailable", text, why)
}
