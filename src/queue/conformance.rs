//! The conformance suite of the [`Queue`](super::Queue) and [`QueueAdmin`] traits: what
//! every backend must do, written once against the traits. Each check is a `pub async fn`
//! taking a factory that makes a fresh, empty queue; a backend runs them all with
//! [`queue_conformance_tests!`]:
//!
//! ```ignore
//! crate::queue::conformance::queue_conformance_tests!(
//!     tempfile::tempdir().unwrap(),                       // context, kept alive per test
//!     async |dir: &tempfile::TempDir| Spool::open(dir.path()).await.unwrap()
//! );
//! ```
//!
//! Timing: leases are short (100–200 ms) and every wait is bounded, so a broken backend
//! fails within seconds instead of hanging. Due times are compared with one second of
//! slack, for backends that store coarser timestamps.

use super::{Lease, QueueAdmin, QueueError, QueueStats};
use crate::envelope::{Envelope, QueueId, unix_ms};
use crate::smtp::address::{Body, MailParams, Mailbox, Notify, Orcpt, Recipient, Ret};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Generates one `#[tokio::test]` per conformance check. `$ctx` is evaluated once per
/// test and lives until its end (a temporary directory, a server…); `$make` is an async
/// closure making the queue from `&ctx`.
macro_rules! queue_conformance_tests {
    ($ctx:expr, $make:expr) => {
        $crate::queue::conformance::queue_conformance_tests!(@ $ctx, $make;
            enqueue_take_ack_removes_the_message,
            take_leases_the_message_until_the_lease_runs_out,
            only_a_lease_after_a_lapsed_one_is_redelivered,
            defer_hides_until_due_and_updates_the_envelope,
            defer_keeps_a_bounded_reason,
            stale_lease_is_lost,
            list_is_oldest_first,
            bodies_round_trip_byte_identical,
            take_hands_out_oldest_due_first,
            concurrent_takers_never_share_a_message,
            retry_now_makes_a_deferred_message_due_and_wakes_waiters,
            retry_now_leaves_leases_and_unknown_ids_alone,
            remove_deletes_a_waiting_message_and_returns_it,
            remove_refuses_a_leased_message_until_its_lease_runs_out,
            stats_count_the_messages_and_name_the_oldest,
        );
    };
    (@ $ctx:expr, $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let ctx = $ctx;
                let make = $make;
                $crate::queue::conformance::$name(async || make(&ctx).await).await;
            }
        )*
    };
}
pub(crate) use queue_conformance_tests;

/// An upper bound on any wait in the suite.
const PATIENCE: Duration = Duration::from_secs(5);

pub fn recipient(local: &str) -> Recipient {
    Recipient {
        address: Mailbox::new(local, "example.net"),
        notify: None,
        orcpt: None,
    }
}

/// A fresh envelope (new id) with the given recipients and every optional field set, so
/// that a backend dropping any of them is caught by the equality checks.
pub fn envelope(recipients: &[&str]) -> Envelope {
    let mut recipients: Vec<Recipient> = recipients.iter().map(|r| recipient(r)).collect();
    if let Some(first) = recipients.first_mut() {
        first.notify = Some(Notify {
            never: false,
            success: true,
            failure: true,
            delay: false,
        });
        first.orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "Orig@Example.NET".into(),
        });
    }
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("Sender.ñ", "example.org")),
        params: MailParams {
            size: Some(1234),
            body: Some(Body::EightBitMime),
            smtputf8: true,
            ret: Some(Ret::Headers),
            envid: Some("env-1".into()),
            auth: Some("sender@example.org".into()),
        },
        recipients,
        received_at_ms: unix_ms(SystemTime::now()),
        client_ip: "2001:db8::25".parse().expect("literal address"),
        helo: "client.example.org".into(),
        authenticated_user: Some("alice".into()),
        sender_trust: crate::envelope::SenderTrust::Authenticated,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn body(tag: &str) -> Vec<u8> {
    format!("Subject: {tag}\r\n\r\nhello {tag}\r\n").into_bytes()
}

/// Polls `take` until it returns a message or `within` has passed.
pub async fn take_within<Q: QueueAdmin>(q: &Q, lease: Duration, within: Duration) -> Option<Lease> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = q.take(lease).await.expect("take") {
            return Some(l);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_lease_lost(result: Result<(), QueueError>, id: &QueueId) {
    match result {
        Err(QueueError::LeaseLost(lost)) => assert_eq!(&lost, id),
        other => panic!("expected LeaseLost({id}), got {other:?}"),
    }
}

pub async fn enqueue_take_ack_removes_the_message<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    assert!(q.take(Duration::from_secs(60)).await.unwrap().is_none());
    let env = envelope(&["a", "b"]);
    q.enqueue(&env, &body("one")).await.unwrap();

    let listed = q.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope, env);
    assert_eq!(listed[0].size, body("one").len() as u64);
    assert!(!listed[0].leased);

    let lease = q
        .take(Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a due message");
    assert_eq!(lease.envelope, env);
    assert_eq!(lease.body, body("one"));
    q.ack(&lease).await.unwrap();

    assert!(q.list().await.unwrap().is_empty());
    assert!(q.inspect(&env.id).await.unwrap().is_none());
    assert!(q.take(Duration::from_secs(60)).await.unwrap().is_none());
    assert_lease_lost(q.ack(&lease).await, &env.id);
    assert!(q.inspect(&QueueId::generate()).await.unwrap().is_none());
}

pub async fn take_leases_the_message_until_the_lease_runs_out<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("lease")).await.unwrap();
    let lease_time = Duration::from_millis(200);

    let taken_at = Instant::now();
    let first = q.take(lease_time).await.unwrap().expect("due");
    assert!(q.take(lease_time).await.unwrap().is_none(), "leased twice");
    let (entry, _) = q.inspect(&env.id).await.unwrap().expect("still queued");
    assert!(entry.leased);
    assert!(q.list().await.unwrap()[0].leased);

    let second = take_within(&q, lease_time, PATIENCE)
        .await
        .expect("due again once the lease ran out");
    assert!(
        taken_at.elapsed() >= Duration::from_millis(150),
        "lease ended after {:?}",
        taken_at.elapsed()
    );
    assert_eq!(second.envelope.id, env.id);
    assert_eq!(second.body, body("lease"));
    assert_ne!(first.token, second.token);
    q.ack(&second).await.unwrap();
    assert!(q.list().await.unwrap().is_empty());
}

pub async fn only_a_lease_after_a_lapsed_one_is_redelivered<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("again")).await.unwrap();
    let short = Duration::from_millis(200);
    let first = q.take(short).await.unwrap().expect("due");
    assert!(!first.redelivered, "a fresh message");
    let lapsed = take_within(&q, short, PATIENCE).await.expect("due again");
    assert!(lapsed.redelivered, "re-leased after its lease ran out");

    // A deferral settles what the holder did; its next lease is an ordinary one, whether
    // the deferred message was looked at before it was due or not.
    let soon = SystemTime::now() + Duration::from_millis(400);
    let recipients = env.recipients.clone();
    q.defer(&lapsed, soon, recipients.clone(), "451 soon".into())
        .await
        .unwrap();
    let deferred = take_within(&q, short, PATIENCE).await.expect("due");
    assert!(!deferred.redelivered, "a deferral is no lapse");
    let lapsed = take_within(&q, short, PATIENCE).await.expect("due again");
    assert!(lapsed.redelivered, "a deferred message whose lease ran out");
    q.defer(&lapsed, SystemTime::now(), recipients, "451 now".into())
        .await
        .unwrap();
    let deferred = take_within(&q, short, PATIENCE).await.expect("due");
    assert!(!deferred.redelivered, "a deferral due at once is no lapse");
    let lapsed = take_within(&q, Duration::from_secs(60), PATIENCE)
        .await
        .expect("due again");
    assert!(lapsed.redelivered);
    q.ack(&lapsed).await.unwrap();
}

/// A remote reply of any length is stored cut to [`crate::envelope::MAX_LAST_ERROR`] bytes.
pub async fn defer_keeps_a_bounded_reason<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("long reply")).await.unwrap();
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    let reply: String = (0..2_000)
        .map(|i| format!("451-4.7.1 line {i} of a long reply é\r\n"))
        .collect();
    let later = SystemTime::now() + Duration::from_secs(3600);
    q.defer(&lease, later, env.recipients.clone(), reply.clone())
        .await
        .expect("a long reply does not stop the deferral");
    let (entry, _) = q.inspect(&env.id).await.unwrap().expect("still queued");
    let kept = entry.envelope.last_error.expect("a reason");
    assert!(
        kept.len() <= crate::envelope::MAX_LAST_ERROR,
        "{} bytes kept",
        kept.len()
    );
    assert!(
        kept.starts_with("451-4.7.1 line 0 of a long reply"),
        "{kept}"
    );
    assert!(kept.ends_with('…'), "{kept}");
    let short = "451 4.7.1 short".to_string();
    assert_eq!(crate::envelope::bounded_reason(short.clone()), short);
}

pub async fn defer_hides_until_due_and_updates_the_envelope<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    let env = envelope(&["a", "b", "c"]);
    q.enqueue(&env, &body("defer")).await.unwrap();
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");

    let delay = Duration::from_millis(400);
    let deferred_at = Instant::now();
    let until = SystemTime::now() + delay;
    let remaining = vec![env.recipients[1].clone(), env.recipients[2].clone()];
    let reason = "451 4.7.1 greylisted, try later".to_string();
    // What the holder notes in the envelope is kept.
    let mut lease = lease;
    lease.envelope.delay_warned_at_ms = Some(1_700_000_000_000);
    q.defer(&lease, until, remaining.clone(), reason.clone())
        .await
        .unwrap();

    assert!(
        q.take(Duration::from_secs(60)).await.unwrap().is_none(),
        "deferred but taken"
    );
    let (entry, content) = q.inspect(&env.id).await.unwrap().expect("still queued");
    assert_eq!(content, body("defer"));
    assert!(!entry.leased);
    assert_eq!(entry.envelope.recipients, remaining);
    assert_eq!(entry.envelope.attempts, 1);
    assert_eq!(entry.envelope.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(entry.envelope.delay_warned_at_ms, Some(1_700_000_000_000));
    assert_eq!(entry.envelope.reverse_path, env.reverse_path);
    assert_eq!(entry.envelope.params, env.params);
    assert!(
        entry.due_at_ms.abs_diff(unix_ms(until)) <= 1000,
        "due_at_ms"
    );
    assert_lease_lost(q.ack(&lease).await, &env.id);

    let again = take_within(&q, Duration::from_secs(60), PATIENCE)
        .await
        .expect("due again after the deferral");
    assert!(
        deferred_at.elapsed() >= delay - Duration::from_millis(50),
        "taken {:?} after a {delay:?} deferral",
        deferred_at.elapsed()
    );
    assert_eq!(again.envelope.recipients, remaining);
    assert_eq!(again.envelope.attempts, 1);
    assert_eq!(again.body, body("defer"));

    // A second deferral counts again and replaces the reason.
    q.defer(
        &again,
        SystemTime::now(),
        vec![remaining[0].clone()],
        "second".into(),
    )
    .await
    .unwrap();
    let third = take_within(&q, Duration::from_secs(60), PATIENCE)
        .await
        .expect("due at once");
    assert_eq!(third.envelope.attempts, 2);
    assert_eq!(third.envelope.recipients, vec![remaining[0].clone()]);
    assert_eq!(third.envelope.last_error.as_deref(), Some("second"));
    q.ack(&third).await.unwrap();
}

pub async fn stale_lease_is_lost<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("stale")).await.unwrap();
    let stale = q
        .take(Duration::from_millis(100))
        .await
        .unwrap()
        .expect("due");
    let fresh = take_within(&q, Duration::from_secs(60), PATIENCE)
        .await
        .expect("re-leased after expiry");
    assert_ne!(stale.token, fresh.token);

    assert_lease_lost(q.ack(&stale).await, &env.id);
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_lease_lost(q.defer(&stale, later, vec![], "x".into()).await, &env.id);
    // The failed calls changed nothing: the fresh holder still owns it.
    let (entry, _) = q.inspect(&env.id).await.unwrap().expect("still queued");
    assert!(entry.leased);
    assert_eq!(entry.envelope.attempts, 0);

    q.ack(&fresh).await.unwrap();
    assert_lease_lost(q.ack(&fresh).await, &env.id);
    assert!(q.list().await.unwrap().is_empty());
}

pub async fn list_is_oldest_first<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    let envs: Vec<Envelope> = (0..6).map(|_| envelope(&["a"])).collect();
    // Stored out of order: the list must still follow the ids.
    for i in [3, 0, 5, 1, 4, 2] {
        q.enqueue(&envs[i], &body(&i.to_string())).await.unwrap();
    }
    // A leased and a deferred message stay in the list, in their place.
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    let far = SystemTime::now() + Duration::from_secs(3600);
    q.defer(
        &lease,
        far,
        lease.envelope.recipients.clone(),
        "later".into(),
    )
    .await
    .unwrap();
    q.take(Duration::from_secs(60)).await.unwrap().expect("due");

    let listed = q.list().await.unwrap();
    let ids: Vec<&QueueId> = listed.iter().map(|e| &e.envelope.id).collect();
    let expected: Vec<&QueueId> = envs.iter().map(|e| &e.id).collect();
    assert_eq!(ids, expected);
    for (i, entry) in listed.iter().enumerate() {
        assert_eq!(entry.size, body(&i.to_string()).len() as u64);
    }
    assert_eq!(listed.iter().filter(|e| e.leased).count(), 1);
    assert_eq!(
        listed.iter().filter(|e| e.envelope.attempts == 1).count(),
        1
    );
}

pub async fn bodies_round_trip_byte_identical<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(256 * 3).collect();
    // 2 MiB of varied bytes (xorshift), not a repeating pattern.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..2 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let bodies = [every_byte, big, Vec::new()];
    let envs: Vec<Envelope> = bodies.iter().map(|_| envelope(&["a"])).collect();
    for (env, content) in envs.iter().zip(&bodies) {
        q.enqueue(env, content).await.unwrap();
    }
    for (env, content) in envs.iter().zip(&bodies) {
        let (entry, stored) = q.inspect(&env.id).await.unwrap().expect("queued");
        assert_eq!(entry.size, content.len() as u64);
        assert!(stored == *content, "inspect changed the body of {}", env.id);
    }
    for (env, content) in envs.iter().zip(&bodies) {
        let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
        assert_eq!(&lease.envelope.id, &env.id);
        assert!(
            lease.body == *content,
            "take changed the body of {}",
            env.id
        );
    }
}

pub async fn take_hands_out_oldest_due_first<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = make().await;
    let envs: Vec<Envelope> = (0..4).map(|_| envelope(&["a"])).collect();
    for env in &envs {
        q.enqueue(env, &body("fifo")).await.unwrap();
    }
    // Push the oldest into the future: the others come first, in id order.
    let first = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    assert_eq!(first.envelope.id, envs[0].id);
    let soon = SystemTime::now() + Duration::from_millis(300);
    q.defer(
        &first,
        soon,
        first.envelope.recipients.clone(),
        "soon".into(),
    )
    .await
    .unwrap();
    for env in &envs[1..] {
        let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
        assert_eq!(lease.envelope.id, env.id);
        q.ack(&lease).await.unwrap();
    }
    assert!(q.take(Duration::from_secs(60)).await.unwrap().is_none());
    let last = take_within(&q, Duration::from_secs(60), PATIENCE)
        .await
        .expect("deferred one comes back");
    assert_eq!(last.envelope.id, envs[0].id);
}

pub async fn concurrent_takers_never_share_a_message<Q: QueueAdmin>(make: impl AsyncFnOnce() -> Q) {
    let q = Arc::new(make().await);
    let mut ids = HashSet::new();
    for _ in 0..40 {
        let env = envelope(&["a"]);
        ids.insert(env.id.clone());
        q.enqueue(&env, &body("c")).await.unwrap();
    }
    let mut takers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let q = q.clone();
        takers.spawn(async move {
            let mut got = Vec::new();
            while let Some(lease) = q.take(Duration::from_secs(60)).await.unwrap() {
                got.push(lease.envelope.id.clone());
                q.ack(&lease).await.unwrap();
            }
            got
        });
    }
    let mut seen = Vec::new();
    while let Some(got) = takers.join_next().await {
        seen.extend(got.unwrap());
    }
    assert_eq!(
        seen.len(),
        ids.len(),
        "some message was handed out twice or never"
    );
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    assert!(q.list().await.unwrap().is_empty());
}

pub async fn retry_now_makes_a_deferred_message_due_and_wakes_waiters<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    let env = envelope(&["a", "b"]);
    q.enqueue(&env, &body("retry")).await.unwrap();
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    let far = SystemTime::now() + Duration::from_secs(3600);
    q.defer(
        &lease,
        far,
        vec![env.recipients[1].clone()],
        "451 later".into(),
    )
    .await
    .unwrap();
    assert!(q.take(Duration::from_secs(60)).await.unwrap().is_none());

    // A worker waiting for work (its wait bounded by the deferral) is woken by the retry.
    let (waited, retried) = tokio::join!(
        async {
            let started = Instant::now();
            q.wait_for_work(PATIENCE).await;
            started.elapsed()
        },
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            q.retry_now(&env.id).await.unwrap()
        }
    );
    assert!(retried, "retry_now of a deferred message");
    assert!(waited < PATIENCE / 2, "wait_for_work slept {waited:?}");
    let (entry, _) = q.inspect(&env.id).await.unwrap().expect("still queued");
    assert!(
        entry.due_at_ms <= unix_ms(SystemTime::now()) + 1000,
        "inspect still shows the deferral"
    );
    assert!(q.list().await.unwrap()[0].due_at_ms <= unix_ms(SystemTime::now()) + 1000);

    let again = q
        .take(Duration::from_secs(60))
        .await
        .unwrap()
        .expect("due after the retry");
    assert_eq!(again.envelope.id, env.id);
    assert_eq!(again.envelope.attempts, 1, "a retry is not an attempt");
    assert_eq!(again.envelope.recipients, vec![env.recipients[1].clone()]);
    assert_eq!(again.body, body("retry"));
    q.ack(&again).await.unwrap();
    assert!(
        !q.retry_now(&env.id).await.unwrap(),
        "acked message retried"
    );
}

pub async fn retry_now_leaves_leases_and_unknown_ids_alone<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    assert!(!q.retry_now(&QueueId::generate()).await.unwrap());
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("due")).await.unwrap();
    assert!(q.retry_now(&env.id).await.unwrap(), "already due is due");
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    assert!(
        !q.retry_now(&env.id).await.unwrap(),
        "leased message retried"
    );
    assert!(
        q.take(Duration::from_secs(60)).await.unwrap().is_none(),
        "a retry handed out a leased message"
    );
    // The holder still owns it.
    q.ack(&lease).await.unwrap();
    assert!(q.list().await.unwrap().is_empty());
}

pub async fn remove_deletes_a_waiting_message_and_returns_it<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    assert!(q.remove(&QueueId::generate()).await.unwrap().is_none());
    let (deferred, waiting) = (envelope(&["a", "b"]), envelope(&["c"]));
    q.enqueue(&deferred, &body("deferred")).await.unwrap();
    q.enqueue(&waiting, &body("waiting")).await.unwrap();
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    assert_eq!(lease.envelope.id, deferred.id);
    let far = SystemTime::now() + Duration::from_secs(3600);
    q.defer(
        &lease,
        far,
        vec![deferred.recipients[0].clone()],
        "451 x".into(),
    )
    .await
    .unwrap();

    let (env, content) = q
        .remove(&deferred.id)
        .await
        .unwrap()
        .expect("removed the deferred message");
    assert_eq!(content, body("deferred"));
    assert_eq!(env.id, deferred.id);
    assert_eq!(env.attempts, 1);
    assert_eq!(env.recipients, vec![deferred.recipients[0].clone()]);
    assert_eq!(env.last_error.as_deref(), Some("451 x"));
    assert!(q.inspect(&deferred.id).await.unwrap().is_none());
    assert!(
        q.remove(&deferred.id).await.unwrap().is_none(),
        "removed twice"
    );
    assert!(!q.retry_now(&deferred.id).await.unwrap());
    assert_lease_lost(q.ack(&lease).await, &deferred.id);

    let (env, content) = q.remove(&waiting.id).await.unwrap().expect("removed");
    assert_eq!(env, waiting);
    assert_eq!(content, body("waiting"));
    assert!(q.list().await.unwrap().is_empty());
    assert!(q.take(Duration::from_secs(60)).await.unwrap().is_none());
}

pub async fn remove_refuses_a_leased_message_until_its_lease_runs_out<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    let env = envelope(&["a"]);
    q.enqueue(&env, &body("busy")).await.unwrap();
    let stale = q
        .take(Duration::from_millis(200))
        .await
        .unwrap()
        .expect("due");
    match q.remove(&env.id).await {
        Err(QueueError::Busy(busy)) => assert_eq!(busy, env.id),
        other => panic!("expected Busy({}), got {other:?}", env.id),
    }
    let (entry, _) = q.inspect(&env.id).await.unwrap().expect("still queued");
    assert!(entry.leased, "a refused removal changed the lease");

    let deadline = Instant::now() + PATIENCE;
    let removed = loop {
        match q.remove(&env.id).await {
            Ok(removed) => break removed,
            Err(QueueError::Busy(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("remove after the lease ran out: {e:?}"),
        }
    };
    let (removed, content) = removed.expect("removed once the lease ran out");
    assert_eq!(removed, env);
    assert_eq!(content, body("busy"));
    assert_lease_lost(q.ack(&stale).await, &env.id);
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_lease_lost(q.defer(&stale, later, vec![], "x".into()).await, &env.id);
    assert!(q.list().await.unwrap().is_empty());
}

pub async fn stats_count_the_messages_and_name_the_oldest<Q: QueueAdmin>(
    make: impl AsyncFnOnce() -> Q,
) {
    let q = make().await;
    assert_eq!(q.queue_stats().await.unwrap(), QueueStats::default());
    let (old, young) = (envelope(&["a"]), envelope(&["b"]));
    q.enqueue(&young, &body("young")).await.unwrap();
    q.enqueue(&old, &body("old")).await.unwrap();
    let stats = q.queue_stats().await.unwrap();
    assert_eq!((stats.messages, stats.oldest), (2, Some(old.id.clone())));
    // Leased and deferred messages are still queued.
    let lease = q.take(Duration::from_secs(60)).await.unwrap().expect("due");
    assert_eq!(q.queue_stats().await.unwrap().messages, 2);
    let later = SystemTime::now() + Duration::from_secs(3600);
    q.defer(&lease, later, lease.envelope.recipients.clone(), "x".into())
        .await
        .unwrap();
    assert_eq!(q.queue_stats().await.unwrap().messages, 2);
    q.remove(&old.id).await.unwrap().expect("removed");
    let stats = q.queue_stats().await.unwrap();
    assert_eq!((stats.messages, stats.oldest), (1, Some(young.id)));
}
