//! Tests of the admin listener's routes, over real HTTP on loopback, against a real
//! spool.

use super::*;
use crate::envelope::QueueId;
use crate::queue::Queue;
use crate::queue::conformance::envelope;
use crate::queue::spool::Spool;
use access::Access;
use request::HeadError;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A listener serving `state` on a loopback port until dropped.
pub(super) struct Served {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) async fn serve(state: &AdminState, limits: Limits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let access = Access::new(addr, None, &[]);
    tokio::spawn(run_with(
        listener,
        state.clone(),
        access,
        limits,
        stop.clone(),
    ));
    Served { addr, stop }
}

/// Sends `head` as it is and reads the answer to the end: its status and body, or
/// `None` when the connection closed without one.
pub(super) async fn raw(addr: SocketAddr, head: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer or a close within 30 s");
    parse_answer(&answer)
}

pub(super) fn parse_answer(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, body.to_string()))
}

async fn call(state: &AdminState, line: &str) -> (u16, String) {
    let served = serve(state, Limits::default()).await;
    let port = served.addr.port();
    let head = format!("{line} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    raw(served.addr, head.as_bytes()).await.expect("an answer")
}

fn parts(line: &str, fields: &[(&str, &str)]) -> hyper::http::request::Parts {
    let (method, target) = line.split_once(' ').unwrap();
    let mut builder = hyper::Request::builder().method(method).uri(target);
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn requests_are_read_strictly() {
    let p = parts("DELETE /queue/X?bounce=1", &[("Origin", "http://a")]);
    let r = Request::from_parts(&p).unwrap();
    assert_eq!(
        (r.method, r.path, r.query),
        ("DELETE", "/queue/X", Some("bounce=1"))
    );
    assert!(r.origin && r.flag("bounce") && !r.flag("other"));
    let p = parts(
        "GET /queue?bounce=0",
        &[("Host", "x"), ("Authorization", "Bearer t")],
    );
    let plain = Request::from_parts(&p).unwrap();
    assert!(!plain.origin && !plain.flag("bounce"));
    assert_eq!(
        (plain.host, plain.authorization),
        (Some("x"), Some("Bearer t"))
    );
    let twice = parts("GET /", &[("Host", "a"), ("host", "b")]);
    assert_eq!(
        Request::from_parts(&twice),
        Err(HeadError::Repeated("Host"))
    );
    let twice = parts("GET /", &[("Authorization", "a"), ("Authorization", "b")]);
    assert_eq!(
        Request::from_parts(&twice),
        Err(HeadError::Repeated("Authorization"))
    );
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

/// What used to be the hand-written parser's refusals, now hyper's or ours, over HTTP.
#[tokio::test]
async fn bad_heads_are_refused_over_http() {
    let state = AdminState {
        metrics: Arc::default(),
        readiness: Arc::default(),
        queue: QueueSlot::default(),
        quarantine: QuarantineSlot::default(),
        hostname: "relay.test".into(),
    };
    let served = serve(&state, Limits::default()).await;
    let addr = served.addr;
    for bad in [
        &b"GET /queue\r\n\r\n"[..],
        b"GET  /queue HTTP/1.1\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"\xff / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        let answer = raw(addr, bad).await;
        assert!(
            answer.as_ref().is_none_or(|(status, _)| *status == 400),
            "{}: {answer:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let fields = "X-A: 1\r\n".repeat(request::MAX_HEADERS - 1);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
    assert_eq!(raw(addr, head.as_bytes()).await.unwrap().0, 200);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}X-B: 2\r\n\r\n");
    assert_eq!(raw(addr, head.as_bytes()).await.unwrap().0, 431);
    let long = "a".repeat(MAX_REQUEST_HEAD);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {long}\r\n\r\n");
    assert_eq!(raw(addr, head.as_bytes()).await.unwrap().0, 431);
    let twice = format!("GET /queue HTTP/1.1\r\nHost: {addr}\r\nhost: {addr}\r\n\r\n");
    let (status, body) = raw(addr, twice.as_bytes()).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (400, "bad request: Host given twice\n")
    );
    let body = "x".repeat(MAX_REQUEST_BODY + 1);
    let head = format!(
        "POST /queue/retry HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(raw(addr, head.as_bytes()).await.unwrap().0, 413);
}

#[tokio::test]
async fn readyz_names_the_policy_revision_once_there_is_one() {
    use crate::telemetry::readiness::Latch;
    let state = AdminState {
        metrics: Arc::default(),
        readiness: Arc::default(),
        queue: QueueSlot::default(),
        quarantine: QuarantineSlot::default(),
        hostname: "relay.test".into(),
    };
    let (status, body) = call(&state, "GET /readyz").await;
    assert_eq!(status, 503);
    assert!(!body.contains("policy revision"), "{body}");

    state.metrics.policy_revision.set("abc1");
    state.readiness.release(Latch::Policy);
    let (status, body) = call(&state, "GET /readyz").await;
    assert_eq!(status, 503);
    assert!(body.ends_with("\npolicy revision abc1\n"), "{body}");
    for latch in [Latch::Listeners, Latch::Tls, Latch::Queue] {
        state.readiness.release(latch);
    }
    state.metrics.policy_revision.set("def2");
    let answer = call(&state, "GET /readyz").await;
    assert_eq!(answer, (200, "ready\npolicy revision def2\n".to_string()));
}

#[tokio::test]
async fn queue_routes_retry_delete_and_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
    let state = AdminState {
        metrics: Arc::default(),
        readiness: Arc::default(),
        queue: queue_slot(spool.clone()),
        quarantine: QuarantineSlot::default(),
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
    let served = serve(&state, Limits::default()).await;
    let head = format!(
        "DELETE /queue/{b} HTTP/1.1\r\nHost: localhost:{}\r\nOrigin: http://evil\r\n\r\n",
        served.addr.port()
    );
    let response = raw(served.addr, head.as_bytes()).await.unwrap();
    assert_eq!(response.0, 403);

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
        queue: queue_slot(spool.clone()),
        quarantine: QuarantineSlot::default(),
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
        queue: queue_slot(spool.clone()),
        quarantine: QuarantineSlot::default(),
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

#[tokio::test]
async fn quarantine_routes_list_show_release_and_delete() {
    use crate::queue::quarantine::Quarantine;
    use crate::queue::quarantine::contract::record;
    use crate::queue::spool::SpoolQuarantine;
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&dir.path().join("q")).await.unwrap());
    let limits = crate::queue::jetstream::codec::EnvelopeLimits::default();
    let held = Arc::new(SpoolQuarantine::open(dir.path(), limits).await.unwrap());
    let mut state = AdminState {
        metrics: Arc::default(),
        readiness: Arc::default(),
        queue: queue_slot(spool.clone()),
        quarantine: QuarantineSlot::default(),
        hostname: "relay.test".into(),
    };
    assert_eq!(call(&state, "GET /quarantine").await.0, 404, "none here");
    state.quarantine = Arc::new(std::sync::OnceLock::from(
        held.clone() as Arc<dyn Quarantine>
    ));
    let (one, two) = (record(&["a"], 1, b"one"), record(&["b"], 2, b"two"));
    held.hold(&one, b"one").await.unwrap();
    held.hold(&two, b"two").await.unwrap();
    let (a, b) = (&one.envelope.id, &two.envelope.id);

    let (status, body) = call(&state, "GET /quarantine").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<crate::queue::quarantine::HeldMessage> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed, [one.clone(), two.clone()]);
    let (status, body) = call(&state, &format!("GET /quarantine/{a}")).await;
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            shown["held"]["envelope"]["id"].as_str(),
            shown["message"].as_str()
        ),
        (Some(a.as_str()), Some("one"))
    );
    assert_eq!(call(&state, &format!("PUT /quarantine/{a}")).await.0, 405);
    assert_eq!(
        call(&state, &format!("GET /quarantine/{a}/release"))
            .await
            .0,
        405
    );
    assert_eq!(call(&state, "GET /quarantine/nonsense").await.0, 404);

    let (status, body) = call(&state, &format!("POST /quarantine/{a}/release")).await;
    assert_eq!(status, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).unwrap();
    let queued = QueueId::parse(released["queued"].as_str().unwrap()).unwrap();
    let (entry, content) = spool.inspect(&queued).await.unwrap().expect("queued");
    assert_eq!(
        (entry.envelope.recipients, content),
        (one.envelope.recipients.clone(), b"one".to_vec())
    );
    assert_eq!(
        call(&state, &format!("POST /quarantine/{a}/release"))
            .await
            .0,
        404
    );
    assert_eq!(
        call(&state, &format!("DELETE /quarantine/{b}")).await.0,
        200
    );
    assert_eq!(
        call(&state, &format!("DELETE /quarantine/{b}")).await.0,
        404
    );
    assert_eq!(call(&state, "GET /quarantine").await, (200, "[]\n".into()));
}
