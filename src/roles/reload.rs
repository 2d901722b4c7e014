//! Following configuration while running: RelayPolicy files (standalone) or the policy
//! bucket in NATS (ingress, worker), and the TLS certificate files, re-read when they
//! change or on SIGHUP. An invalid policy is refused and the one in force stays. The
//! revision applied is shown in `/metrics` and `/readyz` ([`PolicyFeed::show_revision`]).

use crate::config::{Config, Role};
use crate::ingress::tls::TlsStore;
use crate::policy::PolicySnapshot;
use crate::policy::bucket::PolicyBucket;
use crate::telemetry::metrics::{Metrics, ReloadResult};
use crate::watch::FileWatch;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How often policy and certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Between two attempts at opening the policy bucket while NATS is not there yet.
const BUCKET_RETRY: Duration = Duration::from_secs(1);

/// The files watched; their stamps are taken before they are first read, so that a
/// change made while they load is seen as a change.
pub struct Watches {
    policy: Option<FileWatch>,
    tls: FileWatch,
}

impl Watches {
    pub fn new(config: &Config, role: Role) -> Self {
        Watches {
            policy: role
                .policy_from_files()
                .then(|| FileWatch::new(config.policies.clone())),
            tls: FileWatch::new(
                config
                    .tls
                    .iter()
                    .flat_map(|t| [t.cert_file.clone(), t.key_file.clone()])
                    .collect(),
            ),
        }
    }
}

/// The policy in force, kept current: read from the files, or waited for in the NATS
/// bucket and followed there. `Ok(None)` when `stop` came before the first snapshot.
pub async fn policy(
    config: &Config,
    role: Role,
    nats: Option<&async_nats::Client>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<PolicyFeed>> {
    if role.policy_from_files() {
        let policy = PolicySnapshot::load_files(&config.policies).context("loading policy")?;
        let (tx, rx) = watch::channel(Arc::new(policy));
        return Ok(Some(PolicyFeed {
            rx,
            files: Some(tx),
        }));
    }
    let client = nats.context("the policy bucket needs NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    let bucket = loop {
        match PolicyBucket::open(&js, config.nats.replicas).await {
            Ok(bucket) => break bucket,
            Err(e) => {
                tracing::warn!(error = %e, "policy bucket not available yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(BUCKET_RETRY) => {}
                }
            }
        }
    };
    tracing::info!("waiting for a policy in the NATS bucket (sluice policy push)");
    let rx = bucket.follow(metrics.clone(), stop.clone()).await;
    Ok(rx.map(|rx| PolicyFeed { rx, files: None }))
}

/// The policy channel; `files` is its sender when policy comes from files, for
/// [`watch_files`] to reload into.
pub struct PolicyFeed {
    pub rx: watch::Receiver<Arc<PolicySnapshot>>,
    pub files: Option<watch::Sender<Arc<PolicySnapshot>>>,
}

impl PolicyFeed {
    /// Keeps `sluice_policy_revision_info` (and with it the `/readyz` body) on the
    /// revision in the channel, until `stop`. The channel is what sessions and deliveries
    /// read, so whatever feeds it, files or NATS, the revision shown is the one applied.
    /// The current one is set before this returns: a pod is never ready without it.
    pub fn show_revision(&self, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut rx = self.rx.clone();
        metrics
            .policy_revision
            .set(rx.borrow_and_update().revision());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() {
                        // No sender left: nothing will change any more.
                        return;
                    },
                }
                metrics
                    .policy_revision
                    .set(rx.borrow_and_update().revision());
            }
        });
    }
}

/// Reloads what changed, every second or at once on `reload` (SIGHUP), until `stop`.
pub async fn watch_files(
    config: Config,
    mut watches: Watches,
    policy_tx: Option<watch::Sender<Arc<PolicySnapshot>>>,
    tls: Option<Arc<TlsStore>>,
    metrics: Arc<Metrics>,
    reload: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reload.notified() => true,
            _ = tokio::time::sleep(WATCH_INTERVAL) => false,
        };
        if let (Some(watch), Some(tx)) = (&mut watches.policy, &policy_tx)
            && (watch.changed() || forced)
        {
            reload_policy(&config, tx, &metrics);
        }
        if let Some(tls) = &tls
            && (watches.tls.changed() || forced)
        {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in force")
                }
            }
        }
    }
}

fn reload_policy(
    config: &Config,
    policy_tx: &watch::Sender<Arc<PolicySnapshot>>,
    metrics: &Metrics,
) {
    match PolicySnapshot::load_files(&config.policies) {
        Ok(policy) => {
            tracing::info!(revision = policy.revision(), "policy reloaded");
            policy_tx.send_replace(Arc::new(policy));
            metrics.policy_reloads.inc(ReloadResult::Applied);
        }
        Err(e) => {
            tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
            metrics.policy_reloads.inc(ReloadResult::Invalid);
        }
    }
}
