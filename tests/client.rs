//! The outbound SMTP/LMTP client against a scripted server on loopback, checking every
//! command it sends and its outcome for each reply, and against Postfix's smtp-sink.

mod common;

use common::scripted::{Peer, listen};
use sluice::delivery::Outcome;
use sluice::delivery::client::{ClientConfig, ClientError, Connection, Timeouts, TlsMode};
use sluice::envelope::{Envelope, QueueId};
use sluice::smtp::address::{Body, MailParams, Mailbox, Notify, Orcpt, Recipient, Ret};
use std::sync::Arc;
use std::time::Duration;

// The test binary's parts live beside it in tests/client/.
#[path = "client/failures.rs"]
mod failures;
#[path = "client/sink.rs"]
mod sink;
#[path = "client/tls.rs"]
mod tls;

fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "client.test".into(),
        tls: TlsMode::Disabled,
        tls_roots: Arc::new(rustls::RootCertStore::empty()),
        verify_certificates: true,
        credentials: None,
        timeouts: Timeouts::all(Duration::from_secs(10)),
        lmtp: false,
        tls_fallbacks: Default::default(),
    }
}

fn rcpt(address: &str) -> Recipient {
    let (local, domain) = address.split_once('@').unwrap();
    Recipient {
        address: Mailbox::new(local, domain),
        notify: None,
        orcpt: None,
    }
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("alice", "example.com")),
        params: MailParams::default(),
        recipients: recipients.iter().map(|r| rcpt(r)).collect(),
        received_at_ms: 0,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        authenticated_user: None,
        sender_trust: sluice::envelope::SenderTrust::Untrusted,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nHello\r\n";

/// (kind, status, reply) of an outcome, for compact assertions.
fn summary(o: &Outcome) -> (&'static str, &str, &str) {
    match o {
        Outcome::Delivered { reply, .. } => ("delivered", "", reply),
        Outcome::Deferred { reply, .. } => ("deferred", "", reply),
        Outcome::Failed { status, reply, .. } => ("failed", status, reply),
    }
}

/// A plain transaction, server side, for the tests that are about something else.
async fn accept_message(peer: &mut Peer, to: &str) -> Vec<u8> {
    peer.expect("MAIL FROM:<alice@example.com>").await;
    peer.send("250 2.1.0 Ok").await;
    peer.expect(&format!("RCPT TO:<{to}>")).await;
    peer.send("250 2.1.5 Ok").await;
    peer.expect("DATA").await;
    peer.send("354 End data with <CR><LF>.<CR><LF>").await;
    let content = peer.data().await;
    peer.send("250 2.0.0 Ok: queued as 1").await;
    content
}

#[tokio::test]
async fn delivers_with_every_parameter_and_a_stuffed_body() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        let keywords = ["PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8", "DSN"];
        p.greet_and_ehlo("EHLO", &keywords).await;
        // Pipelined: all commands arrive before any reply.
        let mail =
            "MAIL FROM:<alice@example.com> SIZE=48 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=q+2B1";
        p.expect(mail).await;
        p.expect(
            "RCPT TO:<jörg@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;j+C3+B6rg@example.org",
        )
        .await;
        p.expect("RCPT TO:<bob@example.org>").await;
        p.expect("DATA").await;
        p.send("250 2.1.0 Ok\n250 2.1.5 Ok\n250 2.1.5 Ok\n354 go ahead")
            .await;
        let content = p.data().await;
        p.send("250 2.0.0 Ok: queued as ABC").await;
        p.quit().await;
        content
    });
    let mut env = envelope(&["jörg@example.org", "bob@example.org"]);
    env.params = MailParams {
        body: Some(Body::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Headers),
        envid: Some("q+1".into()),
        ..MailParams::default()
    };
    env.recipients[0].notify = Some(Notify {
        failure: true,
        delay: true,
        ..Notify::default()
    });
    env.recipients[0].orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "jörg@example.org".into(),
    });
    let message = "Subject: caf\u{e9}\r\n\r\n.leading dot\r\n..two\r\nlast line".as_bytes();
    assert_eq!(message.len(), 48);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    assert_eq!(
        conn.remote(),
        format!("server.test[127.0.0.1]:{}", addr.port())
    );
    assert!(conn.extensions().pipelining && conn.extensions().dsn);
    let outcomes = conn.send(&env, &env.recipients, message).await.unwrap();
    let delivered = Outcome::Delivered {
        remote_mta: Some(conn.remote().to_string()),
        reply: "250 2.0.0 Ok: queued as ABC".into(),
        handoff: sluice::delivery::outcome::Handoff::NotifyPassedOn,
    };
    assert_eq!(outcomes, vec![delivered.clone(), delivered]);
    conn.quit().await;
    let content = server.await.unwrap();
    let want = "Subject: caf\u{e9}\r\n\r\n..leading dot\r\n...two\r\nlast line\r\n";
    assert_eq!(String::from_utf8(content).unwrap(), want);
}

#[tokio::test]
async fn deferred_by_451_then_delivered_on_the_next_attempt() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["8BITMIME"]).await;
        p.expect("MAIL FROM:<alice@example.com>").await;
        p.send("250 2.1.0 Ok").await;
        p.expect("RCPT TO:<bob@example.org>").await;
        p.send("451 4.7.1 Greylisted, try again later").await;
        // No recipient: no DATA, and the client ends the session.
        p.quit().await;
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["8BITMIME"]).await;
        accept_message(&mut p, "bob@example.org").await;
        p.quit().await;
    });
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let first = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert_eq!(
        first.iter().map(summary).collect::<Vec<_>>(),
        [("deferred", "", "451 4.7.1 Greylisted, try again later")]
    );
    conn.quit().await;
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let second = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert!(second[0].is_delivered(), "{second:?}");
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn one_recipient_of_two_rejected() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &[]).await;
        p.expect("MAIL FROM:<alice@example.com>").await;
        p.send("250 2.1.0 Ok").await;
        p.expect("RCPT TO:<bob@example.org>").await;
        p.send("550-5.1.1 <bob@example.org>:\n550 5.1.1 user unknown")
            .await;
        p.expect("RCPT TO:<carol@example.org>").await;
        p.send("250 2.1.5 Ok").await;
        p.expect("DATA").await;
        p.send("354 go").await;
        assert_eq!(p.data().await, MESSAGE);
        p.send("250 2.0.0 Ok").await;
    });
    let env = envelope(&["bob@example.org", "carol@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert_eq!(
        outcomes.iter().map(summary).collect::<Vec<_>>(),
        [
            (
                "failed",
                "5.1.1",
                "550 5.1.1 <bob@example.org>: user unknown"
            ),
            ("delivered", "", "250 2.0.0 Ok"),
        ]
    );
    server.await.unwrap();
}

#[tokio::test]
async fn rejected_at_end_of_data_fails_everyone() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["PIPELINING"]).await;
        for line in [
            "MAIL FROM:<alice@example.com>",
            "RCPT TO:<a@example.org>",
            "RCPT TO:<b@example.org>",
            "DATA",
        ] {
            p.expect(line).await;
        }
        p.send("250 Ok\n250 Ok\n250 Ok\n354 go").await;
        p.data().await;
        p.send("552 5.3.4 Message too big for this mailbox").await;
    });
    let env = envelope(&["a@example.org", "b@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    let failed = (
        "failed",
        "5.3.4",
        "552 5.3.4 Message too big for this mailbox",
    );
    assert_eq!(
        outcomes.iter().map(summary).collect::<Vec<_>>(),
        [failed, failed]
    );
    server.await.unwrap();
}

#[tokio::test]
async fn pipelined_with_every_recipient_rejected_sends_no_content() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &["PIPELINING"]).await;
        for line in [
            "MAIL FROM:<alice@example.com>",
            "RCPT TO:<a@example.org>",
            "DATA",
        ] {
            p.expect(line).await;
        }
        p.send("250 Ok\n550 5.1.1 no such user\n554 5.5.1 Error: no valid recipients")
            .await;
        p.expect("RSET").await;
        p.send("250 2.0.0 Ok").await;
    });
    let env = envelope(&["a@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert_eq!(
        summary(&outcomes[0]),
        ("failed", "5.1.1", "550 5.1.1 no such user")
    );
    conn.reset().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn lmtp_over_a_unix_socket_gives_one_reply_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept_unix(&listener).await;
        p.greet_and_ehlo("LHLO", &["PIPELINING", "ENHANCEDSTATUSCODES"])
            .await;
        for line in [
            "MAIL FROM:<alice@example.com>",
            "RCPT TO:<a@local.test>",
            "RCPT TO:<b@local.test>",
            "RCPT TO:<c@local.test>",
            "DATA",
        ] {
            p.expect(line).await;
        }
        p.send("250 2.1.0 Ok\n250 2.1.5 Ok\n550 5.1.1 no such user\n250 2.1.5 Ok\n354 go")
            .await;
        p.data().await;
        // One reply per accepted recipient, in RCPT order (RFC 2033 4.2).
        p.send("250 2.0.0 <a@local.test> delivered\n452 4.2.2 <c@local.test> mailbox full")
            .await;
        p.quit().await;
    });
    let mut cfg = config();
    cfg.lmtp = true;
    let env = envelope(&["a@local.test", "b@local.test", "c@local.test"]);
    let mut conn = Connection::connect_unix(&path, &cfg).await.unwrap();
    assert_eq!(conn.remote(), format!("unix:{}", path.display()));
    let outcomes = conn.send(&env, &env.recipients, MESSAGE).await.unwrap();
    assert_eq!(
        outcomes.iter().map(summary).collect::<Vec<_>>(),
        [
            ("delivered", "", "250 2.0.0 <a@local.test> delivered"),
            ("failed", "5.1.1", "550 5.1.1 no such user"),
            ("deferred", "", "452 4.2.2 <c@local.test> mailbox full"),
        ]
    );
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn two_messages_over_one_connection_with_rset_between() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &[]).await;
        let first = accept_message(&mut p, "bob@example.org").await;
        p.expect("RSET").await;
        p.send("250 2.0.0 Ok").await;
        let second = accept_message(&mut p, "carol@example.org").await;
        p.quit().await;
        (first, second)
    });
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let env = envelope(&["bob@example.org"]);
    assert!(conn.send(&env, &env.recipients, b"one").await.unwrap()[0].is_delivered());
    conn.reset().await.unwrap();
    let env = envelope(&["carol@example.org"]);
    assert!(conn.send(&env, &env.recipients, b"two\r\n").await.unwrap()[0].is_delivered());
    conn.quit().await;
    assert_eq!(
        server.await.unwrap(),
        (b"one\r\n".to_vec(), b"two\r\n".to_vec())
    );
}

#[tokio::test]
async fn helo_when_ehlo_is_not_understood_and_a_554_greeting_is_an_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.send("220 old.test SMTP").await;
        p.expect("EHLO client.test").await;
        p.send("502 5.5.2 Error: command not recognized").await;
        p.expect("HELO client.test").await;
        p.send("250 old.test").await;
        accept_message(&mut p, "bob@example.org").await;
        p.quit().await;
        let mut p = Peer::accept(&listener).await;
        p.send("554 5.7.1 No SMTP service here").await;
        p.quit().await;
    });
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "old.test", &config())
        .await
        .unwrap();
    assert_eq!(conn.extensions(), &Default::default());
    assert!(conn.send(&env, &env.recipients, MESSAGE).await.unwrap()[0].is_delivered());
    conn.quit().await;
    let err = Connection::connect(addr, "old.test", &config())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                command: "greeting",
                ..
            }
        ),
        "{err:?}"
    );
    // This host refuses service; the caller tries the next MX.
    assert!(!err.is_permanent());
    assert_eq!(
        err.to_outcome(None).reply(),
        "554 5.7.1 No SMTP service here"
    );
    server.await.unwrap();
}
