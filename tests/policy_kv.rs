//! Policy through the NATS bucket `sluice-policy`, with the real binary: `sluice policy
//! push` changes what a running ingress decides for new sessions within 2 s, while a
//! session already open keeps the policy it started with; an ingress started before
//! any policy exists stays unready, without an SMTP listener, until one is pushed; and
//! an ingress names the revision it applies in `/metrics` and `/readyz`.

mod common;

use common::mail::{Outcome, Session};
use common::nats::NatsServer;
use common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push, route_policy};
use sluice::policy::PolicySnapshot;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Not trusted by policy A, trusted by policy B.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FOREIGN: &str = "someone@elsewhere.test";

/// A session from 127.0.0.2 up to RCPT to a foreign domain; the RCPT reply.
async fn relay_attempt(session: &mut Session) -> String {
    session
        .command("MAIL FROM:<a@client.test>", "250")
        .await
        .expect("MAIL");
    match session.command(&format!("RCPT TO:<{FOREIGN}>"), "").await {
        Ok(reply) => reply,
        Err(outcome) => panic!("RCPT: {outcome:?}"),
    }
}

async fn new_session_relay_attempt(ingress: &RoleProcess) -> String {
    let mut session = Session::open(ingress.smtp(), Some(CLIENT))
        .await
        .unwrap_or_else(|o: Outcome| ingress.fail(&format!("session from {CLIENT}: {o:?}")));
    let reply = relay_attempt(&mut session).await;
    session.quit().await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_policy_applies_to_new_sessions_within_two_seconds() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let policy_a = policy_config(&dir.path().join("a"), &route_policy(&["127.0.0.1/32"], 25));
    let policy_b = policy_config(
        &dir.path().join("b"),
        &route_policy(&["127.0.0.1/32", "127.0.0.2/32"], 25),
    );
    policy_push(&policy_a, &nats.url(), &[]).await;
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;

    let refused = new_session_relay_attempt(&ingress).await;
    assert!(
        refused.starts_with("554 5.7.1"),
        "policy A relays for {CLIENT}: {refused}"
    );
    // Opened under policy A, and kept open across the push.
    let mut old = Session::open(ingress.smtp(), Some(CLIENT))
        .await
        .expect("session");

    policy_push(&policy_b, &nats.url(), &[]).await;
    let pushed = Instant::now();
    let mut attempts = 0;
    let took = loop {
        attempts += 1;
        let reply = new_session_relay_attempt(&ingress).await;
        if reply.starts_with("250") {
            break pushed.elapsed();
        }
        ingress.fail_if(
            pushed.elapsed() > Duration::from_secs(10),
            &format!("policy B not in force 10 s after the push: RCPT got {reply}"),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        took <= Duration::from_secs(2),
        "policy B took {took:?} to reach new sessions"
    );

    let kept = relay_attempt(&mut old).await;
    assert!(
        kept.starts_with("554 5.7.1"),
        "a session opened under policy A changed policy mid-session: {kept}"
    );
    old.quit().await;
    println!(
        "policy KV: in force for new sessions {took:.2?} after the push ({attempts} attempts)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_without_a_policy_is_not_ready_until_one_is_pushed() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &[]).await;

    // Wait until JetStream answered (the queue latch is released), so that what is left
    // to wait for is the policy alone.
    let deadline = Instant::now() + READY_WITHIN;
    let waiting = loop {
        let answer = ingress.readyz().await;
        if let Some((503, body)) = &answer
            && !body.contains("Queue")
        {
            break body.clone();
        }
        ingress.fail_if(
            Instant::now() > deadline,
            &format!("no 503 waiting for the policy alone: {answer:?}"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(waiting.contains("Policy"), "/readyz: {waiting}");
    assert_eq!(
        ingress.port("smtp"),
        None,
        "SMTP bound before there is a policy"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path(), &route_policy(&["127.0.0.1/32"], 25));
    policy_push(&config, &nats.url(), &[]).await;
    ingress.wait_ready(Duration::from_secs(10)).await;
    let mut session = Session::open(ingress.smtp(), None).await.expect("session");
    session
        .command("MAIL FROM:<a@client.test>", "250")
        .await
        .expect("MAIL");
    session
        .command(&format!("RCPT TO:<{FOREIGN}>"), "250")
        .await
        .expect("the pushed policy trusts 127.0.0.1");
    session.quit().await;
}

/// The revision of the policy that `policy_config` wrote into `dir`.
fn revision_in(dir: &Path) -> String {
    let snapshot = PolicySnapshot::load_files(&[dir.join("policy.yaml")]).expect("compiles");
    snapshot.revision().to_string()
}

/// The revisions in `sluice_policy_revision_info` series of a `/metrics` page, and
/// whether `/readyz` names `revision`.
async fn shown(ingress: &RoleProcess, revision: &str) -> (Vec<String>, bool) {
    let page = ingress.metrics().await.unwrap_or_default();
    let series = page
        .lines()
        .filter_map(|l| l.strip_prefix("sluice_policy_revision_info{revision=\""))
        .map(|rest| rest.replace("\"} 1", ""))
        .collect();
    let readyz = ingress
        .readyz()
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    let named = readyz.contains(&format!("\npolicy revision {revision}\n"));
    (series, named)
}

/// Polls until the ingress shows `revision`, and only that one, in both places.
async fn until_shown(ingress: &RoleProcess, revision: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (series, named) = shown(ingress, revision).await;
        if series == [revision] && named {
            return;
        }
        ingress.fail_if(
            Instant::now() > deadline,
            &format!("revision {revision} not shown within {within:?}: series {series:?}, /readyz names it: {named}"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_shows_the_revision_it_applies_in_metrics_and_readyz() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let policy_a = policy_config(&dir_a, &route_policy(&["127.0.0.1/32"], 25));
    let policy_b = policy_config(&dir_b, &route_policy(&["127.0.0.1/32", "127.0.0.2/32"], 25));
    let (revision_a, revision_b) = (revision_in(&dir_a), revision_in(&dir_b));
    assert_ne!(revision_a, revision_b);

    policy_push(&policy_a, &nats.url(), &[]).await;
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;
    // Set before the pod is ready: the first ready answer names it already.
    let (series, named) = shown(&ingress, &revision_a).await;
    assert_eq!(series, [revision_a.as_str()]);
    assert!(named, "/readyz: {:?}", ingress.readyz().await);

    policy_push(&policy_b, &nats.url(), &[]).await;
    until_shown(&ingress, &revision_b, Duration::from_secs(10)).await;
    assert_eq!(ingress.readyz().await.map(|(status, _)| status), Some(200));
}
