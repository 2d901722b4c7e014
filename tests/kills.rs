//! Processes dying under load, with the real binary on a real nats-server:
//! - a worker SIGKILLed mid-run: its leases come back after `ack_wait` (2 s here) and
//!   another worker delivers them; nothing answered 250 is lost;
//! - an ingress SIGKILLed while a client is in DATA on it: that transaction never gets
//!   250 and never reaches the sink (no partial message), the other clients fail over to
//!   the other ingress, and nothing answered 250 is lost;
//! - a worker SIGTERMed in the middle of a slow delivery: it exits 0 within its grace
//!   period (a drain delay is for roles with listeners only), and the message it held
//!   comes back at once (it naks its leases on the way out) rather than after a long
//!   `ack_wait`.

mod common;

use common::fleet::Fleet;
use common::mail::{self, Outcome, Session};
use common::nats::NatsServer;
use common::roles::{READY_WITHIN, RoleProcess};
use common::sink::{AcceptAll, Replies, Sink, Transaction};
use std::time::Duration;
use tokio::time::Instant;

const MESSAGES: usize = 2_000;
const CLIENTS: usize = 20;
const WITHIN: Duration = Duration::from_secs(120);
/// The clients retry on the other ingress: all but a handful of messages get through.
const MIN_ACCEPTED: usize = MESSAGES * 99 / 100;

/// A remote server that takes 50 ms over each message: every worker always has
/// deliveries in flight, so the one killed surely dies holding leases.
struct Slow;
impl Replies for Slow {
    fn hold(&self, _t: &Transaction, _completed: usize) -> Duration {
        Duration::from_millis(50)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_run_loses_nothing() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(Slow).await;
    // The workers set the shared consumer's ack_wait when they start: all must agree.
    let args = ["--nats-ack-wait", "2s"];
    let mut fleet = Fleet::start(&nats.url(), sink.addr.port(), (2, 3), &args, &[]).await;
    let (tally, load) = fleet.start_load(MESSAGES, CLIENTS);

    fleet.until_accepted(&tally, MESSAGES / 3, WITHIN).await;
    // Mid-run a worker holds leases on messages in delivery: they must come back.
    fleet.workers[0].kill();
    let bounds = (MIN_ACCEPTED, WITHIN);
    fleet
        .all_accepted_delivered("worker SIGKILL", load, &tally, &sink, bounds)
        .await;
    // The killed worker held leases (the sink is slow): the survivors got them again.
    let redelivered = fleet.redeliveries().await.unwrap_or(0.0);
    assert!(
        redelivered >= 1.0,
        "no redelivery after a worker died holding leases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_killed_mid_transaction_loses_nothing() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let mut fleet = Fleet::start(&nats.url(), sink.addr.port(), (2, 2), &[], &[]).await;
    let victim = fleet.ingresses[0].smtp();

    // A client half-way through its content on the ingress about to die.
    let mut open = Session::open(victim, None).await.expect("session");
    open.start_data(mail::FROM, mail::TO).await.expect("DATA");
    let content = mail::message("in-flight@load.test");
    let (head, tail) = content.split_at(content.len() / 2);
    open.write(head).await.expect("first half");

    let (tally, load) = fleet.start_load(MESSAGES, CLIENTS);
    fleet.until_accepted(&tally, MESSAGES / 3, WITHIN).await;
    fleet.ingresses[0].kill();

    // The rest may still be written into the dead socket's buffer, but no 250 can come.
    let outcome = match open.write(tail).await {
        Ok(()) => open.finish_data().await,
        Err(outcome) => outcome,
    };
    assert!(
        matches!(outcome, Outcome::Broken(_)),
        "the transaction cut by the kill ended {outcome:?}"
    );
    let bounds = (MIN_ACCEPTED, WITHIN);
    fleet
        .all_accepted_delivered("ingress SIGKILL", load, &tally, &sink, bounds)
        .await;
    let seen = mail::sink_ids(&sink);
    assert!(
        !seen.contains_key("in-flight@load.test"),
        "half a message was delivered"
    );
}

/// Sits on the reply to the first delivery long enough to stop a worker in the middle of
/// it; answers later deliveries at once.
struct SlowFirst;
impl Replies for SlowFirst {
    fn hold(&self, _t: &Transaction, completed: usize) -> Duration {
        match completed {
            0 => Duration::from_secs(3),
            _ => Duration::ZERO,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_sigterm_mid_delivery_hands_the_message_back() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(SlowFirst).await;
    // A long ack_wait: a message coming back quickly can only be the worker's own nak.
    // A long drain delay, which a worker skips: nothing routes connections to it.
    let args = [
        "--nats-ack-wait",
        "60s",
        "--shutdown-grace",
        "1s",
        "--drain-delay",
        "60s",
    ];
    let mut fleet = Fleet::start(&nats.url(), sink.addr.port(), (1, 1), &args, &[]).await;
    let sent = mail::send_one(
        fleet.ingresses[0].smtp(),
        None,
        &mail::message("slow@load.test"),
    )
    .await;
    assert_eq!(sent, Outcome::Accepted);

    // The sink has the content and is sitting on its reply: the worker is mid-delivery.
    let first = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 1, "no delivery started\n{}", fleet.logs());
    let stopping = Instant::now();
    let worker = &mut fleet.workers[0];
    worker.terminate();
    let grace = Duration::from_secs(1);
    let exit = worker.wait_exit(grace + Duration::from_secs(5)).await;
    let status = exit.unwrap_or_else(|| worker.fail("still running 6 s after SIGTERM"));
    worker.fail_if(!status.success(), &format!("exited {status} after SIGTERM"));

    // Another worker gets the message as soon as it is up.
    let mut next = RoleProcess::worker("worker-next", &nats.url(), &args[..2]).await;
    next.wait_ready(READY_WITHIN).await;
    let again = sink.wait_for(2, Duration::from_secs(30)).await;
    let came_back = stopping.elapsed();
    assert_eq!(
        again.len(),
        2,
        "the message held at SIGTERM was not delivered again within 30 s\n{}\n--- worker-next ---\n{}",
        fleet.logs(),
        next.log_tail()
    );
    assert_eq!(
        mail::message_id(&again[1].data).as_deref(),
        Some("slow@load.test")
    );
    assert!(
        came_back < Duration::from_secs(20),
        "back after {came_back:?}: not handed back, only expired"
    );
    println!("SIGTERM: exited {status}; delivered again {came_back:.1?} after SIGTERM");
}
