//! The policy bucket against a real `nats-server`, one per test (see
//! `tests/common/nats.rs`).

use super::*;
use crate::nats::NatsConfig;
use crate::policy::stored::FORMAT;
use crate::policy::tests::{compile, example, policy};
use crate::telemetry::metrics::ReloadResult;
use std::time::Instant;

use crate::testing::nats::NatsServer;

async fn context(server: &NatsServer) -> jetstream::Context {
    let config = NatsConfig {
        url: Some(server.url()),
        ..Default::default()
    };
    let client = config
        .connect_now("test")
        .await
        .expect("the test nats-server");
    jetstream::new(client)
}

/// The bucket on a connection of its own, as each pod has.
async fn open(server: &NatsServer) -> PolicyBucket {
    PolicyBucket::open(&context(server).await, 1)
        .await
        .expect("the bucket")
}

fn writer() -> Writer {
    Writer::now(WriterKind::PolicyPush, "test-host")
}

/// A snapshot other than the example.
fn other() -> PolicySnapshot {
    compile(&[&policy("mail/other", "  mode: open")]).expect("compiles")
}

/// Polls until `done` holds; fails the test after `within`.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a follower's watch is open on the server: a consumer of the bucket's stream
/// that starts at a revision (the history scan before it delivers everything).
async fn wait_for_watch(server: &NatsServer) {
    use async_nats::jetstream::consumer::DeliverPolicy;
    use futures_util::TryStreamExt;
    let stream = context(server)
        .await
        .get_stream(format!("KV_{BUCKET}"))
        .await
        .expect("the bucket's stream");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let consumers: Vec<_> = stream.consumers().try_collect().await.unwrap_or_default();
        if consumers.iter().any(|c| {
            matches!(
                c.config.deliver_policy,
                DeliverPolicy::ByStartSequence { .. }
            )
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "no watch opened within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn holds(rx: &watch::Receiver<Arc<PolicySnapshot>>, snapshot: &PolicySnapshot) -> bool {
    rx.borrow().revision() == snapshot.revision()
}

#[test]
fn the_value_is_versioned_and_a_newer_format_is_refused_by_its_number() {
    let (snapshot, writer) = (example(), writer());
    let value = serde_json::to_value(Stored::new(&snapshot, &writer)).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["format", "snapshot", "writer"]);
    let loaded = decode(value.to_string().as_bytes()).unwrap();
    assert_eq!((loaded.snapshot, loaded.writer), (example(), Some(writer)));

    let mut newer = value.clone();
    newer["format"] = 3.into();
    newer["snapshot"] = serde_json::json!({"something": "else entirely"});
    let err = decode_value(newer.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, ValueError::Format(3)), "{err}");
    assert!(
        err.to_string()
            .contains("this sluice reads formats 1 and 2"),
        "{err}"
    );

    let mut inner = value;
    inner["snapshot"]["format"] = 2.into();
    let err = decode(inner.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, ValueError::SnapshotFormat(2)), "{err}");

    let err = decode(b"not json").unwrap_err();
    assert!(matches!(err, ValueError::Json(_)), "{err}");
}

#[test]
fn the_writer_is_kind_identity_and_a_utc_time() {
    let writer = Writer {
        kind: WriterKind::Operator,
        identity: "sluice-operator-7d9f-x2".into(),
        at: "2025-03-04T05:06:07.089Z".parse().unwrap(),
    };
    assert_eq!(
        serde_json::to_value(&writer).unwrap(),
        serde_json::json!({
            "kind": "operator",
            "identity": "sluice-operator-7d9f-x2",
            "at": "2025-03-04T05:06:07.089Z",
        })
    );
    let push = Writer::now(WriterKind::PolicyPush, "laptop");
    let text = serde_json::to_string(&push).unwrap();
    assert!(text.contains(r#""kind":"policy-push""#), "{text}");
    assert!(text.ends_with(r#"Z"}"#), "{text}");
    assert_eq!(serde_json::from_str::<Writer>(&text).unwrap(), push);
}

/// Values written before the writer was recorded, and by later versions that add to it,
/// stay readable: format 1 grows by fields that readers ignore.
#[test]
fn format_1_without_a_writer_or_with_unknown_fields_still_decodes() {
    let snapshot = serde_json::to_value(example()).unwrap();
    let old = serde_json::json!({"format": 1, "snapshot": snapshot});
    let loaded = decode(old.to_string().as_bytes()).expect("a value from before writers");
    assert_eq!((loaded.snapshot, loaded.writer), (example(), None));

    let later = serde_json::json!({
        "format": 1,
        "snapshot": snapshot,
        "writer": {"kind": "policy-push", "identity": "h", "at": "2025-01-01T00:00:00Z",
                   "version": "9.9"},
        "signature": "added later",
    });
    let loaded = decode(later.to_string().as_bytes()).expect("unknown fields are ignored");
    assert_eq!(loaded.writer.map(|w| w.identity), Some("h".to_string()));

    // A writer this version cannot read is dropped; the rules beside it still apply.
    for writer in [
        serde_json::json!({"kind": "migration", "identity": "h", "at": "2025-01-01T00:00:00Z"}),
        serde_json::json!({"kind": "operator"}),
        serde_json::json!(null),
        serde_json::json!("someone"),
    ] {
        let value = serde_json::json!({"format": 1, "snapshot": snapshot, "writer": writer});
        let loaded = decode(value.to_string().as_bytes()).expect("the snapshot decodes");
        assert_eq!(
            (loaded.snapshot, loaded.writer),
            (example(), None),
            "{writer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_force_names_the_kv_revision_its_time_and_its_writer() {
    let server = NatsServer::start();
    let js = context(&server).await;
    assert!(
        PolicyBucket::open_existing(&js).await.unwrap().is_none(),
        "a reader does not create the bucket"
    );
    let bucket = PolicyBucket::open(&js, 1).await.unwrap();
    assert!(PolicyBucket::open_existing(&js).await.unwrap().is_some());
    assert_eq!(bucket.in_force().await.unwrap(), None);

    let before = Utc::now() - chrono::Duration::seconds(5);
    let pushed = writer();
    bucket.push(&example(), &pushed).await.unwrap();
    let found = bucket.in_force().await.unwrap().expect("in force");
    assert_eq!(found.snapshot, example());
    assert_eq!(found.kv_revision, 1);
    assert_eq!(found.writer, Some(pushed));
    let after = Utc::now() + chrono::Duration::seconds(5);
    assert!(
        before < found.created && found.created < after,
        "created {}",
        found.created
    );

    // Written by an older sluice: no writer, and in force all the same.
    let old = serde_json::json!({"format": 1, "snapshot": other()}).to_string();
    bucket.store.put(KEY, old.into()).await.unwrap();
    // Refused values after it are passed over, as the pods pass over them.
    bucket.store.put(KEY, "not json".into()).await.unwrap();
    let found = bucket.in_force().await.unwrap().expect("in force");
    assert_eq!(
        (found.snapshot, found.kv_revision, found.writer),
        (other(), 2, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_is_idempotent_and_leaves_an_existing_bucket_as_it_is() {
    let server = NatsServer::start();
    let js = context(&server).await;
    // Pods starting together all race to create it.
    let (a, b, c) = tokio::join!(
        PolicyBucket::open(&js, 1),
        PolicyBucket::open(&js, 1),
        PolicyBucket::open(&js, 1)
    );
    let (a, _, _) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.store.status().await.unwrap().history(), HISTORY);
    assert_eq!(a.latest().await.unwrap(), None);
    a.push(&example(), &writer()).await.unwrap();
    // A single server cannot hold 3 replicas: only an existing bucket can be opened so.
    let existing = PolicyBucket::open(&js, 3).await.unwrap();
    assert_eq!(existing.latest().await.unwrap(), Some(example()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_followers_within_two_seconds() {
    let server = NatsServer::start();
    let pusher = open(&server).await;
    let first = example();
    assert_eq!(pusher.push(&first, &writer()).await.unwrap(), 1);
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let rx = open(&server)
        .await
        .follow(metrics.clone(), stop.clone())
        .await
        .expect("the pushed snapshot");
    assert_eq!(**rx.borrow(), first);

    let second = other();
    assert_eq!(pusher.push(&second, &writer()).await.unwrap(), 2);
    eventually(Duration::from_secs(2), "the second push followed", || {
        holds(&rx, &second)
    })
    .await;
    assert_eq!(**rx.borrow(), second);
    assert_eq!(metrics.policy_reloads.get(ReloadResult::Applied), 1);
    assert_eq!(metrics.policy_reloads.get(ReloadResult::Invalid), 0);
    assert_eq!(pusher.latest().await.unwrap(), Some(second));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_value_is_refused_and_the_snapshot_in_force_stays() {
    let server = NatsServer::start();
    let pusher = open(&server).await;
    let first = example();
    pusher.push(&first, &writer()).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let rx = open(&server)
        .await
        .follow(metrics.clone(), stop.clone())
        .await
        .unwrap();

    pusher.store.put(KEY, "not json".into()).await.unwrap();
    let newer = serde_json::json!({"format": 2, "snapshot": {}}).to_string();
    pusher.store.put(KEY, newer.into()).await.unwrap();
    eventually(Duration::from_secs(2), "two refusals", || {
        metrics.policy_reloads.get(ReloadResult::Invalid) == 2
    })
    .await;
    assert_eq!(**rx.borrow(), first);
    assert_eq!(metrics.policy_reloads.get(ReloadResult::Applied), 0);
    assert_eq!(pusher.latest().await.unwrap(), Some(first.clone()));

    // A pod starting now takes the snapshot the running ones hold.
    let late_metrics = Arc::new(Metrics::default());
    let late = open(&server)
        .await
        .follow(late_metrics.clone(), stop.clone())
        .await
        .unwrap();
    assert_eq!(**late.borrow(), first);
    assert_eq!(late_metrics.policy_reloads.get(ReloadResult::Invalid), 2);

    // Following goes on after a refusal.
    let second = other();
    pusher.push(&second, &writer()).await.unwrap();
    eventually(
        Duration::from_secs(2),
        "the next valid push followed",
        || holds(&rx, &second) && holds(&late, &second),
    )
    .await;
    stop.cancel();
}

/// Pushes through a connection that may still be coming back from a server restart.
async fn push_when_reconnected(pusher: &PolicyBucket, snapshot: &PolicySnapshot) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = pusher.push(snapshot, &writer()).await {
        assert!(
            Instant::now() < deadline,
            "no push after the restart: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_survives_server_restarts() {
    let mut server = NatsServer::start();
    let pusher = open(&server).await;
    let first = example();
    pusher.push(&first, &writer()).await.unwrap();
    let stop = CancellationToken::new();
    let rx = open(&server)
        .await
        .follow(Arc::new(Metrics::default()), stop.clone())
        .await
        .unwrap();
    // The restart should hit an established watch: one that has delivered a push.
    let second = other();
    pusher.push(&second, &writer()).await.unwrap();
    eventually(Duration::from_secs(5), "the push before a restart", || {
        holds(&rx, &second)
    })
    .await;

    // The restarted server has forgotten the watch, which the client alone would notice
    // only after 10 s of missed heartbeats.
    server.restart();
    push_when_reconnected(&pusher, &first).await;
    eventually(Duration::from_secs(5), "the push after a restart", || {
        holds(&rx, &first)
    })
    .await;

    // A longer outage: watches cannot be opened meanwhile. This sleep is the outage
    // itself, long enough for the follower's reconnects and watch openings to fail
    // (the first backoff is shorter), not a wait for something to happen.
    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again();
    push_when_reconnected(&pusher, &second).await;
    eventually(Duration::from_secs(5), "the push after an outage", || {
        holds(&rx, &second)
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_waits_for_a_first_snapshot() {
    let server = NatsServer::start();
    let pusher = open(&server).await;
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let waiting = tokio::spawn(open(&server).await.follow(metrics, stop.clone()));
    // Found nothing and waiting on the watch: the push below comes after the scan.
    wait_for_watch(&server).await;
    assert!(!waiting.is_finished(), "nothing to follow yet");
    pusher.push(&example(), &writer()).await.unwrap();
    let rx = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the first push ends the wait")
        .unwrap()
        .expect("a snapshot");
    assert_eq!(**rx.borrow(), example());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_up_when_stopped_before_any_snapshot() {
    let server = NatsServer::start();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let waiting = tokio::spawn(open(&server).await.follow(metrics, stop.clone()));
    wait_for_watch(&server).await;
    assert!(!waiting.is_finished(), "nothing to follow yet");
    stop.cancel();
    let followed = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("stop ends the wait")
        .unwrap();
    assert!(followed.is_none());
}

/// A snapshot of `users` users with SHA-512-crypt hashes, about 170 bytes each in JSON.
fn large(users: usize) -> PolicySnapshot {
    let mut spec = String::from("  users:\n");
    for i in 0..users {
        spec += &format!(
            "  - {{name: user{i:05}, passwordHash: '{}', allowedSenders: ['@d{i}.example']}}\n",
            crate::policy::tests::BILLING_HASH
        );
    }
    compile(&[&policy("mail/large", &spec)]).expect("compiles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_a_message_goes_through_the_object_store() {
    let server = NatsServer::start();
    let pusher = open(&server).await;
    let big = large(8_000);
    let size = serde_json::to_vec(&big).unwrap().len();
    assert!(
        size > 1 << 20,
        "{size} bytes: not larger than NATS's default max payload"
    );
    pusher.push(&example(), &writer()).await.unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let rx = open(&server)
        .await
        .follow(metrics.clone(), stop.clone())
        .await
        .unwrap();
    pusher.push(&big, &writer()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the follower holds the large snapshot",
        || holds(&rx, &big),
    )
    .await;
    assert!(
        rx.borrow()
            .verify_password("user07999", crate::policy::tests::BILLING_PASSWORD)
    );
    let found = pusher.in_force().await.unwrap().unwrap();
    assert_eq!(found.snapshot.revision(), big.revision());
    assert_eq!(found.writer.unwrap().kind, WriterKind::PolicyPush);
    // The key holds a small reference; the object holds the rest.
    let js = context(&server).await;
    let kv = js.get_key_value(BUCKET).await.unwrap();
    let value = kv.get(KEY).await.unwrap().unwrap();
    assert!(value.len() < 1024, "{} bytes in the key", value.len());
    let reference: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(reference["format"], 2);

    // A reference whose object does not match is refused; the snapshot in force stays.
    let mut forged = reference.clone();
    forged["object"]["sha256"] = "00".repeat(32).into();
    kv.put(KEY, forged.to_string().into()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the forged reference refused",
        || metrics.policy_reloads.get(ReloadResult::Invalid) == 1,
    )
    .await;
    assert!(holds(&rx, &big));

    // Small snapshots again: once no value in the key's history refers to the object, the
    // next push deletes it.
    for i in 0..=HISTORY {
        let snapshot = compile(&[&policy(&format!("mail/p{i}"), "")]).unwrap();
        pusher.push(&snapshot, &writer()).await.unwrap();
    }
    let objects = js.get_object_store(objects::OBJECTS).await.unwrap();
    let left: Vec<_> = objects.list().await.unwrap().try_collect().await.unwrap();
    assert!(left.is_empty(), "{} objects left", left.len());
    stop.cancel();
}

/// The example's stored value with one part of its snapshot replaced.
fn tampered(pointer: &str, value: serde_json::Value) -> Vec<u8> {
    let (snapshot, writer) = (example(), writer());
    let mut stored = serde_json::to_value(Stored::new(&snapshot, &writer)).unwrap();
    *stored.pointer_mut(pointer).expect(pointer) = value;
    serde_json::to_vec(&stored).unwrap()
}

/// An argon2id hash asking for 4 GiB of memory (m in KiB) per verification.
const HOSTILE_HASH: &str = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$qLml5cbs4W8rO9nyPFJkWrqzxYpkeGRQzKkVZaoe0JA";

#[test]
fn a_snapshot_that_compilation_would_refuse_does_not_decode() {
    let cases = [
        (
            "/snapshot/rules/users/billing-app/passwordHash",
            serde_json::json!(HOSTILE_HASH),
            "argon2 work factors",
        ),
        (
            "/snapshot/rules/trustedNetworks/0/network",
            serde_json::json!("10.1.2.3/8"),
            "trustedNetworks[0]",
        ),
        (
            "/snapshot/rules/relayDomains",
            serde_json::json!({"bad domain.example": "mail/corp"}),
            "relayDomains",
        ),
        (
            "/snapshot/rules/limits/maxRecipients",
            serde_json::json!(0),
            "greater than zero",
        ),
        (
            "/snapshot/rules/routes/0/smarthost/port",
            serde_json::json!(0),
            "routes[0]",
        ),
        (
            "/snapshot/revision",
            serde_json::json!("x\r\ny"),
            "revision",
        ),
    ];
    for (pointer, value, needle) in cases {
        let err = decode(&tampered(pointer, value)).unwrap_err();
        assert!(matches!(err, ValueError::Invalid(_)), "{pointer}: {err}");
        assert!(err.to_string().contains(needle), "{pointer}: {err}");
    }
    let untouched = tampered("/format", serde_json::json!(FORMAT));
    assert_eq!(decode(&untouched).unwrap().snapshot, example());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_snapshot_is_refused_and_counted_and_the_one_in_force_stays() {
    let server = NatsServer::start();
    let pusher = open(&server).await;
    let first = example();
    pusher.push(&first, &writer()).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let rx = open(&server)
        .await
        .follow(metrics.clone(), stop.clone())
        .await
        .unwrap();

    let hash = "/snapshot/rules/users/billing-app/passwordHash";
    let hostile_hash = tampered(hash, serde_json::json!(HOSTILE_HASH));
    pusher
        .store
        .put(KEY, hostile_hash.clone().into())
        .await
        .unwrap();
    let network = "/snapshot/rules/trustedNetworks/0/network";
    let bad_cidr = tampered(network, serde_json::json!("10.1.2.3/8"));
    pusher.store.put(KEY, bad_cidr.into()).await.unwrap();
    // The same hash in a large snapshot's object.
    let objects = pusher.objects.as_ref().unwrap();
    let object = objects::put(objects, "hostile", &hostile_hash)
        .await
        .unwrap();
    let reference = StoredRef {
        format: FORMAT_OBJECT,
        writer: &writer(),
        object: &object,
    };
    let reference = serde_json::to_vec(&reference).unwrap();
    pusher.store.put(KEY, reference.into()).await.unwrap();
    eventually(Duration::from_secs(5), "three refusals", || {
        metrics.policy_reloads.get(ReloadResult::Invalid) == 3
    })
    .await;
    assert_eq!(**rx.borrow(), first);
    assert_eq!(metrics.policy_reloads.get(ReloadResult::Applied), 0);
    assert_eq!(pusher.latest().await.unwrap(), Some(first));
    stop.cancel();
}
