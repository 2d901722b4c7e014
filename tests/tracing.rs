//! Trace export end to end: a real `sluice ingress` and `sluice worker` on a real NATS
//! JetStream export over OTLP/HTTP to a receiver the test runs on loopback. One message,
//! sent with AUTH and deferred once by the next hop (451, then 250), is one trace: the
//! SMTP session, the message's acceptance with its checks and its enqueue, and two
//! delivery attempts below the acceptance, each with its connection and transaction.
//! No attribute carries the message's content, its subject, the password or a
//! recipient's local part, and the log lines are those of a relay without export.
//!
//! The batch delay is a minute: the spans arrive only because each process exports
//! what it holds when it exits, which is what the test waits for.

mod common;

#[path = "tracing/collector.rs"]
mod collector;

use base64::Engine;
use collector::{Collector, Received};
use common::nats::NatsServer;
use common::roles::{READY_WITHIN, RoleProcess, exclusive, policy_config, policy_push};
use common::sink::{Replies, Sink, Transaction};
use common::smtp::Client;
use std::path::Path;
use std::time::Duration;

const DELIVERED_WITHIN: Duration = Duration::from_secs(40);
const EXIT_WITHIN: Duration = Duration::from_secs(30);
const SUBJECT: &str = "Quarterly figures for the tracing test";
const BODY: &str = "confidential body text that no span may carry";

/// 451 to the first transaction, 250 to the next.
struct LaterThenYes;
impl Replies for LaterThenYes {
    fn data(&self, _t: &Transaction, completed: usize) -> String {
        match completed {
            0 => "451 4.3.0 try again later",
            _ => "250 2.0.0 Ok",
        }
        .into()
    }
}

/// alice may relay as anyone at alice.test once authenticated; sink.test goes to the
/// test's sink. No trusted network: the message is relayed for the AUTH alone.
fn policy(sink_port: u16) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: traced, namespace: mail }}
spec:
  users:
    - name: alice
      passwordHash: "{}"
      allowedSenders: ["@alice.test"]
  routes:
    - domains: ["sink.test"]
      smarthost: {{ host: 127.0.0.1, port: {sink_port}, tls: opportunistic }}
"#,
        common::password_hash()
    )
}

/// The ingress's configuration: one relay listener that takes AUTH without TLS (the
/// test has no certificate to offer), and the worker's: a retry within a second.
fn role_configs(dir: &Path) -> (String, String) {
    let ingress = dir.join("ingress.yaml");
    std::fs::write(
        &ingress,
        "listeners: [{name: smtp, address: '127.0.0.1:0', kind: relay, allowPlaintextAuth: true}]\n",
    )
    .unwrap();
    let worker = dir.join("worker.yaml");
    std::fs::write(&worker, "delivery: {retry: {firstRetry: 1s, jitter: 0}}\n").unwrap();
    let text = |p: &Path| p.to_str().unwrap().to_string();
    (text(&ingress), text(&worker))
}

/// An ingress and a worker with `env`, ready.
async fn start_roles(
    nats: &NatsServer,
    dir: &Path,
    env: &[(&str, &str)],
) -> (RoleProcess, RoleProcess) {
    let (ingress_config, worker_config) = role_configs(dir);
    let env: Vec<(&str, &std::ffi::OsStr)> = env
        .iter()
        .map(|(k, v)| (*k, std::ffi::OsStr::new(*v)))
        .collect();
    let common = ["--hostname", "relay.test", "--drain-delay", "0s"];
    let ingress_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--config", &ingress_config])
        .collect();
    let worker_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--config", &worker_config])
        .collect();
    let url = nats.url();
    let mut ingress =
        RoleProcess::start_with_env("ingress", "ingress", &url, &ingress_args, &env).await;
    let mut worker =
        RoleProcess::start_with_env("worker", "worker", &url, &worker_args, &env).await;
    ingress.wait_ready(READY_WITHIN).await;
    worker.wait_ready(READY_WITHIN).await;
    (ingress, worker)
}

/// One message with AUTH; returns its queue id.
async fn send(ingress: &RoleProcess) -> String {
    let mut c = Client::connect(ingress.smtp()).await;
    c.cmd("EHLO client.test", "250 ").await;
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{}", common::PASSWORD));
    c.cmd(&format!("AUTH PLAIN {plain}"), "235").await;
    c.cmd("MAIL FROM:<alice@alice.test>", "250").await;
    c.cmd("RCPT TO:<bob@sink.test>", "250").await;
    c.cmd("DATA", "354").await;
    let message = format!("Subject: {SUBJECT}\r\n\r\n{BODY}\r\n.\r\n");
    c.send(message.as_bytes()).await;
    let reply = c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
    reply.rsplit(' ').next().expect("a queue id").to_string()
}

/// SIGTERM to both roles and a bounded wait for their exit, which flushes their spans.
async fn stop(ingress: &mut RoleProcess, worker: &mut RoleProcess) {
    ingress.terminate();
    worker.terminate();
    for role in [ingress, worker] {
        let status = role.wait_exit(EXIT_WITHIN).await;
        role.fail_if(status.is_none(), "did not exit after SIGTERM");
    }
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| s.name() == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Received], parent: &Received, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.name() == name && s.parent_id() == parent.span_id())
        .collect()
}

#[tokio::test]
async fn one_message_is_one_trace_across_ingress_queue_and_worker() {
    let _heavy = exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(LaterThenYes).await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path(), &policy(sink.addr.port()));
    policy_push(&config, &nats.url(), &[]).await;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
    ];
    let (mut ingress, mut worker) = start_roles(&nats, dir.path(), &env).await;

    let queue_id = send(&ingress).await;
    let delivered = sink.wait_for(2, DELIVERED_WITHIN).await;
    worker.fail_if(delivered.len() < 2, "no second attempt reached the sink");
    stop(&mut ingress, &mut worker).await;

    let spans = collector.spans();
    let requests = collector.requests();
    assert!(
        requests
            .iter()
            .all(|r| r == "POST /v1/traces HTTP/1.1 application/x-protobuf"),
        "{requests:?}"
    );
    let session = one(&spans, "smtp.session");
    let accept = one(&spans, "smtp.accept");
    let checks = one(&spans, "sluice.filter");
    let enqueue = one(&spans, "sluice.enqueue");
    let attempts: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name() == "smtp.deliver")
        .collect();
    assert_eq!(attempts.len(), 2, "two delivery attempts: {spans:#?}");

    // One trace, correctly parented: the session is the root, the acceptance below it,
    // the checks and the enqueue below the acceptance, both attempts below the
    // acceptance (through the envelope's traceparent, across the queue).
    let trace = session.trace_id();
    for span in spans.iter() {
        assert_eq!(span.trace_id(), trace, "one trace: {span:#?}");
    }
    assert!(
        session.span.parent_span_id.is_empty(),
        "the session is the root"
    );
    assert_eq!(accept.parent_id(), session.span_id());
    assert_eq!(checks.parent_id(), accept.span_id());
    assert_eq!(enqueue.parent_id(), accept.span_id());
    for attempt in &attempts {
        assert_eq!(attempt.parent_id(), accept.span_id(), "{attempt:#?}");
        assert_eq!(children(&spans, attempt, "smtp.connect").len(), 1);
        assert_eq!(children(&spans, attempt, "smtp.transaction").len(), 1);
    }
    // The ingress logged the trace id it put in the envelope: the exported one.
    assert!(ingress.log().contains(&trace), "{}", ingress.log_tail());
    assert!(worker.log().contains(&trace), "{}", worker.log_tail());

    // Who sent what.
    for span in [session, accept, checks, enqueue] {
        assert_eq!(span.service, "sluice-ingress");
    }
    for span in &attempts {
        assert_eq!(span.service, "sluice-worker");
    }

    // Attributes.
    let attr = |s: &Received, key: &str| s.attribute(key).unwrap_or_default();
    assert_eq!(attr(session, "network.protocol.name"), "smtp");
    assert_eq!(attr(session, "network.peer.address"), "127.0.0.1");
    assert!(!attr(session, "network.peer.port").is_empty());
    assert_eq!(attr(accept, "sluice.queue_id"), queue_id);
    assert_eq!(attr(accept, "sluice.recipient_domain"), "sink.test");
    assert_eq!(attr(accept, "sluice.reply_code"), "250");
    assert_eq!(attr(checks, "sluice.filter.disposition"), "queue");
    let mut codes: Vec<String> = attempts
        .iter()
        .map(|a| attr(a, "sluice.reply_code"))
        .collect();
    codes.sort();
    assert_eq!(codes, ["250", "451"]);
    for attempt in &attempts {
        assert_eq!(attr(attempt, "sluice.queue_id"), queue_id);
        assert_eq!(attr(attempt, "sluice.route"), "smarthost");
        assert_eq!(attr(attempt, "sluice.recipient_domain"), "sink.test");
        let connect = children(&spans, attempt, "smtp.connect")[0];
        assert_eq!(attr(connect, "server.address"), "127.0.0.1");
        assert_eq!(attr(connect, "server.port"), sink.addr.port().to_string());
    }
    let deferred = attempts
        .iter()
        .find(|a| attr(a, "sluice.reply_code") == "451")
        .unwrap();
    assert_eq!(attr(deferred, "sluice.outcome"), "deferred");
    assert_eq!(attr(deferred, "error.type"), "451");

    // Never content, the subject, the password or a local part.
    let forbidden = [
        SUBJECT,
        "Quarterly",
        BODY,
        "confidential",
        common::PASSWORD,
        "bob",
        "alice",
    ];
    for span in &spans {
        for value in span
            .all_values()
            .iter()
            .chain([span.name().to_string()].iter())
        {
            for word in forbidden {
                assert!(!value.contains(word), "{word:?} in {value:?} of {span:#?}");
            }
        }
    }

    // The log layer never saw the exported spans: no span names in the log lines.
    for role in [&ingress, &worker] {
        let log = role.log();
        for name in [
            "smtp.session",
            "smtp.accept",
            "smtp.deliver",
            "sluice.enqueue",
        ] {
            assert!(!log.contains(name), "{name} in the log of {}", role.name);
        }
    }
}

#[tokio::test]
async fn nothing_is_sent_when_export_is_off() {
    let _heavy = exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(LaterThenYes).await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path(), &policy(sink.addr.port()));
    policy_push(&config, &nats.url(), &[]).await;
    // The collector is named, but the standard switch turns the SDK off.
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let (mut ingress, mut worker) = start_roles(&nats, dir.path(), &env).await;
    send(&ingress).await;
    let delivered = sink.wait_for(2, DELIVERED_WITHIN).await;
    worker.fail_if(delivered.len() < 2, "no second attempt reached the sink");
    // Once both have exited nothing more can arrive: whatever they would have sent,
    // batched or flushed at exit, is in by now.
    stop(&mut ingress, &mut worker).await;
    assert_eq!(collector.requests(), Vec::<String>::new());
    // The message still carries a trace context, logged as before.
    assert!(
        ingress.log().contains("trace_id="),
        "{}",
        ingress.log_tail()
    );
}
