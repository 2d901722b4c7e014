//! The reconciler against a mock API server that checks every request it gets (in the
//! shape of kube-rs/controller-rs `fixtures.rs`), an in-memory snapshot sink, and stores
//! fed as the watches would feed them.

use crate::telemetry::metrics::ReconcileFailure;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::FutureExt;
use http::{Request, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::Value;
use tower_test::mock::{self, Handle};

use super::*;
use crate::operator::changes::Tracker;
use crate::operator::secrets::SecretStores;
use crate::policy::PolicySnapshot;
use crate::policy::model::{RelayPolicySpec, RelayPolicyStatus};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// Snapshots written, newest last; writes fail while `down`.
#[derive(Default)]
pub struct MemorySink(
    pub Mutex<Vec<PolicySnapshot>>,
    std::sync::atomic::AtomicBool,
);

impl MemorySink {
    pub fn writes(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn last(&self) -> PolicySnapshot {
        self.0.lock().unwrap().last().cloned().expect("a snapshot")
    }
}

#[async_trait]
impl SnapshotSink for MemorySink {
    async fn in_force(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .last()
            .map(|s| s.revision().to_string()))
    }

    async fn write(&self, snapshot: &PolicySnapshot) -> anyhow::Result<()> {
        anyhow::ensure!(!self.1.load(Ordering::Relaxed), "NATS is down");
        self.0.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
}

/// What the mock API server expects next, and what to check in it.
enum Expect {
    Status(Box<dyn FnOnce(&RelayPolicyStatus) + Send>),
    Event(Box<dyn FnOnce(&Value) + Send>),
}

fn status(check: impl FnOnce(&RelayPolicyStatus) + Send + 'static) -> Expect {
    Expect::Status(Box::new(check))
}

fn event(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    Expect::Event(Box::new(check))
}

struct Fixture {
    ctx: Arc<Context>,
    handle: Option<ApiHandle>,
    sink: Arc<MemorySink>,
    policies: Writer<RelayPolicyResource>,
    policy_tracker: Tracker,
    secrets: Writer<Secret>,
    secret_tracker: Tracker,
}

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";

impl Fixture {
    fn new(leader: bool) -> Fixture {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let (policy_store, policies) = reflector::store();
        let (secret_store, secrets) = reflector::store();
        let changes = Changes::default();
        let sink = Arc::new(MemorySink::default());
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some("test-0".into()),
            },
        );
        let scope = Scope {
            policy_namespaces: ["mail".to_string(), "team".to_string()].into(),
            privileged_namespaces: ["mail".to_string()].into(),
        };
        let ctx = Context::new(
            client,
            policy_store,
            SecretStores(BTreeMap::from([
                ("mail".to_string(), secret_store.clone()),
                ("team".to_string(), secret_store),
            ])),
            scope,
            Arc::new(SecretsKey::from_material(KEY)),
            sink.clone(),
            Leadership::fixed(leader),
            recorder,
            Arc::new(Metrics::operator()),
            changes.clone(),
        );
        Fixture {
            ctx: Arc::new(ctx),
            handle: Some(handle),
            sink,
            policies,
            policy_tracker: Tracker::new(changes.clone()),
            secrets,
            secret_tracker: Tracker::new(changes),
        }
    }

    /// A policy as the watch would deliver it; `age` orders conflicts (older wins).
    fn apply(&mut self, id: &str, spec: &str, age: i64) -> Arc<RelayPolicyResource> {
        let (ns, name) = id.split_once('/').unwrap();
        let spec: RelayPolicySpec = serde_saphyr::from_str(spec).unwrap();
        let mut p = RelayPolicyResource::new(name, spec);
        p.metadata.namespace = Some(ns.into());
        p.metadata.generation = Some(1);
        p.metadata.uid = Some(format!("uid-{id}"));
        let created = chrono::Utc::now() - chrono::Duration::seconds(age);
        p.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created.timestamp()).unwrap(),
        ));
        if let Some(old) = self.get(id) {
            p.status = old.status.clone();
            p.metadata.generation = old.metadata.generation.map(|g| g + 1);
            p.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
        }
        self.feed(Event::Apply(p));
        self.get(id).unwrap()
    }

    fn feed(&mut self, event: Event<RelayPolicyResource>) {
        self.policy_tracker.observe(&event);
        self.policies.apply_watcher_event(&event);
    }

    fn delete(&mut self, id: &str) {
        let p = self.get(id).unwrap();
        self.feed(Event::Delete((*p).clone()));
    }

    fn get(&self, id: &str) -> Option<Arc<RelayPolicyResource>> {
        let (ns, name) = id.split_once('/').unwrap();
        self.ctx
            .policies
            .get(&reflector::ObjectRef::new(name).within(ns))
    }

    fn secret(&mut self, id: &str, data: &[(&str, &str)]) {
        let (ns, name) = id.split_once('/').unwrap();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let event = Event::Apply(secret);
        self.secret_tracker.observe(&event);
        self.secrets.apply_watcher_event(&event);
    }

    /// Reconciles one policy while the mock API server answers exactly `expected`, in
    /// order; any other request fails the test. A status written is fed back as the
    /// watch would.
    async fn reconcile(&mut self, id: &str, expected: Vec<Expect>) -> Action {
        let policy = self.get(id).unwrap();
        let mut handle = self.handle.take().unwrap();
        let (ns, name) = id.split_once('/').unwrap();
        let status_path =
            format!("/apis/sluice.dev/v1alpha1/namespaces/{ns}/relaypolicies/{name}/status");
        let events_path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
        let server = tokio::spawn(async move {
            let mut written = None;
            for expect in expected {
                let (request, send) = handle.next_request().await.expect("a request");
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap();
                let json: Value = serde_json::from_slice(&body).unwrap();
                let reply = match expect {
                    Expect::Status(check) => {
                        assert_eq!(parts.method, http::Method::PATCH);
                        assert_eq!(parts.uri.path(), status_path);
                        let query = parts.uri.query().unwrap_or_default();
                        assert!(query.contains("fieldManager=sluice-operator"), "{query}");
                        assert!(query.contains("force=true"), "{query}");
                        assert_eq!(
                            parts.headers["content-type"],
                            "application/apply-patch+yaml"
                        );
                        let status: RelayPolicyStatus =
                            serde_json::from_value(json["status"].clone()).unwrap();
                        check(&status);
                        written = Some(status);
                        let mut object = (*policy).clone();
                        object.status = written.clone();
                        serde_json::to_vec(&object).unwrap()
                    }
                    Expect::Event(check) => {
                        // A repeated reason updates the Event's series (PATCH) instead of
                        // creating another one (POST).
                        let method = &parts.method;
                        assert!(
                            *method == http::Method::POST || *method == http::Method::PATCH,
                            "{method}"
                        );
                        assert!(parts.uri.path().starts_with(&events_path), "{}", parts.uri);
                        check(&json);
                        body.to_vec()
                    }
                };
                send.send_response(Response::builder().body(Body::from(reply)).unwrap());
            }
            (handle, written)
        });
        let policy = self.get(id).unwrap();
        let action = reconcile(policy.clone(), self.ctx.clone())
            .await
            .expect("reconcile");
        let (mut handle, written) = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("every expected request came")
            .unwrap();
        if let Some(Ok((extra, _))) = handle
            .next_request()
            .now_or_never()
            .flatten()
            .map(Ok::<_, ()>)
        {
            panic!("unexpected request {} {}", extra.method(), extra.uri());
        }
        self.handle = Some(handle);
        if let Some(status) = written {
            let mut p = (*policy).clone();
            p.status = Some(status);
            self.feed(Event::Apply(p));
        }
        action
    }
}

/// A refusal for `reason`, whose message holds each of `parts`, and its Warning Event.
fn refused(reason: &'static str, parts: &'static [&'static str]) -> Vec<Expect> {
    vec![
        status(move |s| {
            let (ok, got, message) = ready(s);
            assert_eq!((ok, got), ("False", reason));
            for part in parts {
                assert!(message.contains(part), "{message}");
            }
            assert_eq!(s.revision, None, "a refused policy is in no revision");
        }),
        event(move |e| {
            assert_eq!(e["type"], "Warning");
            assert_eq!(e["reason"], reason);
        }),
    ]
}

fn ready(s: &RelayPolicyStatus) -> (&str, &str, &str) {
    let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

const CORP: &str = "
trustedNetworks: ['192.0.2.0/24']
relayDomains: [partner.example]
localDomains: [{domain: corp.example, delivery: {lmtp: {address: 'dovecot:24'}}}]
";

#[tokio::test]
async fn a_valid_policy_is_put_in_force_and_reported_ready_with_an_event() {
    let mut f = Fixture::new(true);
    f.apply("mail/corp", CORP, 10);
    f.reconcile(
        "mail/corp",
        vec![
            status(|s| {
                assert_eq!(ready(s).0, "True");
                assert_eq!(ready(s).1, "Accepted");
                assert_eq!((s.users, s.domains), (0, 2));
                assert_eq!(s.observed_generation, Some(1));
                assert_eq!(s.revision.as_ref().map(String::len), Some(64));
            }),
            event(|e| {
                assert_eq!(e["type"], "Normal");
                assert_eq!(e["reason"], "Accepted");
                assert_eq!(e["regarding"]["name"], "corp");
                assert_eq!(e["reportingController"], "sluice-operator");
            }),
        ],
    )
    .await;
    assert_eq!(f.sink.writes(), 1);
    let snap = f.sink.last();
    assert!(snap.is_relay_domain("partner.example"));
    assert_eq!(
        f.get("mail/corp")
            .unwrap()
            .status
            .as_ref()
            .unwrap()
            .revision
            .as_deref(),
        Some(snap.revision())
    );
    // Nothing changed: no request, no write.
    f.reconcile("mail/corp", vec![]).await;
    assert_eq!(f.sink.writes(), 1);
}

#[tokio::test]
async fn an_invalid_policy_is_refused_with_its_reason_and_the_others_stay() {
    let mut f = Fixture::new(true);
    f.apply("mail/corp", CORP, 20);
    f.apply(
        "mail/typo",
        "trustedNetworks: ['10.0.0.0/8', '10.0.0.0/33']",
        10,
    );
    f.reconcile(
        "mail/typo",
        refused(
            "Invalid",
            &["spec.trustedNetworks[1]", "\"10.0.0.0/33\" is not a CIDR"],
        ),
    )
    .await;
    let snap = f.sink.last();
    assert_eq!(snap.policies(), ["mail/corp"]);
    // With no valid policy left, the last good snapshot stays in force.
    f.delete("mail/corp");
    f.reconcile("mail/typo", vec![]).await;
    assert_eq!(f.sink.writes(), 1);
    assert_eq!(f.sink.last().policies(), ["mail/corp"]);
}

const ALICE: &str = "
users: [{name: alice, passwordSecretRef: {name: relay-users, key: alice}, allowedSenders: ['@corp.example']}]
";

#[tokio::test]
async fn a_missing_secret_is_reported_until_it_is_created() {
    let mut f = Fixture::new(true);
    f.apply("mail/users", ALICE, 10);
    const FIELD: &str = "spec.users[0].passwordSecretRef";
    let not_found = &[FIELD, "Secret mail/relay-users not found"];
    f.reconcile("mail/users", refused("SecretUnavailable", not_found))
        .await;
    assert_eq!(f.sink.writes(), 0, "nothing valid, nothing written");
    f.secret("mail/relay-users", &[("bob", "x")]);
    f.reconcile(
        "mail/users",
        refused(
            "SecretUnavailable",
            &[FIELD, "Secret mail/relay-users has no key \"alice\""],
        ),
    )
    .await;
    f.secret(
        "mail/relay-users",
        &[("bob", "x"), ("alice", "s3cret-alice")],
    );
    f.reconcile(
        "mail/users",
        vec![
            status(|s| assert_eq!(ready(s).0, "True")),
            event(|e| assert_eq!(e["reason"], "Accepted")),
        ],
    )
    .await;
    let snap = f.sink.last();
    assert!(snap.verify_password("alice", "s3cret-alice"));
    assert!(!snap.verify_password("alice", "x"));
    assert_eq!(f.ctx.cache.computed(), 1);
}

#[tokio::test]
async fn a_changed_secret_is_hashed_again_and_an_unrelated_change_is_not() {
    let mut f = Fixture::new(true);
    f.secret("mail/relay-users", &[("alice", "first")]);
    f.apply("mail/users", ALICE, 10);
    f.reconcile(
        "mail/users",
        vec![status(|s| assert_eq!(ready(s).0, "True")), event(|_| {})],
    )
    .await;
    let first = f.sink.last();
    assert_eq!((f.ctx.cache.computed(), f.sink.writes()), (1, 1));
    // Another key of the same Secret: recompiled, not re-hashed, same revision.
    f.secret("mail/relay-users", &[("alice", "first"), ("bob", "other")]);
    f.reconcile("mail/users", vec![]).await;
    assert_eq!((f.ctx.cache.computed(), f.sink.writes()), (1, 1));
    // alice's password: a new hash, a new snapshot, and the status follows it.
    f.secret("mail/relay-users", &[("alice", "second"), ("bob", "other")]);
    let written = f.ctx.clone();
    f.reconcile(
        "mail/users",
        vec![status(move |s| {
            let _ = &written;
            assert_eq!(ready(s).0, "True");
        })],
    )
    .await;
    assert_eq!((f.ctx.cache.computed(), f.sink.writes()), (2, 2));
    let second = f.sink.last();
    assert_ne!(second.revision(), first.revision());
    assert!(second.verify_password("alice", "second"));
    assert!(!second.verify_password("alice", "first"));
    // The same password after a restart hashes to the same value: same revision.
    let mut restarted = Fixture::new(true);
    restarted.secret("mail/relay-users", &[("alice", "second")]);
    restarted.apply("mail/users", ALICE, 10);
    restarted
        .reconcile("mail/users", vec![status(|_| {}), event(|_| {})])
        .await;
    assert_eq!(restarted.sink.last().revision(), second.revision());
}

#[tokio::test]
async fn conflicting_policies_are_reported_on_both_and_the_older_wins() {
    let mut f = Fixture::new(true);
    f.apply("mail/a", "relayDomains: [shared.example]", 20);
    f.apply(
        "mail/b",
        "localDomains: [{domain: shared.example, delivery: {maildir: {path: /m}}}]",
        10,
    );
    f.reconcile(
        "mail/b",
        refused(
            "Conflict",
            &[
                "shared.example is both a relay domain and a local domain",
                "RelayPolicy mail/a",
                "RelayPolicy mail/b",
            ],
        ),
    )
    .await;
    f.reconcile(
        "mail/a",
        vec![
            status(|s| {
                assert_eq!(ready(s).0, "True");
                let c = s.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
                assert_eq!(c.status, "True");
                assert!(c.message.contains("RelayPolicy mail/b"), "{}", c.message);
            }),
            event(|e| assert_eq!(e["reason"], "Accepted")),
        ],
    )
    .await;
    assert_eq!(f.sink.last().policies(), ["mail/a"]);
}

#[tokio::test]
async fn a_deleted_policy_leaves_the_snapshot_at_the_next_reconcile() {
    let mut f = Fixture::new(true);
    f.apply("mail/a", "relayDomains: [a.example]", 20);
    f.apply("mail/b", "relayDomains: [b.example]", 10);
    for id in ["mail/a", "mail/b"] {
        f.reconcile(id, vec![status(|_| {}), event(|_| {})]).await;
    }
    assert!(f.sink.last().is_relay_domain("b.example"));
    f.delete("mail/b");
    f.reconcile("mail/a", vec![status(|s| assert_eq!(ready(s).0, "True"))])
        .await;
    let snap = f.sink.last();
    assert!(!snap.is_relay_domain("b.example"));
    assert!(snap.is_relay_domain("a.example"));
    assert_eq!(
        f.get("mail/a")
            .unwrap()
            .status
            .as_ref()
            .unwrap()
            .revision
            .as_deref(),
        Some(snap.revision()),
        "the status names the new revision"
    );
}

#[tokio::test]
async fn a_failed_snapshot_write_writes_no_status_and_is_tried_again() {
    let mut f = Fixture::new(true);
    f.apply("mail/corp", CORP, 10);
    f.sink.1.store(true, Ordering::Relaxed);
    let policy = f.get("mail/corp").unwrap();
    // No mock server answers: a request would hang past the timeout.
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        reconcile(policy.clone(), f.ctx.clone()),
    )
    .await
    .expect("no API request while NATS is down");
    let error = result.unwrap_err();
    assert_eq!(error.metric_label(), ReconcileFailure::WriteSnapshot);
    let action = error_policy(policy, &error, f.ctx.clone());
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(2)));
    let m = f.ctx.metrics.operator.as_ref().unwrap();
    assert_eq!(m.failures.get(ReconcileFailure::WriteSnapshot), 1);
    // Right after a failure, other reconciles do not try NATS again: they fail at once.
    f.sink.1.store(false, Ordering::Relaxed);
    let error = reconcile(f.get("mail/corp").unwrap(), f.ctx.clone())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("failed 1 times"), "{error}");
    assert_eq!(f.sink.writes(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    f.reconcile(
        "mail/corp",
        vec![status(|s| assert_eq!(ready(s).0, "True")), event(|_| {})],
    )
    .await;
    assert_eq!(f.sink.writes(), 1);
}

#[tokio::test]
async fn a_follower_writes_nothing() {
    let mut f = Fixture::new(false);
    f.apply("mail/corp", CORP, 10);
    let action = f.reconcile("mail/corp", vec![]).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(f.sink.writes(), 0);
}

#[tokio::test]
async fn namespaces_outside_the_allow_list_and_delegated_fields_are_refused() {
    let mut f = Fixture::new(true);
    f.apply("mail/corp", CORP, 30);
    f.apply("elsewhere/open", "mode: open", 20);
    f.apply("team/wide", "trustedNetworks: ['0.0.0.0/0']", 10);
    f.reconcile(
        "elsewhere/open",
        refused("NamespaceNotAllowed", &["mail, team"]),
    )
    .await;
    f.reconcile(
        "team/wide",
        refused(
            "NotPermitted",
            &["spec.trustedNetworks may be set only in the privileged namespaces (mail"],
        ),
    )
    .await;
    let snap = f.sink.last();
    assert_eq!(snap.policies(), ["mail/corp"]);
    assert_eq!(snap.mode(), crate::policy::model::Mode::Authenticated);
}

#[tokio::test]
async fn smarthost_credentials_and_webhook_keys_are_sealed_never_in_clear() {
    let mut f = Fixture::new(true);
    f.secret(
        "mail/provider",
        &[("username", "relay-user-7"), ("password", "smarthost-pw-9")],
    );
    f.secret("mail/hook", &[("key", "webhook-key-3")]);
    f.secret("mail/relay-users", &[("alice", "client-pw-5")]);
    let spec = "
routes: [{domains: ['*'], smarthost: {host: smtp.provider.example, port: 587, credentialsSecretRef: {name: provider, usernameKey: username, passwordKey: password}}}]
localDomains: [{domain: t.example, delivery: {webhook: {url: 'https://h.example/in', signingSecretRef: {name: hook, key: key}}}}]
users: [{name: alice, passwordSecretRef: {name: relay-users, key: alice}}]
";
    f.apply("mail/corp", spec, 10);
    f.reconcile(
        "mail/corp",
        vec![status(|s| assert_eq!(ready(s).0, "True")), event(|_| {})],
    )
    .await;
    let snap = f.sink.last();
    let bytes = serde_json::to_vec(&snap).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        "relay-user-7",
        "smarthost-pw-9",
        "webhook-key-3",
        "client-pw-5",
    ] {
        assert!(!text.contains(secret), "{secret} in clear in the snapshot");
    }
    let key = SecretsKey::from_material(KEY);
    let route = snap.route_for("example.org").unwrap();
    let sealed = route.smarthost.credentials.as_ref().unwrap();
    let ctx = crate::policy::sealed::context::smarthost("smtp.provider.example", 587, "password");
    assert_eq!(key.open(&ctx, &sealed.password).unwrap(), b"smarthost-pw-9");
}
