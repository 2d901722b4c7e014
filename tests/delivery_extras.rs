//! End to end, the delay warning (`retry.delayWarning`): a message that stays deferred
//! past it earns its sender exactly one "delayed" DSN, and the failure DSN still follows
//! at expiry.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{Replies, Sink, Transaction};
use common::smtp::Client;
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// 451 to every message but notifications (null reverse-path), which it takes.
struct AlwaysLater;
impl Replies for AlwaysLater {
    fn data(&self, t: &Transaction, _completed: usize) -> String {
        if t.mail_from.starts_with("MAIL FROM:<>") {
            "250 2.0.0 Ok"
        } else {
            "451 4.3.0 later"
        }
        .into()
    }
}

async fn send(relay: &common::Relay, from: &str, to: &str) {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    c.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: slow\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
}

/// The `Action` of each notification the sink got, in order.
fn actions(sink: &Sink) -> Vec<String> {
    sink.transactions()
        .iter()
        .filter(|t| t.mail_from.starts_with("MAIL FROM:<>"))
        .map(|t| {
            let text = String::from_utf8_lossy(&t.data);
            let action = text.split("\r\nAction: ").nth(1).unwrap_or("?");
            action.split("\r\n").next().unwrap_or("?").to_string()
        })
        .collect()
}

#[tokio::test]
async fn one_delay_warning_then_the_failure_at_expiry() {
    let zone = Zone::default()
        .mx("mx.test", 10, "mx1.mx.test")
        .addr("mx1.mx.test", "127.0.0.1")
        .mx("sender.test", 10, "mx1.mx.test");
    let dns = DnsServer::start(zone).await;
    let sink = Sink::start(AlwaysLater).await;
    // Attempts every second; the warning is due from the second attempt on, the
    // message expires at the sixth.
    let delivery = format!(
        "{{ allowPrivateDestinations: true, nameserver: \"{}\", mxPort: {}, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 5s, jitter: 0, delayWarning: 1s }} }}",
        dns.addr,
        sink.addr.port()
    );
    let config = common::config_yaml_with("{}", &delivery);
    let policy = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: e2e}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n";
    let relay = common::start_with(&config, policy).await;
    send(&relay, "alice@sender.test", "bob@mx.test").await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while !actions(&sink).contains(&"failed".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure DSN: {:?}",
            actions(&sink)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(actions(&sink), ["delayed", "failed"]);
    let attempts = sink
        .transactions()
        .iter()
        .filter(|t| t.mail_from.starts_with("MAIL FROM:<alice@"))
        .count();
    assert!(
        attempts >= 3,
        "the warning came once over {attempts} attempts"
    );

    let delayed = sink
        .transactions()
        .into_iter()
        .find(|t| t.mail_from.starts_with("MAIL FROM:<>"))
        .unwrap();
    assert!(delayed.rcpt_to[0].starts_with("RCPT TO:<alice@sender.test>"));
    let text = String::from_utf8_lossy(&delayed.data);
    for needle in [
        "Subject: Delayed Mail (still being retried)\r\n",
        "Final-Recipient: rfc822; bob@mx.test\r\nAction: delayed\r\nStatus: 4.3.0\r\n",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    let running = relay.running.as_ref().unwrap();
    assert!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Mx, DeliveryStatus::Deferred)
            >= 3
    );
}
