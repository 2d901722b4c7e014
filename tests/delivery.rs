//! End to end: a client hands mail to `sluice standalone`, whose worker delivers it by
//! MX (through a DNS server on loopback), to a smarthost (Postfix's smtp-sink), or to a
//! Maildir, retries on 4xx, and bounces with a DSN on 5xx and on expiry.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{AcceptAll, Replies, Sink, Transaction};
use common::smtp::Client;
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A relay that delivers: MX lookups go to `dns`, MX hosts are reached on the sink's
/// port, and retries come after a second.
async fn relay(
    dns: &DnsServer,
    sink_port: u16,
    lifetime: &str,
    policy_extra: &str,
) -> common::Relay {
    let delivery = format!(
        "{{ allowPrivateDestinations: true, nameserver: \"{}\", mxPort: {sink_port}, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: {lifetime}, jitter: 0 }} }}",
        dns.addr
    );
    let config = common::config_yaml_with("{}", &delivery);
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: e2e}}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n{policy_extra}"
    );
    common::start_with(&config, &policy).await
}

fn zone() -> Zone {
    Zone::default()
        .mx("mx.test", 10, "mx1.mx.test")
        .addr("mx1.mx.test", "127.0.0.1")
        .mx("sender.test", 10, "mx1.mx.test")
        .mx("null.test", 0, ".")
}

async fn send(relay: &common::Relay, from: &str, to: &[&str], content: &[u8]) -> String {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd(&format!("MAIL FROM:<{from}> BODY=8BITMIME SMTPUTF8"), "250")
        .await;
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    c.cmd("DATA", "354").await;
    c.send(content).await;
    c.send(b".\r\n").await;
    let reply = c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
    reply.rsplit(' ').next().unwrap().to_string()
}

/// The content after our Received header (its continuation lines start with a tab).
fn after_received(data: &[u8]) -> &[u8] {
    let text = data;
    let mut offset = 0;
    let mut first = true;
    while let Some(end) = text[offset..].windows(2).position(|w| w == b"\r\n") {
        let line = &text[offset..offset + end];
        if !(first && line.starts_with(b"Received: ") || !first && line.starts_with(b"\t")) {
            break;
        }
        first = false;
        offset += end + 2;
    }
    &text[offset..]
}

async fn queue_is_empty(relay: &common::Relay) -> bool {
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = format!("GET /queue HTTP/1.1\r\nHost: {}\r\n\r\n", relay.admin);
        s.write_all(head.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        if text.ends_with("[]\n") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const CONTENT: &[u8] =
    "Subject: e2e caf\u{e9}\r\n\r\n..a line that was dot-stuffed\r\n\u{1f4e8} 8-bit and UTF-8\r\n"
        .as_bytes();

#[tokio::test]
async fn mail_reaches_the_mx_byte_identical_apart_from_received() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(AcceptAll).await;
    let relay = relay(&dns, sink.addr.port(), "1h", "").await;
    // The client stuffs ".." for the line that starts with a dot; the wire form is CONTENT.
    send(
        &relay,
        "alice@sender.test",
        &["bob@mx.test", "j\u{f6}rg@mx.test"],
        CONTENT,
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "nothing delivered");
    let t = &got[0];
    assert_eq!(t.helo, "relay.test");
    assert!(
        t.mail_from.starts_with("MAIL FROM:<alice@sender.test>"),
        "{}",
        t.mail_from
    );
    assert!(
        t.mail_from.contains("SMTPUTF8") && t.mail_from.contains("BODY=8BITMIME"),
        "{}",
        t.mail_from
    );
    assert_eq!(t.rcpt_to.len(), 2);
    let unstuffed = "Subject: e2e caf\u{e9}\r\n\r\n.a line that was dot-stuffed\r\n\u{1f4e8} 8-bit and UTF-8\r\n";
    assert_eq!(after_received(&t.data), unstuffed.as_bytes());
    assert!(queue_is_empty(&relay).await);
}

struct FailFirst;
impl Replies for FailFirst {
    fn data(&self, _t: &Transaction, completed: usize) -> String {
        if completed == 0 {
            "451 4.3.0 try again later"
        } else {
            "250 2.0.0 Ok"
        }
        .into()
    }
}

#[tokio::test]
async fn a_451_is_retried_and_delivered_on_the_next_attempt() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(FailFirst).await;
    let relay = relay(&dns, sink.addr.port(), "1h", "").await;
    send(
        &relay,
        "alice@sender.test",
        &["bob@mx.test"],
        b"Subject: retry\r\n\r\nhi\r\n",
    )
    .await;
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "no second attempt");
    assert_eq!(got[0].data, got[1].data);
    assert!(queue_is_empty(&relay).await);
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Mx, DeliveryStatus::Deferred),
        1
    );
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Mx, DeliveryStatus::Sent),
        1
    );
}

struct RefuseBad;
impl Replies for RefuseBad {
    fn rcpt(&self, address: &str, _completed: usize) -> String {
        if address.contains("bad@") {
            "550 5.1.1 <bad@mx.test>: user unknown"
        } else {
            "250 2.1.5 Ok"
        }
        .into()
    }
}

const PARSE_DSN: &str = r#"
import email, sys
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status"
parts = list(msg.iter_parts())
assert parts[1].get_content_type() == "message/delivery-status", parts[1].get_content_type()
status = parts[1].as_string()
print("Action: failed" in status, "Status: 5.1.1" in status, "Final-Recipient: rfc822; bad@mx.test" in status)
"#;

#[tokio::test]
async fn a_550_bounces_only_that_recipient_with_a_dsn_python_reads() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(RefuseBad).await;
    let relay = relay(&dns, sink.addr.port(), "1h", "").await;
    send(
        &relay,
        "alice@sender.test",
        &["good@mx.test", "bad@mx.test"],
        b"Subject: partial\r\n\r\nhi\r\n",
    )
    .await;
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "expected the message and its bounce: {got:?}");
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<good@mx.test>"]);
    let dsn = &got[1];
    assert!(
        dsn.mail_from.starts_with("MAIL FROM:<>"),
        "{}",
        dsn.mail_from
    );
    assert!(
        dsn.rcpt_to[0].starts_with("RCPT TO:<alice@sender.test>"),
        "{:?}",
        dsn.rcpt_to
    );
    let parsed = python(PARSE_DSN, after_received(&dsn.data)).await;
    assert_eq!(parsed.trim(), "True True True");
    assert!(queue_is_empty(&relay).await);
}

async fn python(script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let (script, input) = (script.to_string(), input.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

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

#[tokio::test]
async fn a_message_deferred_past_its_lifetime_bounces_but_a_bounce_never_does() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(AlwaysLater).await;
    let relay = relay(&dns, sink.addr.port(), "3s", "").await;
    send(
        &relay,
        "alice@sender.test",
        &["bob@mx.test"],
        b"Subject: expires\r\n\r\nhi\r\n",
    )
    .await;
    send(
        &relay,
        "",
        &["bob@mx.test"],
        b"Subject: a bounce itself\r\n\r\nhi\r\n",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let dsn = loop {
        let got = sink.transactions();
        if let Some(t) = got.iter().find(|t| {
            t.mail_from.starts_with("MAIL FROM:<>")
                && t.data.windows(17).any(|w| w == b"multipart/report;")
        }) {
            break t.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DSN after expiry: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Status: 4.4.7") && text.contains("Action: failed"),
        "{text}"
    );
    assert!(
        queue_is_empty(&relay).await,
        "expired messages must leave the queue"
    );
    let bounces = sink
        .transactions()
        .iter()
        .filter(|t| t.rcpt_to.iter().any(|r| r.contains("alice@")))
        .count();
    assert_eq!(
        bounces, 1,
        "exactly one DSN, for alice's message, none for the null sender's"
    );
}

#[tokio::test]
async fn null_mx_fails_at_once_with_5_1_10() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(AcceptAll).await;
    let relay = relay(&dns, sink.addr.port(), "1h", "").await;
    send(
        &relay,
        "alice@sender.test",
        &["bob@null.test"],
        b"Subject: null mx\r\n\r\nhi\r\n",
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        got[0].mail_from.starts_with("MAIL FROM:<>") && text.contains("Status: 5.1.10"),
        "{text}"
    );
}

#[tokio::test]
async fn local_domains_go_to_their_maildir() {
    let dns = DnsServer::start(zone()).await;
    let sink = Sink::start(AcceptAll).await;
    let maildir = tempfile::tempdir().unwrap();
    let policy = format!(
        "  localDomains:\n    - domain: local.test\n      delivery: {{ maildir: {{ path: \"{}\" }} }}\n",
        maildir.path().display()
    );
    let relay = relay(&dns, sink.addr.port(), "1h", &policy).await;
    send(
        &relay,
        "alice@sender.test",
        &["Carol@local.test"],
        b"Subject: local\r\n\r\nhi\r\n",
    )
    .await;
    assert!(queue_is_empty(&relay).await);
    let new = maildir.path().join("carol").join("new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let content = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    assert!(content.starts_with(
        b"Return-Path: <alice@sender.test>\r\nDelivered-To: Carol@local.test\r\nReceived: "
    ));
    assert!(content.ends_with(b"\r\nSubject: local\r\n\r\nhi\r\n"));
    assert!(sink.transactions().is_empty());
}

#[tokio::test]
async fn an_unreachable_mx_passes_the_message_to_the_next_one() {
    // mx1 (preferred) is an address where nothing listens; mx2 is the sink.
    let zone = Zone::default()
        .mx("two.test", 10, "mx1.two.test")
        .mx("two.test", 20, "mx2.two.test")
        .addr("mx1.two.test", "127.0.0.3")
        .addr("mx2.two.test", "127.0.0.1")
        .mx("sender.test", 10, "mx2.two.test");
    let dns = DnsServer::start(zone).await;
    let sink = Sink::start(AcceptAll).await;
    let relay = relay(&dns, sink.addr.port(), "1h", "").await;
    send(
        &relay,
        "alice@sender.test",
        &["bob@two.test"],
        b"Subject: fallback\r\n\r\nhi\r\n",
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "not delivered through the second MX");
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<bob@two.test>"]);
    assert!(queue_is_empty(&relay).await);
}
