//! `sluice operator` as a process: the Kubernetes client, the NATS connection, the policy
//! bucket and the queue's streams (provisioned here, as the privileged NATS user), the
//! admin listener (`/healthz`, `/readyz` once the watches have synced and NATS answers,
//! `/metrics`), and SIGTERM, around `operator::run`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::listeners;
use super::provision::provision;
use crate::admin::{AdminState, QuarantineSlot, QueueSlot};
use crate::config::Config;
use crate::operator::lease::LeaseSettings;
use crate::operator::run::Settings;
use crate::operator::{NatsSink, Scope};
use crate::policy::bucket::PolicyBucket;
use crate::policy::sealed::SecretsKey;
use crate::queue::jetstream::JetStreamOptions;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::{Latch, Readiness};

/// Between two attempts at opening the policy bucket while NATS is not there yet.
const BUCKET_RETRY: Duration = Duration::from_secs(1);

/// The operator's settings beyond the process configuration.
pub struct OperatorOptions {
    pub namespace: Option<String>,
    pub policy_namespaces: Vec<String>,
    pub privileged_namespaces: Vec<String>,
    pub secrets_key_file: PathBuf,
    pub identity: Option<String>,
    pub lease_name: String,
    pub leader_election: bool,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(config: Config, options: OperatorOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = CancellationToken::new();
    let mut work = tokio::spawn(serve(config, options, stop.clone()));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        // Ended by itself: a start-up error.
        result = &mut work => return result?,
    }
    tracing::info!("shutting down");
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("the operator did not stop within 10 s"),
    }
}

async fn serve(
    config: Config,
    options: OperatorOptions,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let key = Arc::new(
        SecretsKey::from_file(&options.secrets_key_file).context("loading the secrets key")?,
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let own = || BTreeSet::from([namespace.clone()]);
    let set = |v: &[String]| {
        let s: BTreeSet<String> = v.iter().filter(|n| !n.is_empty()).cloned().collect();
        if s.is_empty() { own() } else { s }
    };
    let scope = Scope {
        policy_namespaces: set(&options.policy_namespaces),
        privileged_namespaces: set(&options.privileged_namespaces),
    };
    let identity = options
        .identity
        .clone()
        .unwrap_or_else(|| config.hostname.clone());
    let metrics = Arc::new(Metrics::operator());
    let readiness = Arc::new(Readiness::default());
    // The operator has no listeners or TLS of its own: those latches are released now.
    readiness.release(Latch::Listeners);
    readiness.release(Latch::Tls);
    let admin_state = AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        queue: QueueSlot::default(),
        quarantine: QuarantineSlot::default(),
        hostname: config.hostname.clone(),
    };
    let admin = listeners::admin(&config, admin_state, &stop).await?;
    let mut ports = super::ports::PortsFile::new(config.ports_file.clone(), admin)?;
    ports.add(&[])?;
    let on_state = {
        let readiness = readiness.clone();
        Arc::new(move |connected: bool| match connected {
            true => readiness.release(Latch::Queue),
            false => readiness.withdraw(Latch::Queue),
        })
    };
    let nats = config
        .nats
        .connect(&format!("sluice-operator-{identity}"), on_state)
        .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let bucket = loop {
        match PolicyBucket::open(&js, config.nats.replicas).await {
            Ok(bucket) => break bucket,
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "policy bucket not available yet; retrying"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(BUCKET_RETRY) => {}
        }
    };
    // The streams, consumer and bucket the ingress and worker users may only look up:
    // the operator's user is the one that may create and update them.
    let queue = JetStreamOptions::for_nats(&config.nats);
    let mut attempt = 0u32;
    loop {
        match provision(&js, &queue).await {
            Ok(()) => break,
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(30) {
                    let error = format!("{e:#}");
                    tracing::warn!(error, attempt, "provisioning the queue failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(BUCKET_RETRY) => {}
        }
    }
    tracing::info!(stream = %queue.stream, replicas = queue.replicas, "queue provisioned");
    readiness.release(Latch::Queue);
    let sink = Arc::new(NatsSink {
        bucket,
        identity: identity.clone(),
    });
    let lease = options.leader_election.then(|| LeaseSettings {
        name: options.lease_name.clone(),
        ..LeaseSettings::new(namespace.clone(), identity.clone())
    });
    tracing::info!(
        namespace,
        identity,
        policy_namespaces = ?scope.policy_namespaces,
        privileged_namespaces = ?scope.privileged_namespaces,
        admin = ?admin,
        "sluice operator started"
    );
    let synced = {
        let readiness = readiness.clone();
        move || readiness.release(Latch::Policy)
    };
    let settings = Settings {
        scope,
        identity,
        lease,
        key,
    };
    let result = crate::operator::run::run(client, settings, sink, metrics, synced, stop).await;
    readiness.start_draining();
    nats.drain().await.ok();
    result
}
