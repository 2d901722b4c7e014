//! End to end through `sluice standalone`: TLS towards the next hop. STARTTLS to an
//! address literal and to an internationalised domain's implicit MX, and what happens
//! when the handshake fails: an opportunistic hop gets the message in plaintext on a new
//! connection (as Postfix does at `smtp_tls_security_level = may`), a `starttls-required`
//! one never does.

mod common;

use common::dns::{DnsServer, Zone};
use common::scripted::{Peer, listen, tls_pair_for};
use common::smtp::Client;
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The bound on every wait for the relay to do something.
const WAIT: Duration = Duration::from_secs(20);

const MESSAGE: &[u8] = b"Subject: tls\r\n\r\nhello\r\n";

/// A relay that delivers: MX lookups go to `dns`, MX hosts are reached on `mx_port`,
/// retries come after a second. 127.0.0.1 is trusted, so the test client relays without
/// authenticating, also to address literals. `policy_extra` is more lines of the
/// policy's `spec:`.
async fn relay(dns: &DnsServer, mx_port: u16, policy_extra: &str) -> common::Relay {
    let delivery = format!(
        "{{ allowPrivateDestinations: true, nameserver: \"{}\", mxPort: {mx_port}, connectTimeout: 5s, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 }} }}",
        dns.addr
    );
    let config = common::config_yaml_with("{}", &delivery);
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: tls}}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n  addressLiterals: allow\n{policy_extra}"
    );
    common::start_with(&config, &policy).await
}

/// The policy lines of a `*` route to a smarthost on loopback with the TLS mode `tls`.
fn star_route(port: u16, tls: &str) -> String {
    format!(
        "  routes:\n    - domains: [\"*\"]\n      smarthost: {{ host: 127.0.0.1, port: {port}, tls: {tls} }}\n"
    )
}

async fn send(relay: &common::Relay, to: &str) {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<alice@sender.test> SMTPUTF8", "250").await;
    c.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    c.cmd("DATA", "354").await;
    c.send(MESSAGE).await;
    c.send(b".\r\n").await;
    c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
}

/// The server's side of one transaction to `rcpt`, after EHLO; returns the content.
async fn take_message(p: &mut Peer, rcpt: &str) -> Vec<u8> {
    // BODY=8BITMIME when our Received header names a UTF-8 recipient.
    let mail = p.line().await.expect("MAIL FROM");
    assert!(mail.starts_with("MAIL FROM:<alice@sender.test>"), "{mail}");
    p.send("250 2.1.0 Ok").await;
    p.expect(&format!("RCPT TO:<{rcpt}>")).await;
    p.send("250 2.1.5 Ok").await;
    p.expect("DATA").await;
    p.send("354 go ahead").await;
    let content = p.data().await;
    p.send("250 2.0.0 Ok: queued as T1").await;
    content
}

/// Greets and answers the relay's EHLO with `keywords`.
async fn greet(p: &mut Peer, keywords: &[&str]) {
    p.send("220 next-hop.test ESMTP").await;
    p.expect("EHLO relay.test").await;
    let mut lines = vec!["next-hop.test"];
    lines.extend(keywords);
    let last = lines.len() - 1;
    let reply: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
        .collect();
    p.send(&reply.join("\n")).await;
}

/// One connection over STARTTLS with a certificate for `san`, taking one message.
fn tls_hop(listener: TcpListener, san: &str, rcpt: &str) -> tokio::task::JoinHandle<Vec<u8>> {
    let (acceptor, _) = tls_pair_for(&[san]);
    let rcpt = rcpt.to_string();
    tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        greet(&mut p, &["STARTTLS"]).await;
        let mut p = p.starttls(&acceptor).await;
        p.expect("EHLO relay.test").await;
        p.send("250-next-hop.test\n250-8BITMIME\n250 SMTPUTF8")
            .await;
        // The relay keeps the connection for the next message: no QUIT to wait for.
        take_message(&mut p, &rcpt).await
    })
}

async fn wait_for<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the next hop gets the message in time")
        .expect("the next hop saw what it expected")
}

#[tokio::test]
async fn starttls_to_an_address_literal() {
    let dns = DnsServer::start(Zone::default()).await;
    let (listener, addr) = listen().await;
    let hop = tls_hop(listener, "127.0.0.1", "bob@[127.0.0.1]");
    let relay = relay(&dns, addr.port(), "").await;
    send(&relay, "bob@[127.0.0.1]").await;
    let content = wait_for(hop).await;
    assert!(content.ends_with(MESSAGE));
    let running = relay.running.as_ref().unwrap();
    assert_eq!(running.metrics.delivery_tls_fallbacks.get(), 0);
}

#[tokio::test]
async fn starttls_to_the_implicit_mx_of_an_internationalised_domain() {
    // No MX: the domain's own address is its one host (RFC 5321 5.1).
    let dns = DnsServer::start(Zone::default().addr("xn--bcher-kva.test", "127.0.0.1")).await;
    let (listener, addr) = listen().await;
    let hop = tls_hop(listener, "xn--bcher-kva.test", "bob@bücher.test");
    let relay = relay(&dns, addr.port(), "").await;
    send(&relay, "bob@bücher.test").await;
    let content = wait_for(hop).await;
    assert!(content.ends_with(MESSAGE));
}

#[tokio::test]
async fn an_mx_whose_handshake_fails_gets_the_message_in_plaintext() {
    let dns = DnsServer::start(Zone::default()).await;
    let (listener, addr) = listen().await;
    let hop = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        greet(&mut p, &["STARTTLS"]).await;
        p.starttls_then_garbage().await;
        // Still offered on the second connection, and left alone.
        let mut p = Peer::accept(&listener).await;
        greet(&mut p, &["STARTTLS", "SMTPUTF8"]).await;
        take_message(&mut p, "bob@[127.0.0.1]").await
    });
    let relay = relay(&dns, addr.port(), "").await;
    send(&relay, "bob@[127.0.0.1]").await;
    let content = wait_for(hop).await;
    assert!(content.ends_with(MESSAGE));
    let running = relay.running.as_ref().unwrap();
    let fallbacks = &running.metrics.delivery_tls_fallbacks;
    assert_eq!(fallbacks.get(), 1);
}

#[tokio::test]
async fn an_opportunistic_route_with_an_untrusted_certificate_gets_it_in_plaintext() {
    let dns = DnsServer::start(Zone::default()).await;
    let (listener, addr) = listen().await;
    // A certificate for the right address, from a CA the relay does not trust.
    let (acceptor, _) = tls_pair_for(&["127.0.0.1"]);
    let hop = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        greet(&mut p, &["STARTTLS"]).await;
        p.expect("STARTTLS").await;
        p.send("220 2.0.0 Ready").await;
        let refused = Peer::starttls_after_reply(p, &acceptor).await;
        assert!(
            refused.is_none(),
            "the relay accepted an untrusted certificate"
        );
        let mut p = Peer::accept(&listener).await;
        greet(&mut p, &["STARTTLS", "SMTPUTF8"]).await;
        take_message(&mut p, "bob@far.test").await
    });
    let relay = relay(&dns, 9, &star_route(addr.port(), "opportunistic")).await;
    send(&relay, "bob@far.test").await;
    let content = wait_for(hop).await;
    assert!(content.ends_with(MESSAGE));
}

#[tokio::test]
async fn a_required_route_whose_handshake_fails_is_deferred_and_never_sent_in_clear() {
    let dns = DnsServer::start(Zone::default()).await;
    let (listener, addr) = listen().await;
    let attempts = Arc::new(Mutex::new(0usize));
    let seen = attempts.clone();
    let hop = tokio::spawn(async move {
        // Every connection: STARTTLS offered, its handshake broken; the relay must never
        // come back to talk in plaintext (a second greeting would read its EHLO first).
        loop {
            let mut p = Peer::accept(&listener).await;
            greet(&mut p, &["STARTTLS", "SMTPUTF8"]).await;
            p.starttls_then_garbage().await;
            *seen.lock().unwrap() += 1;
        }
    });
    let relay = relay(&dns, 9, &star_route(addr.port(), "starttls-required")).await;
    send(&relay, "bob@far.test").await;
    // Two attempts, a retry apart, each one connection that ended in the handshake.
    let deadline = tokio::time::Instant::now() + WAIT;
    while *attempts.lock().unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second attempt");
        assert!(!hop.is_finished(), "the next hop saw something unexpected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Smarthost, DeliveryStatus::Sent),
        0
    );
    assert_eq!(running.metrics.delivery_tls_fallbacks.get(), 0);
    let queued = relay.stop_and_list().await;
    assert_eq!(queued.len(), 1, "the message is still queued");
    let last_error = queued[0].0.envelope.last_error.clone().unwrap_or_default();
    assert!(last_error.contains("TLS"), "{last_error}");
    hop.abort();
}
