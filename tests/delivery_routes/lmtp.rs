//! A local domain delivered by LMTP (RFC 2033): one reply per recipient after the
//! final dot, each settling its own recipient.

use super::*;
use common::scripted::{Peer, listen};
use common::sink::{AcceptAll, Sink};
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};

#[tokio::test]
async fn lmtp_replies_settle_each_recipient_and_the_refused_one_bounces() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&listener).await;
        p.send("220 lmtp.test LMTP ready").await;
        p.expect("LHLO relay.test").await;
        p.send("250-lmtp.test\n250-8BITMIME\n250 ENHANCEDSTATUSCODES")
            .await;
        p.expect("MAIL FROM:<alice@sender.test>").await;
        p.send("250 2.1.0 Ok").await;
        p.expect("RCPT TO:<good@lmtp.test>").await;
        p.send("250 2.1.5 Ok").await;
        p.expect("RCPT TO:<bad@lmtp.test>").await;
        p.send("250 2.1.5 Ok").await;
        p.expect("DATA").await;
        p.send("354 go ahead").await;
        let content = p.data().await;
        p.send("250 2.0.0 <good@lmtp.test> delivered\n550 5.1.1 <bad@lmtp.test> user unknown")
            .await;
        content
    });
    // The sender's domain goes to a capturing sink, which gets the bounce.
    let sink = Sink::start(AcceptAll).await;
    let policy = format!(
        "  localDomains:\n    - domain: lmtp.test\n      delivery: {{ lmtp: {{ address: \"{addr}\" }} }}\n{}",
        star_route(sink.addr.port(), "opportunistic", "")
    );
    let relay = relay("", &policy).await;
    let message = b"Subject: two mailboxes\r\n\r\nhi\r\n";
    send(
        &relay,
        "alice@sender.test",
        "",
        &["good@lmtp.test", "bad@lmtp.test"],
        message,
    )
    .await;
    let content = tokio::time::timeout(WAIT, server)
        .await
        .expect("the LMTP server gets the message")
        .unwrap();
    assert_eq!(after_received(&content), message);

    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "one bounce: {got:?}");
    let dsn = &got[0];
    assert!(
        dsn.mail_from.starts_with("MAIL FROM:<>"),
        "{}",
        dsn.mail_from
    );
    assert!(
        dsn.rcpt_to.len() == 1 && dsn.rcpt_to[0].starts_with("RCPT TO:<alice@sender.test>"),
        "{:?}",
        dsn.rcpt_to
    );
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; bad@lmtp.test")
            && text.contains("Status: 5.1.1")
            && text.contains("user unknown"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; good@lmtp.test"),
        "{text}"
    );
    wait_until_queue_is_empty(&relay).await;
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Lmtp, DeliveryStatus::Sent),
        1
    );
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Lmtp, DeliveryStatus::Bounced),
        1
    );
}
