//! `sluice operator` end to end, with the real binaries: RelayPolicies and Secrets in an
//! emulated Kubernetes API (kmock, `tests/kube_emulator.py`), a real nats-server, and a
//! real `sluice ingress` and `sluice worker` following the snapshot the operator writes.
//! A policy applied through the API decides SMTP sessions and routes mail to the sink; a
//! changed policy refuses the same client within 2 s; a broken policy leaves the previous
//! rules in force while its status says why; nothing from a Secret is in NATS in clear;
//! of two operator replicas only the leader writes, and the other takes over.

mod common;

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::hook::Hook;
use common::kube::KubeEmulator;
use common::mail::{Outcome, Session};
use common::nats::NatsServer;
use common::roles::{READY_WITHIN, RoleProcess, metric_sum};
use common::sink::{AcceptAll, Sink};
use kube::api::Api;
use sluice::policy::bucket::{PolicyBucket, WriterKind};
use sluice::policy::model::RelayPolicyResource;
use tokio::time::Instant;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SECRETS: [&str; 4] = [
    "app-password-1",
    "smarthost-user-2",
    "smarthost-pw-3",
    "webhook-key-4",
];

/// A policy trusting `trusted`, routing `sink.test` to the sink, with a local domain
/// delivered to a webhook on `hook_port` (signed with a key from a Secret), a user and a
/// smarthost with credentials from Secrets.
fn policy(trusted: &str, sink_port: u16, hook_port: u16) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: corp, namespace: mail }}
spec:
  trustedNetworks: [{trusted}]
  localDomains:
    - domain: hook.test
      delivery:
        webhook:
          url: "http://127.0.0.1:{hook_port}/inbound"
          signingSecretRef: {{ name: hook, key: signing }}
  users:
    - name: app
      passwordSecretRef: {{ name: relay-users, key: app }}
      allowedSenders: ["@corp.test"]
  routes:
    - domains: ["sink.test"]
      smarthost: {{ host: 127.0.0.1, port: {sink_port}, tls: opportunistic }}
    - domains: ["partner.test"]
      smarthost:
        host: 127.0.0.1
        port: 9
        credentialsSecretRef: {{ name: smarthost, usernameKey: username, passwordKey: password }}
"#
    )
}

async fn operator(
    name: &str,
    nats: &NatsServer,
    kube: &KubeEmulator,
    key: &Path,
    extra: &[&str],
) -> RoleProcess {
    let mut args = vec!["--namespace", "mail", "--hostname", name];
    let key = key.to_str().unwrap();
    args.extend(["--secrets-key-file", key]);
    args.extend_from_slice(extra);
    let kubeconfig = kube.kubeconfig_path();
    let env = [
        ("KUBECONFIG", kubeconfig.as_os_str()),
        ("POD_NAME", OsStr::new(name)),
    ];
    RoleProcess::start_with_env(name, "operator", &nats.url(), &args, &env).await
}

/// The RCPT reply for a foreign recipient in a new session from [`CLIENT`].
async fn relay_attempt(ingress: &RoleProcess) -> String {
    let mut session = Session::open(ingress.smtp(), Some(CLIENT))
        .await
        .unwrap_or_else(|o: Outcome| ingress.fail(&format!("session: {o:?}")));
    session
        .command("MAIL FROM:<a@client.test>", "250")
        .await
        .expect("MAIL");
    let reply = match session
        .command("RCPT TO:<someone@elsewhere.test>", "")
        .await
    {
        Ok(reply) => reply,
        Err(o) => panic!("RCPT: {o:?}"),
    };
    session.quit().await;
    reply
}

/// Sends one message from [`CLIENT`] in a session of its own; it must be accepted.
async fn send_one(ingress: &RoleProcess, to: &str, subject: &str) {
    let mut session = Session::open(ingress.smtp(), Some(CLIENT))
        .await
        .unwrap_or_else(|o: Outcome| ingress.fail(&format!("session: {o:?}")));
    let body = format!("Subject: {subject}\r\n\r\nhello\r\n");
    let sent = session.send("a@client.test", to, body.as_bytes()).await;
    assert_eq!(sent, Outcome::Accepted, "to {to}");
    session.quit().await;
}

/// The Ready condition of mail/corp as (status, reason, message), once it exists.
async fn ready(
    api: &Api<RelayPolicyResource>,
    generation_at_least: i64,
) -> Option<(String, String, String)> {
    let p = api.get("corp").await.ok()?;
    let status = p.status?;
    if status.observed_generation? < generation_at_least {
        return None;
    }
    let c = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn wait_ready(
    api: &Api<RelayPolicyResource>,
    generation: i64,
    within: Duration,
) -> (String, String, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = ready(api, generation).await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no status for generation {generation} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("secrets-key");
    std::fs::write(&key, "k3y-material-for-the-end-to-end-test-0123456789\n").unwrap();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_policies_from_the_api_decide_smtp_and_route_mail() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let kube = KubeEmulator::start().await;
    let sink = Sink::start(AcceptAll).await;
    let hook = Hook::start(200).await;
    let policy = |trusted: &str| policy(trusted, sink.addr.port(), hook.port);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    kube.put_secret("relay-users", &[("app", SECRETS[0].as_bytes())])
        .await;
    kube.put_secret("hook", &[("signing", SECRETS[3].as_bytes())])
        .await;
    kube.put_secret(
        "smarthost",
        &[
            ("username", SECRETS[1].as_bytes()),
            ("password", SECRETS[2].as_bytes()),
        ],
    )
    .await;
    let applied = kube.apply_policy(&policy("127.0.0.1/32")).await;
    let mut op = operator("operator-0", &nats, &kube, &key, &["--no-leader-election"]).await;
    op.wait_ready(READY_WITHIN).await;
    // Ready only once it has provisioned the queue (src/queue/jetstream/provision.rs):
    // the streams, the workers' consumer and the bodies bucket exist before any ingress
    // or worker has run.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for stream in ["SLUICE_MESSAGES", "SLUICE_EVENTS", "OBJ_sluice-bodies"] {
        let found = js.get_stream(stream).await;
        assert!(found.is_ok(), "{stream} not provisioned: {}", op.log_tail());
    }
    let messages = js.get_stream("SLUICE_MESSAGES").await.unwrap();
    assert!(messages.consumer_info("sluice-workers").await.is_ok());
    let api: Api<RelayPolicyResource> = Api::namespaced(kube.client().await, "mail");
    let generation = applied.metadata.generation.unwrap_or(1);
    let (status, reason, _) = wait_ready(&api, generation, Duration::from_secs(10)).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Accepted"),
        "{}",
        op.log_tail()
    );
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &[]).await;
    let key_arg = key.to_str().unwrap();
    let mut worker =
        RoleProcess::worker("worker", &nats.url(), &["--secrets-key-file", key_arg]).await;
    ingress.wait_ready(READY_WITHIN).await;
    worker.wait_ready(READY_WITHIN).await;

    // Trusted by the policy: accepted, and delivered through its route.
    send_one(&ingress, "b@sink.test", "via the operator").await;
    let delivered = sink.wait_for(1, Duration::from_secs(10)).await;
    // The local domain's webhook: the worker opened the key the operator sealed, and
    // the signature verifies with the key from the Secret.
    send_one(&ingress, "in@hook.test", "to the hook").await;
    let posted = hook.wait_for(1, Duration::from_secs(10)).await;
    let request = posted
        .first()
        .unwrap_or_else(|| worker.fail("no POST to the webhook"));
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(request.header("x-sluice-envelope").unwrap())
        .unwrap();
    let signature = request.header("x-sluice-signature").expect("signed");
    let t: u64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
    let expected =
        sluice::delivery::local::sign(SECRETS[3].as_bytes(), t, &envelope, &request.body);
    assert_eq!(signature, expected);
    assert!(
        delivered[0].rcpt_to[0].contains("b@sink.test"),
        "{:?}",
        delivered[0].rcpt_to
    );

    // The trusted network removed: the same client is refused within 2 s.
    let applied = kube.apply_policy(&policy("")).await;
    let changed = Instant::now();
    let refused = loop {
        let reply = relay_attempt(&ingress).await;
        if reply.starts_with("554 5.7.1") {
            break changed.elapsed();
        }
        assert!(reply.starts_with("250"), "{reply}");
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "still relaying after 2 s:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("apply to a refused RCPT: {refused:?}");
    let (status, ..) = wait_ready(
        &api,
        applied.metadata.generation.unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, "True");
    let revision_before = ingress.metrics().await.unwrap();

    // A broken policy: refused in its status, and the ingress keeps the previous rules
    // (which would relay for the client if the broken one had been applied).
    let broken = kube
        .apply_policy(&policy("\"127.0.0.1/32\", \"10.0.0.0/33\""))
        .await;
    let (status, reason, message) = wait_ready(
        &api,
        broken.metadata.generation.unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert!(
        message.contains("spec.trustedNetworks[1]") && message.contains("10.0.0.0/33"),
        "{message}"
    );
    assert!(relay_attempt(&ingress).await.starts_with("554 5.7.1"));
    let revision = |page: &str| {
        page.lines()
            .find(|l| l.starts_with("sluice_policy_revision_info"))
            .map(str::to_string)
    };
    assert_eq!(
        revision(&ingress.metrics().await.unwrap()),
        revision(&revision_before)
    );

    // What NATS holds: written by the operator, with no Secret value in clear, in any
    // revision of the key.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = PolicyBucket::open(&js, 1).await.unwrap();
    let in_force = bucket.in_force().await.unwrap().unwrap();
    assert_eq!(in_force.writer.unwrap().kind, WriterKind::Operator);
    let store = js.get_key_value("sluice-policy").await.unwrap();
    let mut history = store.history("snapshot").await.unwrap();
    let mut values = 0;
    use futures_util::StreamExt;
    while let Some(entry) = history.next().await {
        let entry = entry.unwrap();
        let text = String::from_utf8_lossy(&entry.value);
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in clear in NATS");
        }
        assert!(
            text.contains("ciphertext"),
            "the smarthost credentials are sealed"
        );
        values += 1;
    }
    assert!(values >= 2, "{values}");
    let events = kube.log();
    assert!(events.contains("events"), "no Event recorded:\n{events}");
    let page = op.metrics().await.unwrap();
    assert_eq!(metric_sum(&page, "sluice_operator_leader"), Some(1.0));
    assert!(metric_sum(&page, "sluice_operator_snapshot_writes_total").unwrap() >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_operators_only_the_leader_writes_and_the_other_takes_over() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let kube = KubeEmulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    kube.put_secret("relay-users", &[("app", SECRETS[0].as_bytes())])
        .await;
    kube.put_secret("smarthost", &[("username", b"u"), ("password", b"p")])
        .await;
    kube.put_secret("hook", &[("signing", b"k")]).await;
    kube.apply_policy(&policy("127.0.0.1/32", 25, 9)).await;
    let mut a = operator("operator-a", &nats, &kube, &key, &[]).await;
    a.wait_ready(READY_WITHIN).await;
    let leads = |page: Option<String>| page.and_then(|p| metric_sum(&p, "sluice_operator_leader"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while leads(a.metrics().await) != Some(1.0) {
        assert!(Instant::now() < deadline, "a never led:\n{}", a.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = operator("operator-b", &nats, &kube, &key, &[]).await;
    b.wait_ready(READY_WITHIN).await;
    let api: Api<RelayPolicyResource> = Api::namespaced(kube.client().await, "mail");
    let changed = kube.apply_policy(&policy("\"127.0.0.2/32\"", 25, 9)).await;
    let (status, ..) = wait_ready(
        &api,
        changed.metadata.generation.unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, "True");
    let page_b = b.metrics().await.unwrap();
    assert_eq!(
        metric_sum(&page_b, "sluice_operator_leader"),
        Some(0.0),
        "b is ready but follows"
    );
    assert_eq!(
        metric_sum(&page_b, "sluice_operator_snapshot_writes_total"),
        Some(0.0)
    );
    assert_eq!(
        metric_sum(&page_b, "sluice_operator_status_writes_total"),
        Some(0.0)
    );

    // The leader stops (a rollout): it releases the Lease, and b leads and writes.
    a.terminate();
    assert!(
        a.wait_exit(Duration::from_secs(15))
            .await
            .is_some_and(|s| s.success()),
        "{}",
        a.log_tail()
    );
    let changed = kube.apply_policy(&policy("\"127.0.0.3/32\"", 25, 9)).await;
    let (status, ..) = wait_ready(
        &api,
        changed.metadata.generation.unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, "True");
    let page_b = b.metrics().await.unwrap();
    assert_eq!(metric_sum(&page_b, "sluice_operator_leader"), Some(1.0));
    assert!(
        metric_sum(&page_b, "sluice_operator_snapshot_writes_total").unwrap() >= 1.0,
        "{}",
        b.log_tail()
    );
}
