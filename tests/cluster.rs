//! The roles on a three-node NATS cluster (real nats-server processes routed on
//! loopback), the queue stream and policy bucket with three replicas: the node leading
//! the queue stream is SIGKILLed while mail flows. The clients ride out the leader
//! election (4xx, then retry) and every message answered 250 is delivered.

mod common;

use common::fleet::Fleet;
use common::nats::NatsCluster;
use common::sink::{AcceptAll, Sink};
use std::time::Duration;

const MESSAGES: usize = 1_500;
const CLIENTS: usize = 10;
const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_stream_leader_loses_no_accepted_message() {
    let _heavy = common::roles::exclusive().await;
    let mut cluster = NatsCluster::start(3).await;
    let sink = Sink::start(AcceptAll).await;
    let args = ["--nats-replicas", "3", "--nats-ack-wait", "5s"];
    let fleet = Fleet::start(&cluster.urls(), sink.addr.port(), (2, 2), &args, &[]).await;
    let (leader, replicas) = cluster.stream_leader("SLUICE_MESSAGES").await;
    assert_eq!(replicas, 3, "--nats-replicas 3 did not reach the stream");

    let (tally, load) = fleet.start_load(MESSAGES, CLIENTS);
    fleet.until_accepted(&tally, MESSAGES / 3, WITHIN).await;
    // The leader is the node whose loss hurts most: the stream must elect another one
    // from the two replicas left, with nothing acknowledged missing.
    cluster.kill(&leader);
    let bounds = (MESSAGES * 99 / 100, WITHIN);
    fleet
        .all_accepted_delivered(
            &format!("cluster, {leader} killed"),
            load,
            &tally,
            &sink,
            bounds,
        )
        .await;
}
