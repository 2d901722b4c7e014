//! STARTTLS, implicit TLS and AUTH against a rustls server with an rcgen certificate.

use super::*;
use common::scripted::{tls_pair, tls_pair_for};

#[tokio::test]
async fn required_starttls_not_offered_defers() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["8BITMIME"]).await;
        // The client leaves without sending anything else, credentials least of all.
        assert_eq!(p.line().await, None);
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    cfg.credentials = Some(("user".into(), "pw".into()));
    let err = Connection::connect(addr, "server.test", &cfg)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::StarttlsNotOffered { .. }),
        "{err:?}"
    );
    let outcome = err.to_outcome(None);
    assert!(
        matches!(&outcome, Outcome::Deferred { reply, .. } if reply.contains("STARTTLS not offered"))
    );
    server.await.unwrap();
}

#[tokio::test]
async fn credentials_are_never_sent_in_clear() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["AUTH PLAIN LOGIN"]).await;
        assert_eq!(p.line().await, None);
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    cfg.credentials = Some(("user".into(), "pw".into()));
    let err = Connection::connect(addr, "server.test", &cfg)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::AuthWithoutTls { .. }), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn starttls_then_auth_plain_then_delivery() {
    use base64::Engine;
    let (acceptor, roots) = tls_pair();
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["STARTTLS", "PIPELINING"]).await;
        let mut p = p.starttls(&acceptor).await;
        p.ehlo("EHLO", &["AUTH LOGIN PLAIN", "8BITMIME"]).await;
        let line = p.line().await.unwrap();
        let token = line
            .strip_prefix("AUTH PLAIN ")
            .expect("AUTH PLAIN with initial response");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        assert_eq!(decoded, b"\0smart-user\0pass word");
        p.send("235 2.7.0 Authentication successful").await;
        accept_message(&mut p, "bob@example.org").await
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    cfg.tls_roots = Arc::new(roots);
    cfg.credentials = Some(("smart-user".into(), "pass word".into()));
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "localhost", &cfg).await.unwrap();
    assert!(conn.is_encrypted());
    // The extensions are those announced over TLS.
    assert!(!conn.extensions().starttls && conn.extensions().eight_bit_mime);
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert!(outcomes[0].is_delivered(), "{outcomes:?}");
    assert_eq!(server.await.unwrap(), MESSAGE);
}

#[tokio::test]
async fn unverifiable_certificate_fails_when_required_and_passes_opportunistically() {
    let (acceptor, _roots) = tls_pair();
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        // Required and verifying: the handshake fails, nothing follows.
        // Opportunistic and verifying: the handshake fails, the client comes back in
        // plaintext and leaves STARTTLS alone. Opportunistic without verifying: TLS.
        for round in 0..3 {
            let mut p = Peer::accept(&listener).await;
            p.greet_and_ehlo("EHLO", &["STARTTLS"]).await;
            p.expect("STARTTLS").await;
            p.send("220 2.0.0 Ready").await;
            match Peer::starttls_after_reply(p, &acceptor).await {
                Some(mut p) => {
                    assert_eq!(round, 2, "the client accepted an unverifiable certificate");
                    p.ehlo("EHLO", &[]).await;
                    p.quit().await;
                }
                None if round == 1 => {
                    let mut p = Peer::accept(&listener).await;
                    p.greet_and_ehlo("EHLO", &["STARTTLS"]).await;
                    p.quit().await;
                }
                None => assert_eq!(round, 0),
            }
        }
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    let err = Connection::connect(addr, "localhost", &cfg)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    cfg.tls = TlsMode::Opportunistic;
    let conn = Connection::connect(addr, "localhost", &cfg).await.unwrap();
    assert!(!conn.is_encrypted());
    conn.quit().await;
    cfg.verify_certificates = false;
    let conn = Connection::connect(addr, "localhost", &cfg).await.unwrap();
    assert!(conn.is_encrypted());
    conn.quit().await;
    server.await.unwrap();
    assert_eq!(cfg.tls_fallbacks.get(), 1);
}

#[tokio::test]
async fn a_failed_opportunistic_handshake_falls_back_to_plaintext_on_a_new_connection() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["STARTTLS", "8BITMIME"]).await;
        p.starttls_then_garbage().await;
        // The second connection still offers STARTTLS; the client does not take it.
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["STARTTLS", "8BITMIME"]).await;
        let content = accept_message(&mut p, "bob@example.org").await;
        p.quit().await;
        content
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    // As for MX delivery: any certificate would do, the handshake itself fails.
    cfg.verify_certificates = false;
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "mx.example.org", &cfg)
        .await
        .unwrap();
    assert!(!conn.is_encrypted());
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert!(outcomes[0].is_delivered(), "{outcomes:?}");
    conn.quit().await;
    assert_eq!(server.await.unwrap(), MESSAGE);
    assert_eq!(cfg.tls_fallbacks.get(), 1);
}

#[tokio::test]
async fn required_and_implicit_tls_never_fall_back() {
    let (listener, addr) = listen().await;
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["STARTTLS"]).await;
        p.starttls_then_garbage().await;
        listener
    });
    let err = Connection::connect(addr, "localhost", &cfg)
        .await
        .err()
        .unwrap();
    assert!(err.is_tls_handshake_failure(), "{err:?}");
    let listener = server.await.unwrap();
    // Had the client come back, its connection would be waiting: `connect` has returned.
    let again = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        again.is_err(),
        "the client reconnected after a required handshake failed"
    );

    // Implicit TLS to a server that speaks plaintext SMTP: no second connection either.
    cfg.tls = TlsMode::Implicit;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.send("220 server.test ESMTP plaintext only").await;
        // Kept open until the client has given up on it.
        (listener, p)
    });
    let err = Connection::connect(addr, "localhost", &cfg)
        .await
        .err()
        .unwrap();
    assert!(err.is_tls_handshake_failure(), "{err:?}");
    let (listener, _peer) = server.await.unwrap();
    let again = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        again.is_err(),
        "the client reconnected after implicit TLS failed"
    );
    assert_eq!(cfg.tls_fallbacks.get(), 0);
}

/// Connects with STARTTLS required to a server whose certificate names only
/// `cert_names`, as the delivery to `destination` would, verifying the certificate.
/// Returns the connection, the server's address and its task.
async fn verified_starttls(
    cert_names: &[&str],
    destination: &str,
) -> (
    Connection,
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
) {
    let (acceptor, roots) = tls_pair_for(cert_names);
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["STARTTLS"]).await;
        let mut p = p.starttls(&acceptor).await;
        p.ehlo("EHLO", &[]).await;
        p.quit().await;
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    cfg.tls_roots = Arc::new(roots);
    let conn = Connection::connect(addr, destination, &cfg).await.unwrap();
    (conn, addr, server)
}

#[tokio::test]
async fn an_address_literal_is_verified_as_an_ip_address() {
    let (conn, addr, server) = verified_starttls(&["127.0.0.1"], "[127.0.0.1]").await;
    assert!(conn.is_encrypted());
    assert_eq!(
        conn.remote(),
        format!("[127.0.0.1][127.0.0.1]:{}", addr.port())
    );
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn an_internationalised_name_is_verified_by_its_a_label() {
    let (conn, _, server) = verified_starttls(&["xn--bcher-kva.example"], "bücher.example").await;
    assert!(conn.is_encrypted());
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn implicit_tls_from_the_first_byte() {
    let (acceptor, roots) = tls_pair();
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept_tls(&listener, &acceptor).await;
        p.greet_and_ehlo("EHLO", &["AUTH PLAIN"]).await;
        p.expect(&format!("AUTH PLAIN {}", "AHUAcA==")).await;
        p.send("235 2.7.0 Ok").await;
        accept_message(&mut p, "bob@example.org").await;
        p.quit().await;
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Implicit;
    cfg.tls_roots = Arc::new(roots);
    cfg.credentials = Some(("u".into(), "p".into()));
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "localhost", &cfg).await.unwrap();
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert!(outcomes[0].is_delivered(), "{outcomes:?}");
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn auth_login_when_plain_is_not_offered_and_535_defers() {
    let (acceptor, roots) = tls_pair();
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept_tls(&listener, &acceptor).await;
        p.greet_and_ehlo("EHLO", &["AUTH LOGIN CRAM-MD5"]).await;
        p.expect("AUTH LOGIN").await;
        p.send("334 VXNlcm5hbWU6").await;
        p.expect("dQ==").await;
        p.send("334 UGFzc3dvcmQ6").await;
        p.expect("cA==").await;
        p.send("535 5.7.8 Authentication credentials invalid").await;
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Implicit;
    cfg.tls_roots = Arc::new(roots);
    cfg.credentials = Some(("u".into(), "p".into()));
    let err = Connection::connect(addr, "localhost", &cfg)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                command: "AUTH",
                ..
            }
        ),
        "{err:?}"
    );
    // Wrong smarthost credentials: the mail waits for an administrator, it does not bounce.
    let outcome = err.to_outcome(None);
    assert_eq!(
        outcome,
        Outcome::Deferred {
            remote_mta: None,
            reply: "535 5.7.8 Authentication credentials invalid".into(),
        }
    );
    assert!(!format!("{err} {err:?}").contains("cA=="));
    server.await.unwrap();
}
