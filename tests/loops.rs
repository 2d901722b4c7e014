//! Mail loops and reaching inside, against real clients (Python's smtplib) and a real
//! DNS server on loopback: the hop limit at the end of data, routing characters in local
//! parts, address literals, and MX records that point at loopback or private addresses.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{AcceptAll, Sink};
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Connects from `source`, optionally authenticates over STARTTLS as `user`, gives MAIL
/// and each RCPT, and with `hops` >= 0 sends a message carrying that many Received
/// headers. Prints one line per reply: `rcpt CODE TEXT`, then `data CODE TEXT`.
const SMTPLIB_SCRIPT: &str = r#"
import smtplib, ssl, sys
port, source, user, password, hops = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
s = smtplib.SMTP('127.0.0.1', port, source_address=(source, 0), timeout=30)
s.ehlo('client.test')
sender = 'sender@example.org'
if user != '-':
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo('client.test')
    s.login(user, password)
    sender = 'alice@local.test'
code, text = s.mail(sender)
assert code == 250, (code, text)
for rcpt in sys.argv[6:]:
    code, text = s.rcpt(rcpt)
    print('rcpt', code, text.decode())
if hops >= 0:
    message = ''.join('Received: from hop%d.example by relay%d.example; Mon, 7 Dec 2026 00:00:00 +0000\r\n' % (i, i) for i in range(hops))
    message += 'Subject: hops\r\n\r\nReceived: in the body, not counted\r\n'
    try:
        code, text = s.data(message)
    except smtplib.SMTPDataError as e:
        code, text = e.smtp_code, e.smtp_error
    print('data', code, text.decode())
s.quit()
"#;

/// Runs the script; `user` `None` stays unauthenticated.
async fn smtplib(
    relay: &common::Relay,
    source: &str,
    user: Option<&str>,
    hops: i32,
    rcpts: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "-c".to_string(),
        SMTPLIB_SCRIPT.to_string(),
        relay.relay.port().to_string(),
        source.to_string(),
        user.unwrap_or("-").to_string(),
        common::PASSWORD.to_string(),
        hops.to_string(),
    ];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(args)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn more_than_100_received_headers_get_554_5_4_6_at_end_of_data() {
    let relay = common::start("{}").await;
    let lines = smtplib(&relay, "127.0.0.1", None, 100, &["bob@local.test"]).await;
    assert!(
        lines[1].starts_with("data 250 2.0.0 Ok: queued"),
        "{lines:?}"
    );
    let lines = smtplib(&relay, "127.0.0.1", None, 101, &["bob@local.test"]).await;
    assert!(
        lines[1].starts_with("data 554 5.4.6 Too many hops: 101 Received headers"),
        "{lines:?}"
    );
    let queued = relay.stop_and_list().await;
    assert_eq!(queued.len(), 1, "only the message with 100 hops");
}

#[tokio::test]
async fn the_hop_limit_is_configurable() {
    let relay = common::start("{ maxReceivedHeaders: 5 }").await;
    let lines = smtplib(&relay, "127.0.0.1", None, 5, &["bob@local.test"]).await;
    assert!(lines[1].starts_with("data 250"), "{lines:?}");
    let lines = smtplib(&relay, "127.0.0.1", None, 6, &["bob@local.test"]).await;
    assert!(lines[1].starts_with("data 554 5.4.6"), "{lines:?}");
}

const ROUTING: [&str; 3] = ["a%b@local.test", "\"a@b\"@local.test", "a!b@local.test"];

#[tokio::test]
async fn routing_characters_are_refused_for_untrusted_unauthenticated_clients() {
    let relay = common::start("{}").await;
    let mut rcpts = ROUTING.to_vec();
    rcpts.push("plain@local.test");
    // 127.0.0.2 is not in the test policy's trusted networks.
    let lines = smtplib(&relay, "127.0.0.2", None, -1, &rcpts).await;
    for line in &lines[..3] {
        assert!(
            line.starts_with("rcpt 550 5.7.1") && line.contains("sender-specified routing"),
            "{lines:?}"
        );
    }
    assert!(lines[3].starts_with("rcpt 250"), "{lines:?}");

    let trusted = smtplib(&relay, "127.0.0.1", None, -1, &ROUTING).await;
    let authenticated = smtplib(&relay, "127.0.0.2", Some("alice"), -1, &ROUTING).await;
    for line in trusted.iter().chain(&authenticated) {
        assert!(
            line.starts_with("rcpt 250"),
            "{trusted:?} {authenticated:?}"
        );
    }
}

/// The test policy, with `extra` added to its spec.
fn policy_with(extra: &str) -> String {
    format!("{}{extra}", common::policy_yaml())
}

#[tokio::test]
async fn address_literals_are_refused_at_rcpt_unless_the_policy_allows_them() {
    let rcpt = ["bob@[192.0.2.1]", "bob@[IPv6:2001:db8::1]"];
    let relay = common::start_with(&common::config_yaml("{}"), &common::policy_yaml()).await;
    let lines = smtplib(&relay, "127.0.0.1", None, -1, &rcpt).await;
    for line in &lines {
        assert!(
            line.starts_with("rcpt 550 5.7.1") && line.contains("address literals"),
            "{lines:?}"
        );
    }
    let policy = policy_with("  addressLiterals: allow\n");
    let relay = common::start_with(&common::config_yaml("{}"), &policy).await;
    let lines = smtplib(&relay, "127.0.0.1", None, -1, &rcpt).await;
    assert!(lines.iter().all(|l| l.starts_with("rcpt 250")), "{lines:?}");
    // Allowed literals are still foreign: the relay rules apply to them.
    let lines = smtplib(&relay, "127.0.0.2", None, -1, &rcpt).await;
    assert!(
        lines.iter().all(|l| l.starts_with("rcpt 554 5.7.1")),
        "{lines:?}"
    );
}

/// A relay that delivers by MX through `dns`, to MX hosts on `mx_port`, with `extra`
/// settings in `delivery:`.
async fn delivering_relay(dns: &DnsServer, mx_port: u16, extra: &str) -> common::Relay {
    let delivery = format!(
        "{{ {extra} nameserver: \"{}\", mxPort: {mx_port}, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 }} }}",
        dns.addr
    );
    let policy = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: loops}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n";
    common::start_with(&common::config_yaml_with("{}", &delivery), policy).await
}

async fn send_null_sender(relay: &common::Relay, to: &[&str]) {
    let mut c = common::smtp::Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<>", "250").await;
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    c.cmd("DATA", "354").await;
    c.send(b"Subject: inside\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn mx_records_pointing_inside_bounce_without_a_connection_by_default() {
    let dns = DnsServer::start(
        Zone::default()
            .mx("loopback.test", 10, "mx.loopback.test")
            .addr("mx.loopback.test", "127.0.0.1")
            .addr("private.test", "10.0.0.1")
            .addr("metadata.test", "169.254.169.254"),
    )
    .await;
    // The "MX host" counts the connections it gets.
    let listener = Sink::start(AcceptAll).await;
    let relay = delivering_relay(&dns, listener.addr.port(), "").await;
    send_null_sender(
        &relay,
        &["a@loopback.test", "b@private.test", "c@metadata.test"],
    )
    .await;
    let metrics = relay.running.as_ref().unwrap().metrics.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics
        .deliveries
        .get(RouteLabel::Mx, DeliveryStatus::Bounced)
        < 3
    {
        assert!(tokio::time::Instant::now() < deadline, "not bounced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics.deliveries.get(RouteLabel::Mx, DeliveryStatus::Sent),
        0
    );
    assert_eq!(
        metrics
            .deliveries
            .get(RouteLabel::Mx, DeliveryStatus::Deferred),
        0
    );
    assert_eq!(
        listener.connections.load(Ordering::SeqCst),
        0,
        "never connected"
    );

    // The documented switch for tests and local experiments lets the same MX through.
    let relay = delivering_relay(
        &dns,
        listener.addr.port(),
        "allowPrivateDestinations: true,",
    )
    .await;
    send_null_sender(&relay, &["a@loopback.test"]).await;
    assert_eq!(listener.wait_for(1, Duration::from_secs(20)).await.len(), 1);
}
