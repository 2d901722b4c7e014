//! The events stream against a real `nats-server` (see tests/common/nats.rs).

use super::*;
use crate::queue::conformance::envelope;
use crate::telemetry::metrics::EventLoss;
use crate::testing::nats::NatsServer;
use std::time::{Instant, SystemTime};

async fn context(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    jetstream::new(client)
}

async fn events(server: &NatsServer) -> (Arc<JetStreamEvents>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let sink = JetStreamEvents::open(context(server).await, 1, metrics.clone())
        .await
        .expect("open the events stream");
    (sink, metrics)
}

fn event(kind: EventKind, env: &crate::envelope::Envelope, rcpt: usize) -> DeliveryEvent {
    DeliveryEvent {
        reply: format!("{} reply", kind.as_str()),
        route: Some("mx:example.net".into()),
        ..DeliveryEvent::about(kind, env, Some(&env.recipients[rcpt]), SystemTime::now())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_on_their_subjects_as_json() {
    let server = NatsServer::start();
    let (sink, metrics) = events(&server).await;
    let env = envelope(&["a", "b"]);
    let sent = [
        DeliveryEvent::accepted(&env, SystemTime::now()),
        event(EventKind::Delivered, &env, 0),
        event(EventKind::Deferred, &env, 1),
    ];
    for e in &sent {
        sink.emit(e.clone());
    }
    sink.close(Duration::from_secs(5)).await;
    for e in &sent {
        let stored = sink
            .stream
            .get_last_raw_message_by_subject(&subject(&env.id, e.kind))
            .await
            .expect("stored on its subject");
        assert_eq!(
            stored.subject.as_str(),
            format!("sluice.events.{}.{}", env.id, e.kind.as_str())
        );
        let json: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
        assert_eq!(json["kind"], e.kind.as_str());
        assert_eq!(json["queueId"], env.id.as_str());
        assert_eq!(serde_json::from_value::<DeliveryEvent>(json).unwrap(), *e);
    }
    assert_eq!(metrics.events_lost.get(EventLoss::PublishFailed), 0);
    sink.emit(sent[0].clone());
    assert_eq!(
        metrics.events_lost.get(EventLoss::Closed),
        1,
        "emitted after close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_lists_the_recipients_with_a_delivered_event() {
    let server = NatsServer::start();
    let (sink, _) = events(&server).await;
    let (env, other) = (envelope(&["a", "b", "c"]), envelope(&["a"]));
    sink.emit(event(EventKind::Delivered, &env, 0));
    sink.emit(event(EventKind::Deferred, &env, 1));
    sink.emit(event(EventKind::Bounced, &env, 2));
    sink.emit(event(EventKind::Delivered, &other, 0));
    sink.emit(event(EventKind::Delivered, &env, 1));
    sink.close(Duration::from_secs(5)).await;
    assert_eq!(
        sink.delivered(&env.id).await,
        vec!["a@example.net".to_string(), "b@example.net".to_string()]
    );
    assert_eq!(sink.delivered(&other.id).await, vec!["a@example.net"]);
    let started = Instant::now();
    assert!(sink.delivered(&envelope(&["a"]).id).await.is_empty());
    assert!(started.elapsed() < LOOKUP_TIMEOUT, "waited for nothing");
    let consumers = sink.stream.get_info().await.unwrap().state.consumer_count;
    assert_eq!(consumers, 0, "lookup consumers left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_keeps_events_by_limits_and_opens_idempotently() {
    let server = NatsServer::start();
    let (first, _) = events(&server).await;
    let (second, _) = events(&server).await;
    for sink in [first, second] {
        let config = sink.stream.get_info().await.unwrap().config;
        assert_eq!(config.retention, RetentionPolicy::Limits);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.discard, DiscardPolicy::Old);
        assert_eq!(config.max_age, MAX_AGE);
        assert_eq!(config.max_bytes, MAX_BYTES);
        assert_eq!(config.subjects, vec!["sluice.events.>".to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_server_does_not_acknowledge_are_counted_and_lookups_fail_safe() {
    let mut server = NatsServer::start();
    let mut js = context(&server).await;
    js.set_timeout(Duration::from_millis(300));
    let metrics = Arc::new(Metrics::default());
    let sink = JetStreamEvents::open(js, 1, metrics.clone()).await.unwrap();
    server.stop();
    let env = envelope(&["a"]);
    sink.emit(event(EventKind::Delivered, &env, 0));
    let started = Instant::now();
    assert!(sink.delivered(&env.id).await.is_empty());
    assert!(started.elapsed() <= LOOKUP_TIMEOUT + Duration::from_millis(500));
    sink.close(Duration::from_secs(5)).await;
    assert_eq!(metrics.events_lost.get(EventLoss::PublishFailed), 1);
}
