//! The operator's process body: the watches (RelayPolicies cluster-wide, Secrets in the
//! allowed namespaces only), leader election, and the controller, until `stop`. The
//! process around it (NATS, the admin listener, signals) is `roles::operator`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::changes::{Changes, Tracker};
use super::desired::Scope;
use super::lease::{self, Leadership, LeaseSettings};
use super::reconcile::{Context, error_policy, reconcile};
use super::secrets::SecretStores;
use super::sink::SnapshotSink;
use crate::policy::model::RelayPolicyResource;
use crate::policy::sealed::SecretsKey;
use crate::telemetry::metrics::Metrics;

/// What the operator needs beyond its clients.
pub struct Settings {
    pub scope: Scope,
    /// This replica's name in Events and in the Lease (the pod name).
    pub identity: String,
    /// `None`: no election, this replica always writes (a single replica, or tests).
    pub lease: Option<LeaseSettings>,
    pub key: Arc<SecretsKey>,
}

/// Runs until `stop`. `synced` is called once every watch has listed what exists, which
/// is when the operator knows enough to be ready.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    sink: Arc<dyn SnapshotSink>,
    metrics: Arc<Metrics>,
    synced: impl FnOnce() + Send + 'static,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let changes = Changes::default();
    let config = watcher::Config::default();
    let (policy_store, writer) = reflector::store::<RelayPolicyResource>();
    let mut tracker = Tracker::new(changes.clone());
    // Cluster-wide, so that a policy outside the allowed namespaces is told it does not
    // count instead of being silently ignored.
    let policies = reflector(writer, watcher(Api::all(client.clone()), config.clone()))
        .default_backoff()
        .inspect_ok(move |event| tracker.observe(event))
        .touched_objects();
    let secrets = watch_secrets(&client, &settings.scope, &changes, &config, &stop);
    let (leadership, election) = match settings.lease {
        Some(lease) => {
            let (leadership, task) = lease::spawn(client.clone(), lease, stop.clone());
            (leadership, Some(task))
        }
        None => (Leadership::fixed(true), None),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sluice-operator".into(),
            instance: Some(settings.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        policy_store.clone(),
        secrets.clone(),
        settings.scope,
        settings.key,
        sink,
        leadership.clone(),
        recorder,
        metrics,
        changes.clone(),
    ));
    tokio::spawn(when_synced(policy_store.clone(), secrets, synced));
    tokio::spawn(follow_leadership(leadership, ctx.clone(), stop.clone()));
    // Every change that matters reconciles every policy: the snapshot is one for all.
    let trigger = futures_util::stream::unfold(changes.subscribe(), |mut rx| async move {
        rx.changed().await.ok().map(|_| ((), rx))
    });
    Controller::for_stream(policies, policy_store)
        .reconcile_all_on(trigger)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
    if let Some(task) = election {
        // Lets the election release the Lease, so that the other replica takes over now.
        let _ = task.await;
    }
    Ok(())
}

/// One watched store of Secrets per allowed namespace, driven in a task of its own.
fn watch_secrets(
    client: &kube::Client,
    scope: &Scope,
    changes: &Changes,
    config: &watcher::Config,
    stop: &CancellationToken,
) -> SecretStores {
    let mut stores = BTreeMap::new();
    let mut streams = Vec::new();
    for namespace in &scope.policy_namespaces {
        let (store, writer) = reflector::store::<Secret>();
        let mut tracker = Tracker::new(changes.clone());
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        let stream = reflector(writer, watcher(api, config.clone()))
            .default_backoff()
            .inspect_ok(move |event| tracker.observe(event));
        streams.push(stream.boxed());
        stores.insert(namespace.clone(), store);
    }
    let stop = stop.clone();
    let mut all = futures_util::stream::select_all(streams);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = all.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "watching Secrets"),
                    None => return,
                },
            }
        }
    });
    SecretStores(stores)
}

async fn when_synced(
    policies: Store<RelayPolicyResource>,
    secrets: SecretStores,
    synced: impl FnOnce(),
) {
    if !ready(&policies).await {
        return;
    }
    for store in secrets.0.values() {
        if !ready(store).await {
            return;
        }
    }
    tracing::info!(
        policies = policies.state().len(),
        "watches synced with the API server"
    );
    synced();
}

/// Whether a store got its first full list; `false` if its writer is gone.
async fn ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // A store's readiness wakes only the last task that waited on it, and the controller
    // waits on the policies' too: asking again now and then gets the answer either way.
    loop {
        let wait = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
        match wait.await {
            Ok(result) => return result.is_ok(),
            Err(_) => continue,
        }
    }
}

async fn follow_leadership(mut leadership: Leadership, ctx: Arc<Context>, stop: CancellationToken) {
    ctx.leadership_changed(leadership.is_leader()).await;
    loop {
        let leader = tokio::select! {
            _ = stop.cancelled() => return,
            leader = leadership.changed() => leader,
        };
        tracing::info!(leader, "leadership changed");
        ctx.leadership_changed(leader).await;
    }
}
