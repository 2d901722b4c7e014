//! NATS going away under running roles (real binary, real nats-server killed and started
//! again on the same store and port). While it is down the ingress never answers 250 —
//! a transaction whose publish fails gets 451 4.3.0, new sessions 421 4.3.0 — and both
//! roles report 503 on /readyz. Once it is back, both are ready again within 10 s, what
//! was queued before the outage is delivered, and new mail is accepted and delivered.

mod common;

use common::fleet::Fleet;
use common::mail::{self, Outcome, Session};
use common::nats::NatsServer;
use common::roles::RoleProcess;
use common::sink::{AcceptAll, Sink};
use std::time::Duration;
use tokio::time::Instant;

const BEFORE: usize = 20;
const DURING: usize = 5;

/// Polls `/readyz` until its status is `status`; panics when `within` has passed since
/// `start`. Returns the time from `start`.
async fn until_readyz(
    process: &RoleProcess,
    status: u16,
    start: Instant,
    within: Duration,
) -> Duration {
    loop {
        let answer = process.readyz().await;
        if answer.as_ref().is_some_and(|(s, _)| *s == status) {
            return start.elapsed();
        }
        process.fail_if(
            start.elapsed() > within,
            &format!("/readyz not {status} within {within:?}: {answer:?}"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one message per id, each in a session of its own; every one must get 250.
async fn send_all(ingress: &RoleProcess, ids: &[String]) {
    for id in ids {
        let outcome = mail::send_one(ingress.smtp(), None, &mail::message(id)).await;
        ingress.fail_if(
            outcome != Outcome::Accepted,
            &format!("{id}: {outcome:?} with NATS up"),
        );
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@outage.test")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_outage_gets_4xx_never_250_and_recovers() {
    let _heavy = common::roles::exclusive().await;
    let mut nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    // A short ack_wait: a delivery whose ack was lost in the outage comes back soon.
    let args = ["--nats-ack-wait", "5s"];
    let fleet = Fleet::start(&nats.url(), sink.addr.port(), (1, 1), &args, &[]).await;
    let (ingress, worker) = (&fleet.ingresses[0], &fleet.workers[0]);
    let before = ids("before", BEFORE);
    send_all(ingress, &before).await;

    // A transaction already in DATA when NATS dies: its publish cannot be acknowledged.
    let mut open = Session::open(ingress.smtp(), None).await.expect("session");
    open.start_data(mail::FROM, mail::TO).await.expect("DATA");
    open.write(&mail::message("cut@outage.test"))
        .await
        .expect("content");
    nats.stop();
    let cut = open.finish_data().await;
    assert!(
        matches!(&cut, Outcome::Refused(r) if r.starts_with("451 4.3.0")),
        "end of data with NATS down: {cut:?}\n{}",
        fleet.logs()
    );

    // Both roles notice (the probe asks every second, waiting 2 s at most).
    let within = Duration::from_secs(10);
    let down = Instant::now();
    until_readyz(ingress, 503, down, within).await;
    until_readyz(worker, 503, down, within).await;
    // New sessions while it is down: 4xx, at connect or at the end of data, never 250.
    for id in ids("during", DURING) {
        let outcome = mail::send_one(ingress.smtp(), None, &mail::message(&id)).await;
        assert!(
            matches!(&outcome, Outcome::Refused(r) if r.starts_with('4')),
            "{id} with NATS down: {outcome:?}\n{}",
            fleet.logs()
        );
    }
    assert_eq!(ingress.readyz().await.map(|(s, _)| s), Some(503));

    nats.start_again();
    let up = Instant::now();
    let ingress_back = until_readyz(ingress, 200, up, within).await;
    let worker_back = until_readyz(worker, 200, up, within).await;
    let after = ids("after", BEFORE);
    send_all(ingress, &after).await;

    let wanted: Vec<String> = before.iter().chain(&after).cloned().collect();
    let (missing, seen) = mail::wait_delivered(&sink, &wanted, Duration::from_secs(60)).await;
    assert!(
        missing.is_empty(),
        "not delivered after the outage: {missing:?}\n{}",
        fleet.logs()
    );
    // A 4xx leaves the message with the client; one delivered anyway would reach its
    // recipient twice once the client retries (not a loss, but worth seeing).
    let refused_but_delivered: Vec<&String> = seen
        .keys()
        .filter(|id| id.starts_with("during") || id.starts_with("cut@"))
        .collect();
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    println!(
        "outage: ready again after {ingress_back:.1?} (ingress) and {worker_back:.1?} (worker); \
         refused during the outage but delivered anyway: {refused_but_delivered:?}; \
         delivered more than once: {twice:?}"
    );
}
