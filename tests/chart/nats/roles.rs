//! The real roles on the chart's own three-server cluster, as the chart wires them: the
//! routes refuse a server without the route password; the operator's user pushes the
//! policy (and later one too large for a message, through the policy object store); a
//! worker started before the queue is provisioned waits unready (its user may not
//! create streams) until `sluice nats provision` runs as the operator's user (the
//! operator's own provisioning function); `sluice ingress` and `sluice worker` log in as
//! their own users with SLUICE_NATS_REPLICAS=3 and the chart's inbox prefixes; a message
//! sent with swaks is delivered and settled, others are deferred, deleted and retried
//! with `sluice queue`, one is taken again after its worker died mid-delivery; and the
//! servers log not one permission violation meanwhile beyond those provoked: the
//! permissions suffice. Then what must be refused is, and the servers say it was their
//! permissions: the ingress user cannot read other users' replies (`_INBOX.>`,
//! `_INBOX_worker.>`); the ingress and worker users cannot write the policy, nor update
//! the queue's streams (a republish into the policy key) or create streams; the worker
//! cannot make a consumer deliver into the policy key; the ingress user cannot take a
//! queued message; `sluice policy push` as the ingress user fails. The quarantine bucket
//! under these permissions: quarantine.rs.

use crate::cluster::RenderedCluster;
use crate::common::chart;
use crate::common::roles::{READY_WITHIN, RoleProcess, policy_config, route_policy};
use crate::common::sink::{Replies, Sink, Transaction};
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures_util::StreamExt;
use std::ffi::OsString;
use std::time::{Duration, Instant};

/// How long a write that the server refuses may take to fail (the client may only time
/// out: a permission violation is not an answer to the request).
const REFUSED_WITHIN: Duration = Duration::from_secs(15);

/// The inbox prefix the chart gives `role` (SLUICE_NATS_INBOX_PREFIX of
/// "sluice.nats.env").
fn chart_inbox(role: &str) -> String {
    let roles = crate::env::probe("");
    let (_, nats) = roles.iter().find(|(r, _)| r == role).expect("the role");
    let prefix = nats
        .var("SLUICE_NATS_INBOX_PREFIX")
        .expect("an inbox prefix");
    prefix.as_str().unwrap().to_string()
}

async fn start_role(cluster: &RenderedCluster, role: &str) -> RoleProcess {
    let env: Vec<(&str, OsString)> = vec![
        ("SLUICE_NATS_USER", role.into()),
        ("SLUICE_NATS_PASSWORD", cluster.password(role).into()),
        ("SLUICE_NATS_REPLICAS", "3".into()),
        ("SLUICE_NATS_INBOX_PREFIX", chart_inbox(role).into()),
        // A message held by a worker that died comes back this soon.
        ("SLUICE_NATS_ACK_WAIT", "3s".into()),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let mut args = vec!["--hostname", "relay.test"];
    if role == "ingress" {
        args.extend(["--smtp", "127.0.0.1:0"]);
    }
    RoleProcess::start_with_env(role, role, &cluster.url(), &args, &env).await
}

/// Takes everything but the recipients named `defer…`, which it defers for ever, and
/// sits on the first message to `slow@` (for a worker to die while it waits).
#[derive(Default)]
struct DeferSome {
    held: std::sync::atomic::AtomicBool,
}
impl Replies for DeferSome {
    fn hold(&self, t: &Transaction, _: usize) -> Duration {
        let slow = t.rcpt_to.iter().any(|r| r.contains("<slow@"));
        if slow && !self.held.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        }
    }

    fn rcpt(&self, address: &str, _: usize) -> String {
        if address.contains("<defer") {
            "451 4.3.0 Try again later".into()
        } else {
            "250 2.1.5 Ok".into()
        }
    }
}

/// swaks, a real SMTP client, sends one message; panics unless it is accepted. The
/// queue id the ingress gave it.
fn swaks(ingress: &RoleProcess, to: &str) -> String {
    let out = std::process::Command::new("swaks")
        .args(["--server", &ingress.smtp().to_string()])
        .args(["--from", "sender@client.test", "--to", to])
        .args(["--body", "through the chart's NATS", "--timeout", "30"])
        .output()
        .expect("swaks (scripts/install-test-deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("250 2.0.0"),
        "swaks:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("queued as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no queue id in {text}"))
        .to_string()
}

/// `sluice queue ARGS` against a role's admin listener: (exit code, output).
async fn queue_tool(process: &RoleProcess, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("queue")
        .args(args)
        .args(["--admin", &process.admin.to_string()])
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The policy key's newest revision, read as `role`.
async fn policy_revision(cluster: &RenderedCluster, role: &str) -> u64 {
    let js = jetstream::new(cluster.connect(role).await);
    let kv = js.get_key_value("sluice-policy").await.expect("the bucket");
    kv.entry("snapshot")
        .await
        .expect("reading the policy")
        .expect("a policy")
        .revision
}

/// JetStream as `role`, with requests given up after 2 s: a refused request is never
/// answered, and the default would wait 5 s for each.
async fn js_as(cluster: &RenderedCluster, role: &str) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(cluster.connect(role).await)
}

/// `role` tries to write the policy key, through the KV API and by a plain JetStream
/// publish to the key's subject; both must fail, and the key must keep its revision.
async fn cannot_write_policy(cluster: &RenderedCluster, role: &str) {
    let before = policy_revision(cluster, "operator").await;
    let js = js_as(cluster, role).await;
    let kv = js.get_key_value("sluice-policy").await.expect("readable");
    let put = tokio::time::timeout(REFUSED_WITHIN, kv.put("snapshot", "{}".into())).await;
    assert!(
        !matches!(put, Ok(Ok(_))),
        "{role} wrote the policy: {put:?}"
    );
    let publish = async {
        match js.publish("$KV.sluice-policy.snapshot", "{}".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    };
    let stored = tokio::time::timeout(REFUSED_WITHIN, publish)
        .await
        .unwrap_or(false);
    assert!(!stored, "{role} published to the policy key");
    assert_eq!(policy_revision(cluster, "operator").await, before, "{role}");
}

/// `sluice policy push` as the operator's user; the revision pushed.
async fn push_as_operator(cluster: &RenderedCluster, config: &std::path::Path) -> String {
    let password = cluster.password("operator");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "push", "--config"])
        .arg(config)
        .args(["--nats-url", &cluster.url(), "--nats-user", "operator"])
        .args(["--nats-password", &password, "--nats-replicas", "3"])
        .args(["--nats-inbox-prefix", &chart_inbox("operator")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("revision ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no revision in {text:?}"))
        .to_string()
}

/// `sluice nats provision` as the operator's user, with the chart's replicas: what the
/// operator does at start (the same library function), here without Kubernetes.
async fn provision_as_operator(cluster: &RenderedCluster) {
    let password = cluster.password("operator");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["nats", "provision", "--nats-url", &cluster.url()])
        .args(["--nats-user", "operator", "--nats-password", &password])
        .args(["--nats-replicas", "3", "--nats-ack-wait", "3s"])
        .args(["--nats-inbox-prefix", &chart_inbox("operator")])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `role` tries to make the queue's streams copy what it publishes into the policy key
/// (a stream update with `republish`, as found in review) and to create a new stream of
/// its own that would do the same; every attempt must be refused, the streams keep
/// their configuration and the policy key its revision.
async fn cannot_reconfigure_streams(cluster: &RenderedCluster, role: &str) {
    use async_nats::jetstream::stream::{Config, Republish};
    let before = policy_revision(cluster, "operator").await;
    let js = js_as(cluster, role).await;
    let republish = |source: &str| Republish {
        source: source.to_string(),
        destination: "$KV.sluice-policy.snapshot".into(),
        headers_only: false,
    };
    for name in ["SLUICE_EVENTS", "SLUICE_MESSAGES"] {
        let mut stream = js.get_stream(name).await.expect("the role may look it up");
        let mut config = stream.info().await.unwrap().config.clone();
        config.republish = Some(republish("sluice.events.x.evil"));
        let update = tokio::time::timeout(REFUSED_WITHIN, js.update_stream(&config)).await;
        assert!(
            !matches!(update, Ok(Ok(_))),
            "{role} updated {name}: {update:?}"
        );
    }
    // A new stream: the requester chooses its subjects and republish.
    let evil = format!("EVIL_{role}");
    let create = js.create_stream(Config {
        name: evil.clone(),
        subjects: vec![format!("evil.{role}.>")],
        republish: Some(republish(&format!("evil.{role}.>"))),
        ..Default::default()
    });
    let create = tokio::time::timeout(REFUSED_WITHIN, create).await;
    assert!(
        !matches!(create, Ok(Ok(_))),
        "{role} created {evil}: {create:?}"
    );
    // What the republish would have copied: stored as an event, and nowhere else.
    let forged = serde_json::json!({"revision": "forged"}).to_string();
    let ack = js
        .publish("sluice.events.x.evil", forged.into())
        .await
        .expect("the role may publish events");
    ack.await.expect("stored in SLUICE_EVENTS");
    let operator = jetstream::new(cluster.connect("operator").await);
    for name in ["SLUICE_EVENTS", "SLUICE_MESSAGES"] {
        let mut stream = operator.get_stream(name).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert!(config.republish.is_none(), "{name}: {:?}", config.republish);
    }
    assert!(operator.get_stream(&evil).await.is_err(), "{evil} exists");
    assert_eq!(policy_revision(cluster, "operator").await, before, "{role}");
}

/// The worker's user may write its durable consumer (for its ack_wait): it tries to make
/// it, or a new consumer on the events stream, a push consumer delivering into the
/// policy key. Neither may store anything there, and sluice-workers stays a pull
/// consumer. Needs a message in SLUICE_MESSAGES and events in SLUICE_EVENTS to deliver.
async fn consumers_cannot_deliver_into_the_policy(cluster: &RenderedCluster) {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, push};
    let before = policy_revision(cluster, "operator").await;
    let js = js_as(cluster, "worker").await;
    let messages = js.get_stream("SLUICE_MESSAGES").await.unwrap();
    let durable = messages.create_consumer(push::Config {
        durable_name: Some("sluice-workers".into()),
        deliver_subject: "$KV.sluice-policy.snapshot".into(),
        ack_policy: AckPolicy::Explicit,
        filter_subject: "sluice.msg.>".into(),
        ..Default::default()
    });
    let durable = tokio::time::timeout(REFUSED_WITHIN, durable).await;
    assert!(!matches!(durable, Ok(Ok(_))), "{durable:?}");
    let events = js.get_stream("SLUICE_EVENTS").await.unwrap();
    let ephemeral = events.create_consumer(push::Config {
        deliver_subject: "$KV.sluice-policy.snapshot".into(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::None,
        ..Default::default()
    });
    let ephemeral = tokio::time::timeout(REFUSED_WITHIN, ephemeral).await;
    // The server creates it (a consumer's deliver subject is not in the API subject, so
    // no permission can refuse it). Created or not, nothing may reach the policy
    // bucket: watched for a while, since a push consumer delivers in the background.
    let kv_state = || async {
        let operator = jetstream::new(cluster.connect("operator").await);
        let mut kv = operator.get_stream("KV_sluice-policy").await.unwrap();
        let state = kv.info().await.unwrap().state.clone();
        (state.messages, state.last_sequence)
    };
    let kv_before = kv_state().await;
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Ok(consumer)) = &ephemeral {
            let mut consumer = consumer.clone();
            if let Ok(info) = consumer.info().await {
                delivered = info.delivered.stream_sequence;
            }
        }
        let now = policy_revision(cluster, "operator").await;
        assert_eq!(now, before, "a consumer delivered into the policy key");
        assert_eq!(
            kv_state().await,
            kv_before,
            "a consumer wrote to the policy bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "push consumer on SLUICE_EVENTS into $KV.sluice-policy.snapshot: created {}, \
         delivered up to stream sequence {delivered}, nothing stored in the bucket",
        matches!(ephemeral, Ok(Ok(_)))
    );
    let operator = jetstream::new(cluster.connect("operator").await);
    let stream = operator.get_stream("SLUICE_MESSAGES").await.unwrap();
    let info = stream.consumer_info("sluice-workers").await.unwrap();
    assert!(
        info.config.deliver_subject.is_none(),
        "sluice-workers became a push consumer: {:?}",
        info.config.deliver_subject
    );
}

/// Subscribes as the ingress user to the replies of every user (`_INBOX.>`, the default
/// prefix) and of the worker's; counts what arrives.
async fn spy_on_replies(
    cluster: &RenderedCluster,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let client = cluster.connect("ingress").await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for subject in ["_INBOX.>", "_INBOX_worker.>"] {
        let mut subscription = client.subscribe(subject).await.unwrap();
        let seen = seen.clone();
        let _client = client.clone();
        tokio::spawn(async move {
            let _client = _client;
            while subscription.next().await.is_some() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    client.flush().await.unwrap();
    seen
}

/// The test's policy with `users` users (about 170 bytes each in the snapshot): 8,000
/// make a snapshot larger than a NATS message, which goes to the policy object store.
fn large_policy(sink_port: u16, users: usize) -> String {
    let mut policy = route_policy(&["127.0.0.1/32"], sink_port);
    policy += "  users:\n";
    for i in 0..users {
        policy += &format!(
            "    - {{name: user{i:05}, passwordHash: '{}', allowedSenders: ['@d{i}.example']}}\n",
            crate::common::password_hash()
        );
    }
    policy
}

/// Waits until `process` applies `revision` (its metrics show it).
async fn applies(process: &RoleProcess, revision: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = process.metrics().await.unwrap_or_default();
        if page.contains(&format!(
            "sluice_policy_revision_info{{revision=\"{revision}\"}} 1"
        )) {
            return;
        }
        process.fail_if(
            Instant::now() > deadline,
            &format!("policy {revision} not applied"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rendered_cluster_carries_mail_and_each_role_is_least_privileged() {
    let _heavy = crate::common::roles::exclusive().await;
    let rendered = chart::render("");
    let started = Instant::now();
    let cluster = RenderedCluster::start(&rendered, Duration::from_secs(60)).await;
    let formed = started.elapsed();

    // The routes log in: a server without the route password cannot join (and read
    // every message), one with it can.
    let route_password = cluster.password("route");
    let refused = cluster.route_answer("");
    assert!(refused.contains("Authorization Violation"), "{refused}");
    let accepted = cluster.route_answer(&format!(r#","user":"route","pass":"{route_password}""#));
    assert!(!accepted.contains("-ERR"), "{accepted}");

    let sink = Sink::start(DeferSome::default()).await;
    let policy_dir = tempfile::tempdir().unwrap();
    let config = policy_config(
        policy_dir.path(),
        &route_policy(&["127.0.0.1/32"], sink.addr.port()),
    );
    push_as_operator(&cluster, &config).await;
    // The ingress user listens for the replies of everyone else from now on.
    let spied = spy_on_replies(&cluster).await;

    // A worker started before the queue is provisioned: its user may not create the
    // streams, so it waits, unready, saying who creates them, and does not exit.
    let mut worker = start_role(&cluster, "worker").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !worker.log().contains("`sluice nats provision` creates it") {
        worker.fail_if(
            Instant::now() > deadline,
            "no log line naming the provisioning",
        );
        let answer = worker.readyz().await;
        worker.fail_if(
            matches!(answer, Some((200, _))),
            "ready before provisioning",
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = worker.readyz().await;
    worker.fail_if(!matches!(answer, Some((503, _))), &format!("{answer:?}"));
    // The operator's user provisions (the operator's own code path, without Kubernetes):
    // the worker becomes ready, and the ingress starts straight away.
    provision_as_operator(&cluster).await;
    worker.wait_ready(READY_WITHIN).await;
    // What was refused until now: the worker's stream creation, the spy's subscriptions.
    let refused_at_start = cluster.violations();
    let expected = |line: &String| {
        (line.contains("user:worker\"") && line.contains("$JS.API.STREAM.CREATE.SLUICE_MESSAGES"))
            || (line.contains("user:ingress\"")
                && (line.contains("\"_INBOX.>\"") || line.contains("\"_INBOX_worker.>\"")))
    };
    let unexpected: Vec<&String> = refused_at_start.iter().filter(|l| !expected(l)).collect();
    assert!(unexpected.is_empty(), "refused: {unexpected:#?}");
    for what in [
        "$JS.API.STREAM.CREATE.SLUICE_MESSAGES",
        "\"_INBOX.>\"",
        "\"_INBOX_worker.>\"",
    ] {
        assert!(
            refused_at_start.iter().any(|l| l.contains(what)),
            "{what} not refused: {refused_at_start:#?}"
        );
    }
    let mut ingress = start_role(&cluster, "ingress").await;
    ingress.wait_ready(READY_WITHIN).await;
    let ready = started.elapsed();

    swaks(&ingress, "first@sink.test");
    let got = sink.wait_for(1, Duration::from_secs(30)).await;
    worker.fail_if(got.len() != 1, "the message did not reach the sink");
    assert!(
        got[0].rcpt_to[0].contains("<first@sink.test>"),
        "{:?}",
        got[0].rcpt_to
    );
    let delivered = started.elapsed();

    // Settled as well as delivered: the work queue is empty once the worker's ack
    // counts, and the events of both roles are stored.
    let js = jetstream::new(cluster.connect("worker").await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut queue = js.get_stream("SLUICE_MESSAGES").await.unwrap();
        let left = queue.info().await.unwrap().state.messages;
        if left == 0 {
            break;
        }
        worker.fail_if(
            Instant::now() > deadline,
            &format!("{left} queued after delivery"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = js.get_stream("SLUICE_EVENTS").await.unwrap();
    let subjects = events.info_with_subjects("sluice.events.>").await.unwrap();
    let subjects: Vec<String> = subjects.map(|s| s.unwrap().0).collect().await;
    for kind in ["accepted", "delivered"] {
        let found = subjects.iter().any(|s| s.ends_with(&format!(".{kind}")));
        assert!(found, "no {kind} event in {subjects:?}");
    }
    // A snapshot too large for one message: the operator's user writes it to the policy
    // object store, the ingress and worker users read it from there.
    let large_dir = tempfile::tempdir().unwrap();
    let large = policy_config(large_dir.path(), &large_policy(sink.addr.port(), 8_000));
    let revision = push_as_operator(&cluster, &large).await;
    let mut objects = js.get_stream("OBJ_sluice-policy-objects").await.unwrap();
    let info = objects.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert!(
        info.state.messages > 0,
        "the snapshot is not in the object store"
    );
    applies(&ingress, &revision).await;
    applies(&worker, &revision).await;

    // Deferrals and the queue tools run in the worker, as the worker's user: two
    // messages deferred, one deleted, the other made due again.
    let kept = swaks(&ingress, "defer-kept@sink.test");
    let removed = swaks(&ingress, "defer-removed@sink.test");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = queue_tool(&worker, &["list"]).await;
        if list.matches("451 4.3.0").count() >= 2 {
            break;
        }
        worker.fail_if(Instant::now() > deadline, &format!("not deferred:\n{list}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, text) = queue_tool(&worker, &["delete", &removed]).await;
    assert!(code == 0 && text.contains("deleted"), "{code}: {text}");
    let (code, text) = queue_tool(&worker, &["retry", "--all"]).await;
    assert!(
        code == 0 && text.contains("1 message due now"),
        "{code}: {text}"
    );
    let (_, list) = queue_tool(&worker, &["list"]).await;
    assert!(list.contains(&kept) && !list.contains(&removed), "{list}");
    let held = crate::quarantine::held_and_released(&cluster, &ingress, &worker, &sink).await;

    // A worker killed in the middle of a delivery: the next one takes the message again
    // once ack_wait has run out, after looking up its delivery events.
    swaks(&ingress, "slow@sink.test");
    let slow = |sink: &Sink| {
        let all = sink.transactions();
        all.iter()
            .filter(|t| t.rcpt_to.iter().any(|r| r.contains("<slow@")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow(&sink) == 0 {
        worker.fail_if(Instant::now() > deadline, "the slow message never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill();
    let mut worker = start_role(&cluster, "worker").await;
    worker.wait_ready(READY_WITHIN).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow(&sink) < 2 {
        worker.fail_if(
            Instant::now() > deadline,
            "the slow message was not redelivered",
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = worker.metrics().await.unwrap_or_default();
    let redelivered = crate::common::roles::metric_sum(&page, "sluice_queue_redeliveries_total");
    worker.fail_if(
        redelivered.unwrap_or(0.0) < 1.0,
        &format!("redeliveries {redelivered:?}"),
    );

    // Everything since provisioning within the permissions: not one refusal more logged,
    // and the ingress user's spying on replies got nothing.
    let violations = cluster.violations();
    assert_eq!(
        violations.len(),
        refused_at_start.len(),
        "refused: {violations:#?}"
    );
    assert_eq!(
        spied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the ingress user read replies meant for others"
    );

    // The queue and the policy are R3, as SLUICE_NATS_REPLICAS asked.
    for stream in ["SLUICE_MESSAGES", "SLUICE_EVENTS", "KV_sluice-policy"] {
        let mut handle = js.get_stream(stream).await.unwrap();
        let info = handle.info().await.unwrap().clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
        let replicas = info.cluster.map_or(0, |c| c.replicas.len());
        assert_eq!(replicas, 2, "{stream}: a leader and two replicas");
    }

    cannot_write_policy(&cluster, "ingress").await;
    cannot_write_policy(&cluster, "worker").await;
    cannot_reconfigure_streams(&cluster, "ingress").await;
    cannot_reconfigure_streams(&cluster, "worker").await;
    crate::quarantine::ingress_cannot_read_or_purge(&cluster, &held).await;

    // With no worker running, a queued message waits for the consumer: the ingress user
    // cannot fetch it, the worker user can.
    worker.kill();
    swaks(&ingress, "second@sink.test");
    consumers_cannot_deliver_into_the_policy(&cluster).await;
    let consumer = |role: &'static str| {
        let cluster = &cluster;
        async move {
            let js = js_as(cluster, role).await;
            let stream = js.get_stream("SLUICE_MESSAGES").await.unwrap();
            let consumer: PullConsumer = stream.get_consumer("sluice-workers").await.unwrap();
            let batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await;
            match batch {
                Ok(mut messages) => {
                    let next = tokio::time::timeout(REFUSED_WITHIN, messages.next()).await;
                    matches!(next, Ok(Some(Ok(_))))
                }
                Err(_) => false,
            }
        }
    };
    assert!(
        !consumer("ingress").await,
        "the ingress user took a queued message"
    );
    assert!(
        consumer("worker").await,
        "the worker user found no queued message"
    );

    // The CLI as the ingress user: refused, and the policy stays.
    let before = policy_revision(&cluster, "operator").await;
    let ingress_password = cluster.password("ingress");
    let push = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "push", "--config"])
        .arg(&config)
        .args(["--nats-url", &cluster.url(), "--nats-user", "ingress"])
        .args(["--nats-password", &ingress_password])
        .args(["--nats-inbox-prefix", &chart_inbox("ingress")])
        .output();
    let push = tokio::time::timeout(Duration::from_secs(60), push)
        .await
        .expect("sluice policy push ends")
        .unwrap();
    assert!(
        !push.status.success(),
        "sluice policy push as ingress succeeded"
    );
    assert_eq!(policy_revision(&cluster, "operator").await, before);
    ingress.terminate();
    println!(
        "chart NATS: cluster formed in {formed:.1?}, roles ready at {ready:.1?}, \
         delivered at {delivered:.1?}, all done in {:.1?}",
        started.elapsed()
    );
}
