//! The reconciler, in the shape of kube-rs/controller-rs: one `reconcile` per
//! RelayPolicy and an `error_policy` that counts failures by variant.
//!
//! The snapshot depends on every policy at once, so a reconcile first makes sure the
//! compiled result is current: when anything that matters changed (`changes.rs`) it
//! compiles the whole set again, once, and writes the snapshot to NATS if its revision
//! differs from the one in force. Then it writes this policy's status if it differs.
//! Every policy is reconciled again after each change, so all statuses follow. There is
//! no finalizer: a deleted policy is simply missing from the next compile.
//!
//! A follower (not holding the Lease) writes nothing at all.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use std::sync::atomic::Ordering;

use super::changes::Changes;
use super::desired::{Desired, Scope, desired, id};
use super::lease::Leadership;
use super::secrets::{HashCache, KubeSecrets, SecretStores};
use super::sink::SnapshotSink;
use super::status;
use crate::policy::model::RelayPolicyResource;
use crate::policy::sealed::SecretsKey;
use crate::telemetry::metrics::{Metrics, ReconcileFailure, ReconcileResult};
use crate::telemetry::operator::OperatorMetrics;

/// Everything a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub policies: Store<RelayPolicyResource>,
    pub secrets: SecretStores,
    pub scope: Scope,
    pub key: Arc<SecretsKey>,
    pub sink: Arc<dyn SnapshotSink>,
    pub leadership: Leadership,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub changes: Changes,
    pub cache: Arc<HashCache>,
    /// How often an unchanged policy is looked at again anyway.
    pub resync: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The [`Changes`] version `desired` was compiled at.
    version: Option<u64>,
    desired: Option<Arc<Desired>>,
    /// The revision in force in NATS; `None` inside means none is; read once per
    /// leadership, then kept as this replica writes.
    in_force: Option<Option<String>>,
    /// The last failed write, so that the other policies' reconciles do not each try
    /// NATS again at once: a thousand policies would make a thousand writes a round.
    failed_write: Option<FailedWrite>,
}

struct FailedWrite {
    revision: String,
    at: std::time::Instant,
    failures: u32,
    error: String,
}

impl FailedWrite {
    /// 1 s after the first failure, doubling up to 30 s.
    fn retry_after(&self) -> Duration {
        Duration::from_secs(1 << self.failures.saturating_sub(1).min(5)).min(MAX_WRITE_PAUSE)
    }
}

const MAX_WRITE_PAUSE: Duration = Duration::from_secs(30);

/// What failed in a reconcile; the metric label is derived from the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the snapshot in force from NATS: {0:#}")]
    ReadSnapshot(anyhow::Error),
    #[error("writing the snapshot to NATS: {0:#}")]
    WriteSnapshot(anyhow::Error),
    #[error("writing the status of {policy}: {source}")]
    PatchStatus { policy: String, source: kube::Error },
    #[error("compiling the policies: {0}")]
    Compile(tokio::task::JoinError),
}

impl Error {
    pub fn metric_label(&self) -> ReconcileFailure {
        match self {
            Error::ReadSnapshot(_) => ReconcileFailure::ReadSnapshot,
            Error::WriteSnapshot(_) => ReconcileFailure::WriteSnapshot,
            Error::PatchStatus { .. } => ReconcileFailure::PatchStatus,
            Error::Compile(_) => ReconcileFailure::Compile,
        }
    }
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        policies: Store<RelayPolicyResource>,
        secrets: SecretStores,
        scope: Scope,
        key: Arc<SecretsKey>,
        sink: Arc<dyn SnapshotSink>,
        leadership: Leadership,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        changes: Changes,
    ) -> Context {
        Context {
            client,
            policies,
            secrets,
            scope,
            key,
            sink,
            leadership,
            recorder,
            metrics,
            changes,
            cache: Arc::default(),
            resync: Duration::from_secs(300),
            state: Default::default(),
        }
    }

    fn operator_metrics(&self) -> Option<&OperatorMetrics> {
        self.metrics.operator.as_ref()
    }

    /// Leadership changed: a new leader reads what is in force again (another replica
    /// may have written meanwhile) and looks at every policy.
    pub async fn leadership_changed(&self, leader: bool) {
        if let Some(m) = self.operator_metrics() {
            m.leader.set(i64::from(leader));
        }
        self.state.lock().await.in_force = None;
        if leader {
            self.changes.bump();
        }
    }

    /// The compiled result at the current version, with the snapshot put in force.
    async fn current(&self) -> Result<(Arc<Desired>, Option<String>), Error> {
        let mut state = self.state.lock().await;
        let version = self.changes.version();
        let desired = match (&state.desired, state.version) {
            (Some(d), Some(v)) if v == version => d.clone(),
            _ => {
                let d = Arc::new(self.compile().await?);
                state.version = Some(version);
                state.desired = Some(d.clone());
                d
            }
        };
        if state.in_force.is_none() {
            let found = self.sink.in_force().await.map_err(Error::ReadSnapshot)?;
            state.in_force = Some(found);
        }
        let mut in_force = state.in_force.clone().flatten();
        if let Some(snapshot) = &desired.snapshot
            && in_force.as_deref() != Some(snapshot.revision())
        {
            if let Some(failed) = &state.failed_write
                && failed.revision == snapshot.revision()
                && failed.at.elapsed() < failed.retry_after()
            {
                return Err(Error::WriteSnapshot(anyhow::anyhow!(
                    "{} (failed {} times; trying again within {:?})",
                    failed.error,
                    failed.failures,
                    failed.retry_after()
                )));
            }
            if let Err(e) = self.sink.write(snapshot).await {
                let failures = match &state.failed_write {
                    Some(f) if f.revision == snapshot.revision() => f.failures + 1,
                    _ => 1,
                };
                let error = format!("{e:#}");
                tracing::warn!(
                    revision = snapshot.revision(),
                    failures,
                    error,
                    "cannot write the policy snapshot to NATS"
                );
                state.failed_write = Some(FailedWrite {
                    revision: snapshot.revision().to_string(),
                    at: std::time::Instant::now(),
                    failures,
                    error,
                });
                return Err(Error::WriteSnapshot(e));
            }
            state.failed_write = None;
            tracing::info!(
                revision = snapshot.revision(),
                policies = snapshot.policies().len(),
                "policy snapshot written to NATS"
            );
            in_force = Some(snapshot.revision().to_string());
            state.in_force = Some(in_force.clone());
            if let Some(m) = self.operator_metrics() {
                m.snapshot_writes.inc();
            }
        }
        if let (Some(m), Some(revision)) = (self.operator_metrics(), &in_force) {
            m.set_in_force(revision);
        }
        Ok((desired, in_force))
    }

    async fn compile(&self) -> Result<Desired, Error> {
        let policies = self.policies.state();
        let (stores, key, cache, scope) = (
            self.secrets.clone(),
            self.key.clone(),
            self.cache.clone(),
            self.scope.clone(),
        );
        let started = std::time::Instant::now();
        // Hashing passwords is CPU work by design: off the async threads.
        let desired = tokio::task::spawn_blocking(move || {
            let secrets = KubeSecrets::new(&stores, &key, &cache);
            let desired = desired(&policies, &scope, &secrets);
            secrets.finish();
            desired
        })
        .await
        .map_err(Error::Compile)?;
        let refused = desired
            .verdicts
            .values()
            .filter(|v| v.refused.is_some())
            .count();
        let took = started.elapsed();
        tracing::info!(
            policies = desired.verdicts.len(),
            refused,
            seconds = took.as_secs_f64(),
            "policies compiled"
        );
        if let Some(m) = self.operator_metrics() {
            m.compiles.inc();
            m.last_compile_seconds.set(took.as_secs_f64());
            // A running total kept by the cache: the counter follows it.
            m.password_hashes
                .inner()
                .store(self.cache.computed(), Ordering::Relaxed);
            m.set_policies((desired.verdicts.len() - refused) as u64, refused as u64);
        }
        Ok(desired)
    }
}

/// Brings one policy's status, and the snapshot, up to date.
pub async fn reconcile(
    policy: Arc<RelayPolicyResource>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let count = |result: ReconcileResult| {
        if let Some(m) = ctx.operator_metrics() {
            m.reconciles.inc(result);
        }
    };
    if !ctx.leadership.is_leader() {
        count(ReconcileResult::SkippedFollower);
        return Ok(Action::await_change());
    }
    let (desired, in_force) = ctx.current().await?;
    let Some(verdict) = desired.verdicts.get(&id(&policy)) else {
        // Created after the compile; the change it made brings it back.
        count(ReconcileResult::Ok);
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let status = status::desired_status(&policy, verdict, in_force.as_deref(), chrono::Utc::now());
    if policy.status.as_ref() != Some(&status) {
        let namespace = policy.namespace().unwrap_or_default();
        let api: Api<RelayPolicyResource> = Api::namespaced(ctx.client.clone(), &namespace);
        status::apply(&api, &policy.name_any(), &status)
            .await
            .map_err(|source| Error::PatchStatus {
                policy: id(&policy),
                source,
            })?;
        if let Some(m) = ctx.operator_metrics() {
            m.status_writes.inc();
        }
        if let Some(event) = status::event(&policy, &status) {
            // Events are for people; a failure to record one must not stop the rules.
            if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
                tracing::warn!(policy = id(&policy), error = %e, "cannot record an Event");
            }
        }
    }
    count(ReconcileResult::Ok);
    Ok(Action::requeue(ctx.resync))
}

/// Counts the failure by its variant and tries again soon.
pub fn error_policy(policy: Arc<RelayPolicyResource>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        // Logged once where NATS failed, not once per policy.
        Error::WriteSnapshot(_) | Error::ReadSnapshot(_) => {
            tracing::debug!(policy = id(&policy), error = %error, "reconcile failed")
        }
        _ => tracing::warn!(policy = id(&policy), error = %error, "reconcile failed"),
    }
    if let Some(m) = ctx.operator_metrics() {
        m.reconciles.inc(ReconcileResult::Error);
        m.failures.inc(error.metric_label());
    }
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
