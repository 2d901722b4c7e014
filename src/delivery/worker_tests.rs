//! The worker between a spool and a capturing SMTP sink (tests/common/sink.rs) behind a
//! `*` smarthost route: the events it records, and what it skips on a redelivered lease.

use super::*;
use crate::delivery::client::ClientConfig;
use crate::delivery::dispatch::DispatchSettings;
use crate::delivery::dns::{DnsError, Resolver};
use crate::envelope::QueueId;
use crate::queue::QueueAdmin;
use crate::queue::conformance::envelope;
use crate::queue::spool::Spool;
use crate::smtp::address::Mailbox;
use crate::testing::sink::{Replies, Sink};
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

/// Every next hop of these tests is an IP literal.
struct NoDns;

#[async_trait]
impl Resolver for NoDns {
    async fn mx(&self, _domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn ips(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::NotFound)
    }
}

/// Keeps the events, and answers lookups with `delivered`.
#[derive(Default)]
struct Recorded {
    delivered: Vec<String>,
    events: Mutex<Vec<DeliveryEvent>>,
    lookups: AtomicUsize,
}

#[async_trait]
impl EventSink for Recorded {
    fn emit(&self, event: DeliveryEvent) {
        self.events.lock().unwrap().push(event);
    }
    async fn delivered(&self, _id: &QueueId) -> Vec<String> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.delivered.clone()
    }
}

impl Recorded {
    fn kinds(&self) -> Vec<(EventKind, String)> {
        let events = self.events.lock().unwrap();
        let kind = |e: &DeliveryEvent| (e.kind, e.recipient.clone().unwrap_or_default());
        events.iter().map(kind).collect()
    }
}

/// `b` is refused for good, `c` for now; everyone else is taken.
struct Picky;

impl Replies for Picky {
    fn rcpt(&self, address: &str, _completed: usize) -> String {
        if address.contains("<b@") {
            "550 5.1.1 no such user".into()
        } else if address.contains("<c@") {
            "451 4.3.0 try later".into()
        } else {
            "250 2.1.5 Ok".into()
        }
    }
}

struct Setup {
    worker: Arc<Worker>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    events: Arc<Recorded>,
    sink: Sink,
    _dir: tempfile::TempDir,
}

async fn setup(events: Recorded, retry: RetrySchedule) -> Setup {
    setup_with(events, retry, "").await
}

/// `setup` with `spec_extra` (indented YAML lines) added to the policy's spec.
async fn setup_with(events: Recorded, retry: RetrySchedule, spec_extra: &str) -> Setup {
    let sink = Sink::start(Picky).await;
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: t}}\nspec:\n  routes:\n    - domains: [\"*\"]\n      smarthost: {{host: 127.0.0.1, port: {}, tls: opportunistic}}\n{spec_extra}",
        sink.addr.port()
    );
    let policy = PolicySnapshot::from_yaml(&[("t".into(), policy)]).unwrap();
    let settings = DispatchSettings {
        hostname: "relay.test".into(),
        local_names: vec!["relay.test".into()],
        per_destination: 2,
        max_connections: 4,
        mx_port: 25,
        client: ClientConfig::new("relay.test"),
        secrets_dir: None,
        secrets_key: None,
        guard: Default::default(),
        max_received_headers: 3,
        webhook_timeout: Duration::from_secs(5),
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
    let (metrics, events) = (Arc::new(Metrics::default()), Arc::new(events));
    let worker = Worker::new(
        spool.clone(),
        watch::channel(Arc::new(policy)).1,
        Arc::new(Dispatcher::new(settings, Arc::new(NoDns))),
        retry,
        1,
        metrics.clone(),
        events.clone(),
    );
    Setup {
        worker,
        spool,
        metrics,
        events,
        sink,
        _dir: dir,
    }
}

/// An envelope to `recipients` at example.net, without DSN parameters.
fn plain(recipients: &[&str]) -> Envelope {
    let mut env = envelope(recipients);
    for r in &mut env.recipients {
        (r.notify, r.orcpt) = (None, None);
    }
    env
}

/// Queues `env` with `body` and takes it.
async fn lease_body(spool: &Spool, env: Envelope, body: &[u8]) -> Lease {
    spool.enqueue(&env, body).await.unwrap();
    spool.take(LEASE).await.unwrap().unwrap()
}

/// Queues `env` and takes it; with `lapse`, takes it a second time after a first lease
/// ran out, as when its first worker died.
async fn lease(spool: &Spool, env: Envelope, lapse: bool) -> Lease {
    spool
        .enqueue(&env, b"Subject: t\r\n\r\nhi\r\n")
        .await
        .unwrap();
    let first = spool
        .take(Duration::from_millis(20))
        .await
        .unwrap()
        .unwrap();
    if !lapse {
        return first;
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let again = spool.take(LEASE).await.unwrap().expect("due again");
    assert!(again.redelivered);
    again
}

fn rcpt_lines(sink: &Sink) -> Vec<String> {
    let transactions = sink.transactions();
    transactions.into_iter().flat_map(|t| t.rcpt_to).collect()
}

#[tokio::test]
async fn recipients_delivered_before_a_worker_died_are_not_sent_again() {
    let recorded = Recorded {
        delivered: vec!["a@example.net".into(), "elsewhere@example.org".into()],
        ..Default::default()
    };
    let s = setup(recorded, RetrySchedule::default()).await;
    let lease = lease(&s.spool, plain(&["a", "d"]), true).await;
    let id = lease.envelope.id.clone();
    s.worker.process(lease).await;

    assert_eq!(rcpt_lines(&s.sink), vec!["RCPT TO:<d@example.net>"]);
    assert!(s.spool.inspect(&id).await.unwrap().is_none(), "acked");
    assert_eq!(s.events.lookups.load(Ordering::SeqCst), 1);
    assert_eq!(s.metrics.queue_redeliveries.get(), 1);
    let suppressed = &s.metrics.delivery_duplicates_suppressed;
    assert_eq!(suppressed.get(), 1);
    assert_eq!(
        s.events.kinds(),
        vec![(EventKind::Delivered, "d@example.net".into())],
        "a's delivery is on record already"
    );
}

#[tokio::test]
async fn a_message_delivered_in_full_before_is_only_settled() {
    let recorded = Recorded {
        delivered: vec!["a@example.net".into()],
        ..Default::default()
    };
    let s = setup(recorded, RetrySchedule::default()).await;
    // NOTIFY=SUCCESS: the holder that died never got to queue the success DSN.
    let lease = lease(&s.spool, envelope(&["a"]), true).await;
    let id = lease.envelope.id.clone();
    s.worker.process(lease).await;

    assert_eq!(s.sink.connections.load(Ordering::SeqCst), 0);
    assert!(s.events.kinds().is_empty());
    assert!(s.spool.inspect(&id).await.unwrap().is_none(), "acked");
    let queued = s.spool.list().await.unwrap();
    assert_eq!(queued.len(), 1, "the success DSN");
    assert_eq!(queued[0].envelope.reverse_path, None);
    let (_, dsn) = s
        .spool
        .inspect(&queued[0].envelope.id)
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&dsn).contains("Action: relayed"));
}

#[tokio::test]
async fn a_first_lease_delivers_to_all_and_records_each_outcome() {
    let recorded = Recorded {
        delivered: vec!["a@example.net".into()],
        ..Default::default()
    };
    let s = setup(recorded, RetrySchedule::default()).await;
    let lease = lease(&s.spool, plain(&["a", "b", "c"]), false).await;
    let id = lease.envelope.id.clone();
    s.worker.process(lease).await;

    assert_eq!(rcpt_lines(&s.sink), vec!["RCPT TO:<a@example.net>"]);
    assert_eq!(
        s.events.lookups.load(Ordering::SeqCst),
        0,
        "not redelivered"
    );
    assert_eq!(s.metrics.queue_redeliveries.get(), 0);
    let kinds = s.events.kinds();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Delivered, "a@example.net".into()),
            (EventKind::Bounced, "b@example.net".into()),
            (EventKind::Deferred, "c@example.net".into()),
        ]
    );
    let events = s.events.events.lock().unwrap().clone();
    let route = format!("smarthost:127.0.0.1:{}", s.sink.addr.port());
    assert!(
        events
            .iter()
            .all(|e| e.route.as_deref() == Some(route.as_str()))
    );
    assert!(events.iter().all(|e| e.queue_id == id && e.attempts == 1));
    assert!(events[1].reply.starts_with("550 5.1.1"), "{:?}", events[1]);
    assert!(events[2].reply.starts_with("451 4.3.0"), "{:?}", events[2]);
    let (entry, _) = s.spool.inspect(&id).await.unwrap().expect("c is deferred");
    assert_eq!(entry.envelope.recipients.len(), 1);
}

#[tokio::test]
async fn a_recipient_deferred_past_the_lifetime_expires_on_record() {
    let retry = RetrySchedule {
        max_lifetime: Duration::ZERO,
        ..RetrySchedule::default()
    };
    let s = setup(Recorded::default(), retry).await;
    let lease = lease(&s.spool, plain(&["c"]), false).await;
    let id = lease.envelope.id.clone();
    s.worker.process(lease).await;

    assert!(s.spool.inspect(&id).await.unwrap().is_none(), "acked");
    assert_eq!(
        s.events.kinds(),
        vec![
            (EventKind::Deferred, "c@example.net".into()),
            (EventKind::Expired, "c@example.net".into()),
        ]
    );
    let events = s.events.events.lock().unwrap().clone();
    assert!(events[1].reply.contains("451 4.3.0"), "{:?}", events[1]);
}

/// The whole path on JetStream: a worker fetched the message, delivered to `a` (its
/// event is on record) and died; after ack_wait the next worker delivers to `d` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_worker_died_on_jetstream_only_the_rest_is_delivered() {
    use crate::events::jetstream::{JetStreamEvents, subject};
    use crate::queue::jetstream::{JetStreamOptions, JetStreamQueue};
    use async_nats::jetstream::consumer::PullConsumer;
    use futures_util::StreamExt;

    let server = crate::testing::nats::NatsServer::start();
    let options = JetStreamOptions {
        ack_wait: Duration::from_millis(500),
        ..Default::default()
    };
    let queue = Arc::new(
        JetStreamQueue::connect(&server.url(), options.clone())
            .await
            .unwrap(),
    );
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let s = setup(Recorded::default(), RetrySchedule::default()).await;
    let events = JetStreamEvents::open(js.clone(), 1, s.metrics.clone())
        .await
        .unwrap();
    let env = plain(&["a", "d"]);
    queue
        .enqueue(&env, b"Subject: t\r\n\r\nhi\r\n")
        .await
        .unwrap();

    // The worker that died: fetched, never acked; its delivery to `a` is on record.
    let stream = js.get_stream(&options.stream).await.unwrap();
    let consumer: PullConsumer = stream.get_consumer(&options.consumer).await.unwrap();
    let mut fetched = consumer.fetch().max_messages(1).messages().await.unwrap();
    fetched.next().await.expect("fetched").unwrap();
    let delivered = DeliveryEvent::about(
        EventKind::Delivered,
        &env,
        Some(&env.recipients[0]),
        SystemTime::now(),
    );
    let json = serde_json::to_vec(&delivered).unwrap();
    let ack = js.publish(subject(&env.id, EventKind::Delivered), json.into());
    ack.await.unwrap().await.unwrap();

    let worker = Worker::new(
        queue.clone(),
        s.worker.policy.clone(),
        s.worker.dispatcher.clone(),
        RetrySchedule::default(),
        1,
        s.metrics.clone(),
        events.clone(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.clone().run(stop.clone()));
    let received = s.sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "delivered after ack_wait");
    assert_eq!(rcpt_lines(&s.sink), vec!["RCPT TO:<d@example.net>"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.queue_stats().await.unwrap().messages > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never acked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap();
    assert_eq!(s.metrics.queue_redeliveries.get(), 1);
    let suppressed = &s.metrics.delivery_duplicates_suppressed;
    assert_eq!(suppressed.get(), 1);
    events.close(Duration::from_secs(5)).await;
    let recorded = events.delivered(&env.id).await;
    assert_eq!(recorded, vec!["a@example.net", "d@example.net"]);
}

/// `Received:` headers on top of a small message.
fn with_hops(hops: usize) -> Vec<u8> {
    let mut body = "Received: from a by b; Mon, 7 Dec 2026 00:00:00 +0000\r\n".repeat(hops);
    body.push_str("Subject: hops\r\n\r\nReceived: in the body does not count\r\n");
    body.into_bytes()
}

#[tokio::test]
async fn a_queued_message_with_too_many_hops_bounces_without_delivery() {
    // The limit is 3, plus the header of our own ingress: 4 pass, 5 are a loop.
    let s = setup(Recorded::default(), RetrySchedule::default()).await;
    let lease = lease_body(&s.spool, plain(&["a", "d"]), &with_hops(5)).await;
    let id = lease.envelope.id.clone();
    s.worker.process(lease).await;

    assert_eq!(s.sink.connections.load(Ordering::SeqCst), 0, "not relayed");
    assert!(s.spool.inspect(&id).await.unwrap().is_none(), "acked");
    let events = s.events.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.kind, EventKind::Bounced);
        assert!(
            event.reply.starts_with("554 5.4.6 too many hops: 5"),
            "{event:?}"
        );
    }
    let queued = s.spool.list().await.unwrap();
    assert_eq!(queued.len(), 1, "the bounce to the sender");
    let (_, dsn) = s
        .spool
        .inspect(&queued[0].envelope.id)
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&dsn).contains("Status: 5.4.6"));

    let s = setup(Recorded::default(), RetrySchedule::default()).await;
    let lease = lease_body(&s.spool, plain(&["a"]), &with_hops(4)).await;
    s.worker.process(lease).await;
    assert_eq!(rcpt_lines(&s.sink), vec!["RCPT TO:<a@example.net>"]);
}

#[tokio::test]
async fn the_policys_max_lifetime_expires_a_message_into_a_bounce() {
    // Configured: 5 days. The policy says 1 hour, and the message is 2 hours old.
    let two_hours_ago = || {
        let mut env = plain(&["c"]);
        env.received_at_ms -= 2 * 3600 * 1000;
        env
    };
    let s = setup_with(
        Recorded::default(),
        RetrySchedule::default(),
        "  retry: {maxLifetime: 1h}\n",
    )
    .await;
    let taken = lease(&s.spool, two_hours_ago(), false).await;
    let id = taken.envelope.id.clone();
    s.worker.process(taken).await;
    assert!(s.spool.inspect(&id).await.unwrap().is_none(), "acked");
    assert_eq!(
        s.events.kinds(),
        vec![
            (EventKind::Deferred, "c@example.net".into()),
            (EventKind::Expired, "c@example.net".into()),
        ]
    );
    assert_eq!(s.spool.list().await.unwrap().len(), 1, "the bounce");

    // Without the policy's lifetime the configured 5 days apply: deferred, not expired.
    let s = setup(Recorded::default(), RetrySchedule::default()).await;
    let taken = lease(&s.spool, two_hours_ago(), false).await;
    let id = taken.envelope.id.clone();
    s.worker.process(taken).await;
    assert!(s.spool.inspect(&id).await.unwrap().is_some(), "deferred");
    assert_eq!(
        s.events.kinds(),
        vec![(EventKind::Deferred, "c@example.net".into())]
    );
}

#[tokio::test]
async fn address_literals_bounce_at_delivery_unless_the_policy_allows_them() {
    let literal = |local: &str| {
        let mut env = plain(&[local]);
        env.recipients[0].address = Mailbox::new(local, "[127.0.0.1]");
        env
    };
    let s = setup(Recorded::default(), RetrySchedule::default()).await;
    let taken = lease(&s.spool, literal("a"), false).await;
    s.worker.process(taken).await;
    assert_eq!(s.sink.connections.load(Ordering::SeqCst), 0);
    let events = s.events.events.lock().unwrap().clone();
    assert_eq!(events[0].kind, EventKind::Bounced);
    assert!(events[0].reply.starts_with("550 5.7.1"), "{:?}", events[0]);

    let s = setup_with(
        Recorded::default(),
        RetrySchedule::default(),
        "  addressLiterals: allow\n",
    )
    .await;
    let taken = lease(&s.spool, literal("a"), false).await;
    s.worker.process(taken).await;
    assert_eq!(rcpt_lines(&s.sink), vec!["RCPT TO:<a@[127.0.0.1]>"]);
}
