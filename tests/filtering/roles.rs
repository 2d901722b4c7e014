//! The same filters in the Kubernetes roles: `sluice ingress` and `sluice worker` on a
//! real nats-server, the policy pushed with `sluice policy push`, and the refusal and
//! the strip recorded in the `SLUICE_EVENTS` stream.

use super::support::{Client, UNTRUSTED, assert_reply, delivered, message, policy, send_to};
use crate::common::nats::NatsServer;
use crate::common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push};
use crate::common::sink::{AcceptAll, Sink};
use futures_util::StreamExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_role_refuses_strips_and_records_events() {
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let dir = tempfile::tempdir().unwrap();
    let filters = "    - attachments: {blockedExtensions: {action: strip, extensions: [js]}}\n      name: front\n";
    let config = policy_config(dir.path(), &policy(sink.addr.port(), filters));
    policy_push(&config, &nats.url(), &[]).await;
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &[]).await;
    let mut worker = RoleProcess::worker("worker", &nats.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;
    worker.wait_ready(READY_WITHIN).await;

    let smtp = ingress.smtp();
    let from = Client::From(UNTRUSTED);
    let refused = send_to(smtp, smtp, from, "exe").await;
    assert_reply(
        &refused,
        550,
        &["5.7.1", "\"setup.exe\"", "blocked content"],
    );
    assert_reply(&send_to(smtp, smtp, from, "mixed_js").await, 250, &[]);
    let got = delivered(&sink, &["mixed_js"])
        .await
        .remove("mixed_js")
        .unwrap();
    // Stripped as in standalone: the js part replaced, the pdf and the tail kept.
    let sent = message("mixed_js");
    let js = "filename=\"evil.js\"";
    assert!(!String::from_utf8_lossy(&got).contains(js));
    let pdf = "filename=\"paper.pdf\"";
    assert!(String::from_utf8_lossy(&got).contains(pdf));
    let tail = &sent[sent.len() - 40..];
    assert!(got.ends_with(tail));

    let events = events_until(&nats.url(), |events| {
        let refused = events.iter().any(|e| e["kind"] == "refused");
        let accepted = events
            .iter()
            .any(|e| e["kind"] == "accepted" && e.get("filters").is_some());
        refused && accepted
    })
    .await;
    let refused = events.iter().find(|e| e["kind"] == "refused").unwrap();
    assert_eq!(refused["filters"], "front=reject", "{refused}");
    let reply = refused["reply"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("550 5.7.1 ") && reply.contains("setup.exe"),
        "{refused}"
    );
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "accepted" && e.get("filters").is_some())
        .collect();
    assert_eq!(accepted.len(), 1, "{events:?}");
    assert_eq!(accepted[0]["filters"], "front=strip", "{events:?}");
    assert_ne!(accepted[0]["queueId"], refused["queueId"]);
}

/// Every event in `SLUICE_EVENTS` (as JSON), read again until `done` holds of them or
/// 20 s have passed: events are published after the reply, in the background.
async fn events_until(
    url: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            events.push(serde_json::from_slice(&message.payload).unwrap());
        }
        if done(&events) || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
