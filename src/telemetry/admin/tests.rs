//! Tests of the admin listener's routes, against a real spool.

use super::*;
use crate::envelope::QueueId;
use crate::queue::Queue;
use crate::queue::conformance::envelope;
use crate::queue::spool::Spool;
use std::time::SystemTime;

#[test]
fn request_lines_parse_strictly() {
    let r = request::parse(b"DELETE /queue/X?bounce=1 HTTP/1.1\r\nOrigin: http://a\r\n\r\n");
    let r = r.unwrap();
    assert_eq!(
        (r.method, r.path, r.query),
        ("DELETE", "/queue/X", Some("bounce=1"))
    );
    assert!(r.origin && r.flag("bounce") && !r.flag("other"));
    let plain = request::parse(
        b"GET /queue?bounce=0 HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer t \r\n\r\n",
    )
    .unwrap();
    assert!(!plain.origin && !plain.flag("bounce"));
    assert_eq!(
        (plain.host, plain.authorization),
        (Some("x"), Some("Bearer t"))
    );
    for bad in [
        &b"GET /queue\r\n\r\n"[..],
        b"GET  /queue HTTP/1.1\r\n",
        b"GET / SPDY/3\r\n",
        b"\xff / HTTP/1.1\r\n",
    ] {
        assert!(
            request::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let fields = "X-A: 1\r\n".repeat(request::MAX_HEADERS);
    let head = format!("GET / HTTP/1.1\r\n{fields}\r\n");
    assert!(request::parse(head.as_bytes()).is_ok());
    let head = format!("GET / HTTP/1.1\r\n{fields}Host: x\r\n\r\n");
    assert_eq!(
        request::parse(head.as_bytes()),
        Err(HeadError::TooManyHeaders)
    );
    let twice = b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
    assert_eq!(request::parse(twice), Err(HeadError::Repeated("Host")));
    assert_eq!(
        request::parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
        Err(HeadError::Field)
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

const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

async fn call(state: &AdminState, line: &str) -> (u16, String) {
    let response = route(
        format!("{line} HTTP/1.1\r\nHost: localhost:9090\r\n\r\n").as_bytes(),
        state,
        &Access::new(LOCAL, None, &[]),
        LOCAL,
    )
    .await;
    (response.status[..3].parse().unwrap(), response.body)
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
    let head = format!(
        "DELETE /queue/{b} HTTP/1.1\r\nHost: localhost:9090\r\nOrigin: http://evil\r\n\r\n"
    );
    let access = Access::new(LOCAL, None, &[]);
    let response = route(head.as_bytes(), &state, &access, LOCAL).await;
    assert_eq!(response.status, "403 Forbidden");

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
