//! A `starttls-required` smarthost with credentials from the secrets directory: a
//! scripted server whose certificate the relay trusts through `delivery.caFile`.

use super::*;
use common::scripted::{Peer, listen};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::sync::{Arc, Mutex};
use tokio_rustls::TlsAcceptor;

/// A server certificate for the IP address 127.0.0.1 (the route's host), and its PEM for
/// `delivery.caFile`.
fn tls_for_loopback() -> (TlsAcceptor, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), cert.cert.pem())
}

const USER: &str = "relay@provider.test";
const PASSWORD: &str = "s3cret pass\u{e9}";

/// A relay with a `*` route to 127.0.0.1:`port`, `starttls-required`, credentials in
/// the Secret `provider`, and `ca_pem` as its extra CA.
async fn relay_to(port: u16, ca_pem: &str, secrets: &Path) -> common::Relay {
    write_secret(secrets, "provider", "username", USER);
    write_secret(secrets, "provider", "password", PASSWORD);
    let ca = secrets.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let delivery = format!(
        "secretsDir: \"{}\", caFile: \"{}\",",
        secrets.display(),
        ca.display()
    );
    let credentials =
        ", credentialsSecretRef: { name: provider, usernameKey: username, passwordKey: password }";
    relay(
        &delivery,
        &star_route(port, "starttls-required", credentials),
    )
    .await
}

const MESSAGE: &[u8] = b"Subject: via the provider\r\n\r\nhello\r\n";

#[tokio::test]
async fn starttls_then_auth_with_the_secret_credentials_then_the_message() {
    let (listener, addr) = listen().await;
    let (acceptor, ca_pem) = tls_for_loopback();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.send("220 provider.test ESMTP").await;
        p.expect("EHLO relay.test").await;
        // AUTH is offered in clear too: the relay must still not use it before TLS.
        p.send("250-provider.test\n250-AUTH PLAIN LOGIN\n250 STARTTLS")
            .await;
        let mut p = p.starttls(&acceptor).await;
        p.expect("EHLO relay.test").await;
        p.send("250-provider.test\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250 AUTH PLAIN LOGIN")
            .await;
        let auth = p.line().await.expect("AUTH");
        let token = auth.strip_prefix("AUTH PLAIN ").expect(&auth);
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        p.send("235 2.7.0 Authentication successful").await;
        p.expect("MAIL FROM:<alice@sender.test>").await;
        p.send("250 2.1.0 Ok").await;
        p.expect("RCPT TO:<bob@far.test>").await;
        p.send("250 2.1.5 Ok").await;
        p.expect("DATA").await;
        p.send("354 go ahead").await;
        let content = p.data().await;
        p.send("250 2.0.0 Ok: queued as P1").await;
        (decoded, content)
    });
    let secrets = tempfile::tempdir().unwrap();
    let relay = relay_to(addr.port(), &ca_pem, secrets.path()).await;
    // The relay's client authenticates with nothing (its network is trusted)...
    send(&relay, "alice@sender.test", "", &["bob@far.test"], MESSAGE).await;
    let (decoded, content) = tokio::time::timeout(WAIT, server)
        .await
        .expect("the smarthost gets the message")
        .unwrap();
    // ...and the hop gets the provider's credentials, from the Secret, without the
    // newline the files end with.
    assert_eq!(decoded, format!("\0{USER}\0{PASSWORD}").into_bytes());
    assert_eq!(after_received(&content), MESSAGE);
    wait_until_queue_is_empty(&relay).await;
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Smarthost, DeliveryStatus::Sent),
        1
    );
}

#[tokio::test]
async fn a_smarthost_without_starttls_gets_no_mail_on_a_required_route() {
    let (listener, addr) = listen().await;
    let (_, ca_pem) = tls_for_loopback();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let server = tokio::spawn(async move {
        // Every attempt: greet, offer everything but STARTTLS, and record what follows.
        loop {
            let mut p = Peer::accept(&listener).await;
            p.send("220 provider.test ESMTP").await;
            p.expect("EHLO relay.test").await;
            p.send("250-provider.test\n250-PIPELINING\n250-8BITMIME\n250 AUTH PLAIN LOGIN")
                .await;
            while let Some(line) = p.line().await {
                log.lock().unwrap().push(line.clone());
                if line == "QUIT" {
                    p.send("221 2.0.0 Bye").await;
                } else {
                    p.send("250 2.0.0 Ok").await;
                }
            }
        }
    });
    let secrets = tempfile::tempdir().unwrap();
    let relay = relay_to(addr.port(), &ca_pem, secrets.path()).await;
    let id = send(&relay, "alice@sender.test", "", &["bob@far.test"], MESSAGE).await;
    let last_error = deferred_with(&relay, &id).await;
    assert!(last_error.contains("STARTTLS"), "{last_error}");
    // Still queued after the retry a second later, and still nothing sent.
    wait_for_queue(&relay, "a second attempt", |q| {
        q.iter()
            .any(|e| {
                e["envelope"]["id"] == id.as_str() && e["envelope"]["attempts"].as_u64() >= Some(2)
            })
            .then_some(())
    })
    .await;
    server.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| l == "QUIT"),
        "the relay sent more than QUIT: {seen:?}"
    );
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Smarthost, DeliveryStatus::Sent),
        0
    );
}
