//! Timeouts, dropped connections, and messages refused locally because the server
//! lacks an extension they need.

use super::*;

#[tokio::test]
async fn slow_reply_times_out() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &[]).await;
        p.expect("MAIL FROM:<alice@example.com>").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.send("250 Ok, too late").await;
    });
    let mut cfg = config();
    cfg.timeouts.mail = Duration::from_millis(300);
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &cfg)
        .await
        .unwrap();
    let err = conn.send(&env, &env.recipients, MESSAGE).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { command: "MAIL", duration } if duration == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(matches!(err.to_outcome(None), Outcome::Deferred { .. }));
    // The late reply must never be read as the answer to something else.
    let again = conn.send(&env, &env.recipients, MESSAGE).await.unwrap_err();
    assert!(matches!(again, ClientError::Broken { .. }), "{again:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn connection_dropped_mid_data_is_an_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", &[]).await;
        p.expect("MAIL FROM:<alice@example.com>").await;
        p.send("250 Ok").await;
        p.expect("RCPT TO:<bob@example.org>").await;
        p.send("250 Ok").await;
        p.expect("DATA").await;
        p.send("354 go").await;
        p.read_exact(10).await;
        // Dropping the peer closes the connection before the final dot.
    });
    let env = envelope(&["bob@example.org"]);
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let err = conn.send(&env, &env.recipients, MESSAGE).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { .. } | ClientError::Io { .. }),
        "{err:?}"
    );
    let outcome = err.to_outcome(Some(conn.remote().to_string()));
    assert!(matches!(outcome, Outcome::Deferred { .. }), "{outcome:?}");
    server.await.unwrap();
}

/// A server announcing `keywords` that must see no MAIL: the client refuses locally.
async fn refused_locally(
    keywords: &'static [&'static str],
    env: Envelope,
    message: &[u8],
) -> Outcome {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.greet_and_ehlo("EHLO", keywords).await;
        p.quit().await;
    });
    let mut conn = Connection::connect(addr, "server.test", &config())
        .await
        .unwrap();
    let mut outcomes = conn.send(&env, &env.recipients, message).await.unwrap();
    conn.quit().await;
    server.await.unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[tokio::test]
async fn eight_bit_message_to_a_seven_bit_server_fails_with_5_6_3() {
    let message = "Subject: \u{fc}ber\r\n\r\nhi\r\n".as_bytes();
    let outcome = refused_locally(&["SIZE 1000"], envelope(&["bob@example.org"]), message).await;
    let (kind, status, reply) = summary(&outcome);
    assert_eq!((kind, status), ("failed", "5.6.3"));
    assert!(reply.contains("8BITMIME"), "{reply}");
}

#[tokio::test]
async fn utf8_address_without_smtputf8_fails_with_5_6_7() {
    let outcome = refused_locally(&["8BITMIME"], envelope(&["jörg@example.org"]), MESSAGE).await;
    assert_eq!(summary(&outcome).1, "5.6.7");
}

#[tokio::test]
async fn message_over_the_size_limit_fails_with_5_3_4() {
    let outcome = refused_locally(&["SIZE 10"], envelope(&["bob@example.org"]), MESSAGE).await;
    assert_eq!(summary(&outcome).1, "5.3.4");
}
