//! Connection reuse: the next message to the same smarthost goes over the connection the
//! previous one left idle, after an RSET, rather than a new TCP (and TLS) handshake.

use super::*;
use common::sink::{AcceptAll, Sink};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn messages_in_quick_succession_share_one_connection_to_the_smarthost() {
    let sink = Sink::start(AcceptAll).await;
    let relay = relay("", &star_route(sink.addr.port(), "opportunistic", "")).await;
    for (n, subject) in ["first", "second", "third"].iter().enumerate() {
        let message = format!("Subject: {subject}\r\n\r\nhi\r\n");
        send(
            &relay,
            "alice@sender.test",
            "",
            &["bob@far.test"],
            message.as_bytes(),
        )
        .await;
        let got = sink.wait_for(n + 1, WAIT).await;
        assert_eq!(got.len(), n + 1, "message {subject} not delivered");
        // Acked, so the connection is back in the pool before the next message.
        wait_until_queue_is_empty(&relay).await;
    }
    assert_eq!(sink.connections.load(Ordering::SeqCst), 1);
    let commands = sink.commands.lock().unwrap().clone();
    let verbs: Vec<&str> = commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap())
        .collect();
    let transaction = ["MAIL", "RCPT", "DATA"];
    let expected: Vec<&str> = ["EHLO"]
        .into_iter()
        .chain(transaction)
        .chain(["RSET"])
        .chain(transaction)
        .chain(["RSET"])
        .chain(transaction)
        .collect();
    assert_eq!(verbs, expected, "{commands:?}");
}
