//! A local domain delivered to a webhook: the POST, its signature with the secret from
//! the secrets directory, and a 5xx that defers until a 2xx delivers.

use super::*;
use base64::Engine;
use common::hook::Hook;
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::sync::atomic::Ordering;

const SECRET: &str = "whsec-e2e";
const MESSAGE: &[u8] = b"Subject: to the hook\r\n\r\ncaf\xc3\xa9\r\n";

fn policy(port: u16, secret_name: &str) -> String {
    format!(
        "  localDomains:\n    - domain: hook.test\n      delivery: {{ webhook: {{ url: \"http://127.0.0.1:{port}/inbound\", signingSecretRef: {{ name: {secret_name}, key: signing }} }} }}\n"
    )
}

#[tokio::test]
async fn webhook_5xx_defers_then_2xx_delivers_with_a_signature_that_verifies() {
    let hook = Hook::start(500).await;
    let secrets = tempfile::tempdir().unwrap();
    write_secret(secrets.path(), "hook", "signing", SECRET);
    let delivery = format!("secretsDir: \"{}\",", secrets.path().display());
    let relay = relay(&delivery, &policy(hook.port, "hook")).await;
    let id = send(
        &relay,
        "alice@sender.test",
        " BODY=8BITMIME",
        &["in@hook.test", "other@hook.test"],
        MESSAGE,
    )
    .await;

    let last_error = deferred_with(&relay, &id).await;
    assert!(last_error.contains("HTTP 500"), "{last_error}");
    assert!(!hook.requests().is_empty());
    hook.status.store(200, Ordering::SeqCst);
    wait_until_queue_is_empty(&relay).await;

    let requests = hook.requests();
    // One POST per attempt for both recipients; the last one got the 200.
    assert!(requests.len() >= 2, "{requests:?}");
    let request = requests.last().unwrap();
    assert!(
        request.head.starts_with("POST /inbound HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(request.header("content-type"), Some("message/rfc822"));
    assert_eq!(after_received(&request.body), MESSAGE);
    let json = base64::engine::general_purpose::STANDARD
        .decode(request.header("x-sluice-envelope").unwrap())
        .unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(envelope["queueId"], id.as_str());
    assert_eq!(envelope["sender"], "alice@sender.test");
    assert_eq!(
        envelope["recipients"],
        serde_json::json!(["in@hook.test", "other@hook.test"])
    );
    let signature = request.header("x-sluice-signature").expect("signed");
    let t: u64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(','))
        .map(|(t, _)| t.parse().unwrap())
        .unwrap();
    // Keyed with the secret file's content, without its trailing newline.
    let expected = sluice::delivery::local::sign(SECRET.as_bytes(), t, &json, &request.body);
    assert_eq!(signature, expected);
    let wrong = sluice::delivery::local::sign(b"whsec-e2e\n", t, &json, &request.body);
    assert_ne!(signature, wrong);

    let running = relay.running.as_ref().unwrap();
    let refused = requests.len() as u64 - 1;
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Webhook, DeliveryStatus::Deferred),
        2 * refused
    );
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Webhook, DeliveryStatus::Sent),
        2
    );
}

/// A signing secret named in the policy but not (yet) mounted must not turn into an
/// unsigned POST: a receiver that checks signatures would refuse it with a 4xx, which
/// bounces the message for good. The message waits, like a smarthost's whose
/// credentials are missing.
#[tokio::test]
async fn webhook_with_a_missing_signing_secret_defers_without_posting() {
    let hook = Hook::start(200).await;
    let secrets = tempfile::tempdir().unwrap();
    let delivery = format!("secretsDir: \"{}\",", secrets.path().display());
    let relay = relay(&delivery, &policy(hook.port, "not-mounted")).await;
    let id = send(&relay, "alice@sender.test", "", &["in@hook.test"], MESSAGE).await;
    let last_error = deferred_with(&relay, &id).await;
    assert!(last_error.contains("not-mounted"), "{last_error}");
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());

    // Once the secret appears, the next attempt delivers, signed.
    write_secret(secrets.path(), "not-mounted", "signing", SECRET);
    let got = hook.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "no POST after the secret appeared");
    assert!(got[0].header("x-sluice-signature").is_some());
    wait_until_queue_is_empty(&relay).await;
}
