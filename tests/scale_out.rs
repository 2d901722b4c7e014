//! Scale-out with the real binary on a real nats-server: two `sluice ingress` and three
//! `sluice worker` processes share one JetStream queue; 5,000 messages from 20
//! concurrent clients all reach the sink. Proves that every message answered 250 is
//! delivered when several ingresses publish and several workers consume at once, and
//! reports how many arrived twice (at-least-once) and how many the queue handed out again.

mod common;

use common::fleet::Fleet;
use common::nats::NatsServer;
use common::roles::metric_sum;
use common::sink::{AcceptAll, Sink};
use std::time::{Duration, Instant};

const MESSAGES: usize = 5_000;
const CLIENTS: usize = 20;
/// Sending and delivering each must finish within this: a bound, not a target.
const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ingresses_and_three_workers_deliver_every_accepted_message() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let fleet = Fleet::start(&nats.url(), sink.addr.port(), (2, 3), &[], &[]).await;
    let started = Instant::now();

    let (tally, load) = fleet.start_load(MESSAGES, CLIENTS);
    // Nothing is broken on purpose here: every message must be accepted at once.
    fleet
        .all_accepted_delivered("scale-out", load, &tally, &sink, (MESSAGES, WITHIN))
        .await;
    println!("scale-out: sent and delivered in {:.1?}", started.elapsed());

    // Every process did its share: a role that never got work proves nothing.
    for (process, metric) in fleet
        .ingresses
        .iter()
        .map(|p| (p, "sluice_messages_accepted_total"))
        .chain(fleet.workers.iter().map(|p| (p, "sluice_deliveries_total")))
    {
        let page = process.metrics().await.unwrap_or_default();
        let count = metric_sum(&page, metric).unwrap_or(0.0);
        println!("scale-out: {} {metric} {count}", process.name);
        process.fail_if(
            count < 1.0,
            &format!("{metric} is {count}: it took no part"),
        );
    }
}
