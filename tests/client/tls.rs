//! STARTTLS, implicit TLS and AUTH against a rustls server with an rcgen certificate.

use super::*;
use common::scripted::tls_pair;

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
async fn unverifiable_certificate_fails_when_verifying_and_passes_opportunistically() {
    let (acceptor, _roots) = tls_pair();
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let mut p = Peer::accept(&listener).await;
            p.greet_and_ehlo("EHLO", &["STARTTLS"]).await;
            p.expect("STARTTLS").await;
            p.send("220 2.0.0 Ready").await;
            let p = Peer::starttls_after_reply(p, &acceptor).await;
            if let Some(mut p) = p {
                p.ehlo("EHLO", &[]).await;
                p.quit().await;
            }
        }
    });
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let err = Connection::connect(addr, "localhost", &cfg)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    cfg.verify_certificates = false;
    let conn = Connection::connect(addr, "localhost", &cfg).await.unwrap();
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
