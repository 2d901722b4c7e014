//! The emulated Kubernetes API server (`tests/kube_emulator.py`, through
//! `common::kube::KubeEmulator`) against the kube-rs client, used the way `sluice operator`
//! will use it: RelayPolicies created, listed, watched, their status written by
//! server-side apply on the status subresource, Secrets, Leases for leader election,
//! Events from `kube::runtime::events::Recorder`, and kube-rs' `finalizer()`.

mod common;

use common::kube::{KubeEmulator, NAMESPACE};
use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::api::{ResourceExt, WatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, core::Status};
use sluice::policy::model::{RelayPolicyResource, RelayPolicySpec, RelayPolicyStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long any one thing the emulator does may take.
const WITHIN: Duration = Duration::from_secs(10);
const OPERATOR: &str = "sluice-operator";

fn spec(relay_domain: &str) -> RelayPolicySpec {
    RelayPolicySpec {
        relay_domains: vec![relay_domain.to_string()],
        ..Default::default()
    }
}

fn policy_yaml(name: &str, relay_domain: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {NAMESPACE}\nspec:\n  relayDomains: [\"{relay_domain}\"]\n"
    )
}

async fn policies(emulator: &KubeEmulator) -> Api<RelayPolicyResource> {
    Api::default_namespaced(emulator.client().await)
}

/// The status the operator writes: server-side apply on the status subresource.
async fn apply_status(
    api: &Api<RelayPolicyResource>,
    name: &str,
    status: &RelayPolicyStatus,
) -> RelayPolicyResource {
    let patch = serde_json::json!({
        "apiVersion": RelayPolicyResource::api_version(&()),
        "kind": RelayPolicyResource::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(OPERATOR).force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("apply the status")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next watcher event that `wanted` accepts, within [`WITHIN`].
async fn next_matching<S, K>(
    events: &mut S,
    emulator: &KubeEmulator,
    what: &str,
    wanted: impl Fn(&watcher::Event<K>) -> bool,
) -> watcher::Event<K>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    let found = tokio::time::timeout(WITHIN, async {
        loop {
            match events.try_next().await {
                Ok(Some(event)) if wanted(&event) => return event,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watcher ended"),
                Err(e) => panic!("watcher error: {e}\n{}", emulator.log()),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no {what} within {WITHIN:?}; emulator log:\n{}",
            emulator.log()
        )
    })
}

#[tokio::test]
async fn relay_policy_is_created_read_and_listed() {
    let emulator = KubeEmulator::start().await;
    let client = emulator.client().await;
    assert_eq!(client.default_namespace(), NAMESPACE, "from the kubeconfig");
    let api: Api<RelayPolicyResource> = Api::default_namespaced(client);

    let mut policy = RelayPolicyResource::new("first", spec("partner.test"));
    policy.status = Some(RelayPolicyStatus {
        users: 7,
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &policy).await.unwrap();
    assert_eq!(created.namespace().as_deref(), Some(NAMESPACE));
    assert_eq!(created.meta().generation, Some(1));
    assert!(created.uid().is_some() && created.resource_version().is_some());
    assert!(created.meta().creation_timestamp.is_some());
    assert_eq!(created.status, None, "a create cannot set the status");

    let conflict = api_error(api.create(&PostParams::default(), &policy).await);
    assert_eq!(
        (conflict.code, conflict.reason.as_str()),
        (409, "AlreadyExists")
    );

    emulator
        .apply_policy(&policy_yaml("second", "other.test"))
        .await;
    let read = api.get("first").await.unwrap();
    assert_eq!(read.spec, spec("partner.test"));
    assert!(api.get_opt("missing").await.unwrap().is_none());

    let list = api.list(&ListParams::default()).await.unwrap();
    let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
    assert!(list.metadata.resource_version.is_some());
    let all: Api<RelayPolicyResource> = Api::all(emulator.client().await);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let other: Api<RelayPolicyResource> = Api::namespaced(emulator.client().await, "other");
    assert!(
        other
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let by_name = ListParams::default().fields("metadata.name=second");
    assert_eq!(api.list(&by_name).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn status_is_server_side_applied_on_the_status_subresource() {
    let emulator = KubeEmulator::start().await;
    let api = policies(&emulator).await;
    emulator
        .apply_policy(&policy_yaml("policy", "partner.test"))
        .await;

    let status = RelayPolicyStatus {
        observed_generation: Some(1),
        users: 2,
        domains: 1,
        revision: Some("r1".into()),
        ..Default::default()
    };
    let written = apply_status(&api, "policy", &status).await;
    let read = api.get_status("policy").await.unwrap();
    assert_eq!(read.status.as_ref(), Some(&status));
    assert_eq!(
        read.spec,
        spec("partner.test"),
        "the status write left the spec"
    );
    assert_eq!(
        read.meta().generation,
        Some(1),
        "a status write is no new generation"
    );
    let managers = read.meta().managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(OPERATOR)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref() == Some("status")),
        "{managers:?}"
    );

    // The same status again changes nothing: no new resourceVersion, so no watch event
    // that would wake the operator to write it once more.
    let again = apply_status(&api, "policy", &status).await;
    assert_eq!(again.resource_version(), written.resource_version());

    // A new spec is a new generation and keeps the status; the object's own endpoint
    // cannot change the status.
    emulator
        .apply_policy(&policy_yaml("policy", "changed.test"))
        .await;
    let merge = serde_json::json!({ "status": { "users": 99 } });
    let patched = api
        .patch("policy", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap();
    assert_eq!(patched.meta().generation, Some(2));
    assert_eq!(patched.spec, spec("changed.test"));
    assert_eq!(patched.status.as_ref(), Some(&status));

    // Apply needs a field manager, as on a real server.
    let bare = serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "RelayPolicy", "status": { "users": 1 }
    });
    let unnamed = api_error(
        api.patch_status("policy", &PatchParams::default(), &Patch::Apply(&bare))
            .await,
    );
    assert_eq!(unnamed.code, 422);
    // ... and the status subresource of a missing object is missing too.
    let missing = api_error(
        api.patch_status(
            "missing",
            &PatchParams::apply(OPERATOR).force(),
            &Patch::Apply(&bare),
        )
        .await,
    );
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn watcher_sees_create_update_and_delete() {
    let emulator = KubeEmulator::start().await;
    let api = policies(&emulator).await;
    emulator
        .apply_policy(&policy_yaml("before", "before.test"))
        .await;
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();

    let listed = next_matching(
        &mut events,
        &emulator,
        "initial list",
        |e| matches!(e, watcher::Event::InitApply(p) if p.name_any() == "before"),
    )
    .await;
    drop(listed);
    next_matching(&mut events, &emulator, "end of the initial list", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;

    api.create(
        &PostParams::default(),
        &RelayPolicyResource::new("policy", spec("partner.test")),
    )
    .await
    .unwrap();
    next_matching(
        &mut events,
        &emulator,
        "the new policy",
        |e| matches!(e, watcher::Event::Apply(p) if p.name_any() == "policy"),
    )
    .await;

    emulator
        .apply_policy(&policy_yaml("policy", "changed.test"))
        .await;
    next_matching(
        &mut events,
        &emulator,
        "the changed spec",
        |e| matches!(e, watcher::Event::Apply(p) if p.spec == spec("changed.test")),
    )
    .await;

    apply_status(
        &api,
        "policy",
        &RelayPolicyStatus {
            users: 3,
            ..Default::default()
        },
    )
    .await;
    next_matching(&mut events, &emulator, "the status", |e| {
        matches!(e, watcher::Event::Apply(p) if p.status.as_ref().is_some_and(|s| s.users == 3))
    })
    .await;

    emulator.delete_policy("policy").await;
    next_matching(
        &mut events,
        &emulator,
        "the deletion",
        |e| matches!(e, watcher::Event::Delete(p) if p.name_any() == "policy"),
    )
    .await;
}

#[tokio::test]
async fn a_watch_resumes_from_its_resource_version_and_times_out() {
    let emulator = KubeEmulator::start().await;
    let api = policies(&emulator).await;
    emulator
        .apply_policy(&policy_yaml("policy", "a.test"))
        .await;
    let since = api.list(&ListParams::default()).await.unwrap();
    let since = since
        .metadata
        .resource_version
        .expect("list resourceVersion");

    // Written while nobody watches: a watch from `since` replays exactly these.
    emulator
        .apply_policy(&policy_yaml("policy", "b.test"))
        .await;
    emulator.apply_policy(&policy_yaml("other", "c.test")).await;
    emulator.delete_policy("policy").await;

    let params = WatchParams::default().timeout(1);
    let stream = api.watch(&params, &since).await.unwrap();
    let events: Vec<_> = tokio::time::timeout(WITHIN, stream.try_collect::<Vec<_>>())
        .await
        .expect("the watch ends after its timeoutSeconds")
        .unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(p) => ("ADDED".into(), p.name_any()),
            WatchEvent::Modified(p) => ("MODIFIED".into(), p.name_any()),
            WatchEvent::Deleted(p) => ("DELETED".into(), p.name_any()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected = [
        ("MODIFIED", "policy"),
        ("ADDED", "other"),
        ("DELETED", "policy"),
    ];
    assert_eq!(
        seen,
        expected.map(|(t, n)| (t.to_string(), n.to_string())),
        "{}",
        emulator.log()
    );
}

#[tokio::test]
async fn secrets_are_created_read_updated_and_deleted() {
    let emulator = KubeEmulator::start().await;
    let api: Api<Secret> = Api::default_namespaced(emulator.client().await);

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("smarthost".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), "s3cret".into())])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();
    let read = api.get("smarthost").await.unwrap();
    let data = read.data.clone().unwrap_or_default();
    assert_eq!(data.get("password"), Some(&ByteString(b"s3cret".to_vec())));
    assert_eq!(read.string_data, None, "stringData is folded into data");

    let mut replaced = read.clone();
    replaced.data = Some(BTreeMap::from([(
        "password".into(),
        ByteString(b"new".to_vec()),
    )]));
    let replaced = api
        .replace("smarthost", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), read.resource_version());

    emulator
        .put_secret("smarthost", &[("password", b"third"), ("user", b"relay")])
        .await;
    let data = api.get("smarthost").await.unwrap().data.unwrap_or_default();
    assert_eq!(data.get("password"), Some(&ByteString(b"third".to_vec())));
    assert_eq!(data.get("user"), Some(&ByteString(b"relay".to_vec())));

    emulator.delete_secret("smarthost").await;
    assert_eq!(api.get_opt("smarthost").await.unwrap(), None);
}

#[tokio::test]
async fn leases_are_replaced_with_optimistic_concurrency() {
    let emulator = KubeEmulator::start().await;
    let api: Api<Lease> = Api::default_namespaced(emulator.client().await);
    assert_eq!(api.get_opt("sluice-operator").await.unwrap(), None);

    let lease = |holder: &str| Lease {
        metadata: ObjectMeta {
            name: Some("sluice-operator".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    api.create(&PostParams::default(), &lease("a"))
        .await
        .unwrap();
    let taken = api_error(api.create(&PostParams::default(), &lease("b")).await);
    assert_eq!(taken.reason, "AlreadyExists");

    let current = api.get("sluice-operator").await.unwrap();
    let mut renewed = lease("a");
    renewed.metadata.resource_version = current.resource_version();
    let renewed = api
        .replace("sluice-operator", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(renewed.resource_version(), current.resource_version());

    // A candidate that read the lease before the renewal loses the race.
    let mut stale = lease("b");
    stale.metadata.resource_version = current.resource_version();
    let lost = api_error(
        api.replace("sluice-operator", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    let holder = api.get("sluice-operator").await.unwrap().spec.unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some("a"));
}

#[tokio::test]
async fn recorder_publishes_events_k8s_io_v1() {
    let emulator = KubeEmulator::start().await;
    let client = emulator.client().await;
    let policy = emulator
        .apply_policy(&policy_yaml("policy", "partner.test"))
        .await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: OPERATOR.into(),
            instance: Some("sluice-operator-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "SecretMissing".into(),
        note: Some("Secret smarthost not found".into()),
        action: "Compile".into(),
        secondary: None,
    };
    let reference = policy.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    // The same event again is a series on the first one (a merge patch).
    recorder.publish(&event, &reference).await.unwrap();

    let events: Api<K8sEvent> = Api::default_namespaced(client);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let published = &listed[0];
    assert_eq!(published.reason.as_deref(), Some("SecretMissing"));
    assert_eq!(published.type_.as_deref(), Some("Warning"));
    assert_eq!(published.reporting_controller.as_deref(), Some(OPERATOR));
    let regarding = published.regarding.as_ref().unwrap();
    assert_eq!(regarding.kind.as_deref(), Some("RelayPolicy"));
    assert_eq!(regarding.name.as_deref(), Some("policy"));
    assert_eq!(published.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn finalizer_holds_a_deletion_until_it_is_removed() {
    const FINALIZER: &str = "sluice.dev/snapshot";
    let emulator = KubeEmulator::start().await;
    let api = policies(&emulator).await;
    emulator
        .apply_policy(&policy_yaml("policy", "partner.test"))
        .await;
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    next_matching(&mut events, &emulator, "end of the initial list", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;

    // kube-rs' finalizer(): JSON patches with `test` operations, as the operator's
    // reconcile will send them.
    let reconcile = async |policy: RelayPolicyResource| {
        finalizer(&api, FINALIZER, Arc::new(policy), async |event| {
            Ok::<_, std::io::Error>(match event {
                Finalizer::Apply(_) | Finalizer::Cleanup(_) => Action::await_change(),
            })
        })
        .await
        .expect("finalizer")
    };
    reconcile(api.get("policy").await.unwrap()).await;
    let held = api.get("policy").await.unwrap();
    assert_eq!(held.finalizers(), [FINALIZER]);

    emulator.delete_policy("policy").await;
    let deleting = api.get("policy").await.unwrap();
    assert!(deleting.meta().deletion_timestamp.is_some());

    reconcile(deleting).await;
    next_matching(
        &mut events,
        &emulator,
        "the deletion",
        |e| matches!(e, watcher::Event::Delete(p) if p.name_any() == "policy"),
    )
    .await;
    assert!(api.get_opt("policy").await.unwrap().is_none());
    let gone = api_error(api.delete("policy", &DeleteParams::default()).await);
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn discovery_serves_the_relaypolicy_resource() {
    let emulator = KubeEmulator::start().await;
    let client = emulator.client().await;
    let resources = client
        .list_api_group_resources("sluice.dev/v1alpha1")
        .await
        .unwrap();
    let mut names: Vec<&str> = resources
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["relaypolicies", "relaypolicies/status"]);
    assert!(resources.resources.iter().all(|r| r.namespaced));
}
