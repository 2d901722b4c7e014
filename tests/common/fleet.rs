//! A fleet of role processes for load tests: a policy pushed to NATS, N ingresses and
//! M workers started and ready, and the checks and figures of a load run against them
//! (every message answered 250 at the sink, duplicates, redeliveries).

use super::mail::{self, Tally};
use super::roles::{
    READY_WITHIN, RoleProcess, metric_sum, policy_config, policy_push, route_policy,
};
use super::sink::Sink;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// Ingress and worker processes sharing one NATS, with a policy that trusts 127.0.0.1
/// and routes `sink.test` to the sink.
pub struct Fleet {
    pub ingresses: Vec<RoleProcess>,
    pub workers: Vec<RoleProcess>,
    pub policy_dir: TempDir,
}

impl Fleet {
    /// Pushes the policy, starts the processes and waits until all are ready. `args` go
    /// to every process: the NATS settings (e.g. `--nats-ack-wait`) must agree, as each
    /// role creates or updates the shared consumer when it starts. `ingress_args` go to
    /// the ingresses only.
    pub async fn start(
        nats_url: &str,
        sink_port: u16,
        (ingresses, workers): (usize, usize),
        args: &[&str],
        ingress_args: &[&str],
    ) -> Fleet {
        let policy_dir = tempfile::tempdir().unwrap();
        let config = policy_config(
            policy_dir.path(),
            &route_policy(&["127.0.0.1/32"], sink_port),
        );
        let replicas: Vec<&str> = args
            .windows(2)
            .find(|w| w[0] == "--nats-replicas")
            .map(|w| w.to_vec())
            .unwrap_or_default();
        policy_push(&config, nats_url, &replicas).await;
        let mut fleet = Fleet {
            ingresses: Vec::new(),
            workers: Vec::new(),
            policy_dir,
        };
        let both: Vec<&str> = args.iter().chain(ingress_args).copied().collect();
        for i in 0..ingresses {
            let name = format!("ingress-{i}");
            fleet
                .ingresses
                .push(RoleProcess::ingress(&name, nats_url, &both).await);
        }
        for i in 0..workers {
            let name = format!("worker-{i}");
            fleet
                .workers
                .push(RoleProcess::worker(&name, nats_url, args).await);
        }
        for process in fleet.ingresses.iter_mut().chain(fleet.workers.iter_mut()) {
            process.wait_ready(READY_WITHIN).await;
        }
        fleet
    }

    /// The relay listeners of the ingresses, in order.
    pub fn smtp_addrs(&self) -> Vec<SocketAddr> {
        self.ingresses.iter().map(RoleProcess::smtp).collect()
    }

    /// Starts `mail::run_load` over the ingresses: `total` messages from `clients`
    /// sessions, in the background; its tally fills as replies come.
    pub fn start_load(
        &self,
        total: usize,
        clients: usize,
    ) -> (Arc<Tally>, tokio::task::JoinHandle<()>) {
        let tally = Arc::new(Tally::default());
        let load = mail::run_load(self.smtp_addrs(), total, clients, tally.clone());
        (tally, tokio::spawn(load))
    }

    /// A worker metric summed over the workers still running (a killed one took its
    /// counts with it); `None` when no worker exports it.
    pub async fn worker_metric(&self, name: &str) -> Option<f64> {
        let mut total = None;
        for worker in &self.workers {
            let page = worker.metrics().await.unwrap_or_default();
            if let Some(value) = metric_sum(&page, name) {
                total = Some(total.unwrap_or(0.0) + value);
            }
        }
        total
    }

    /// `sluice_queue_redeliveries_total` over the running workers: messages handed out
    /// again after a lease lapsed or was handed back.
    pub async fn redeliveries(&self) -> Option<f64> {
        self.worker_metric("sluice_queue_redeliveries_total").await
    }

    /// The log tails of every process, for a failure message.
    pub fn logs(&self) -> String {
        self.ingresses
            .iter()
            .chain(&self.workers)
            .map(|p| format!("--- log of {} ---\n{}\n", p.name, p.log_tail()))
            .collect()
    }
}

/// Helpers for a load run against a fleet.
impl Fleet {
    /// Waits (bounded) until the load has had `n` messages accepted.
    pub async fn until_accepted(&self, tally: &Tally, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while tally.accepted_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} accepted within {within:?}; {}\n{}",
                tally.accepted_count(),
                mail::failure_summary(tally),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the load to end, checks that at least `min_accepted` messages were
    /// accepted, then waits for every accepted one at the sink; prints the figures
    /// under `label`. Each wait is bounded by `within`.
    pub async fn all_accepted_delivered(
        &self,
        label: &str,
        load: tokio::task::JoinHandle<()>,
        tally: &Tally,
        sink: &Sink,
        (min_accepted, within): (usize, Duration),
    ) {
        match tokio::time::timeout(within, load).await {
            Ok(done) => done.expect("load panicked"),
            Err(_) => panic!(
                "load not done within {within:?}: {} accepted\n{}",
                tally.accepted_count(),
                self.logs()
            ),
        }
        let accepted = tally.accepted_ids();
        assert!(
            accepted.len() >= min_accepted,
            "only {} accepted, expected {min_accepted}; {}\n{}",
            accepted.len(),
            mail::failure_summary(tally),
            self.logs()
        );
        let (missing, seen) = mail::wait_delivered(sink, &accepted, within).await;
        assert!(
            missing.is_empty(),
            "{} of {} accepted messages never reached the sink (first: {:?})\n{}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(5)],
            self.logs()
        );
        let show = |n: Option<f64>| n.map_or("metric absent".to_string(), |n| n.to_string());
        println!(
            "{label}: {} accepted, all delivered; {}; duplicates at the sink: {}; \
             redeliveries: {}; duplicates suppressed by the workers: {}",
            accepted.len(),
            mail::failure_summary(tally),
            mail::duplicates(&seen),
            show(self.redeliveries().await),
            show(
                self.worker_metric("sluice_delivery_duplicates_suppressed_total")
                    .await
            ),
        );
    }
}
