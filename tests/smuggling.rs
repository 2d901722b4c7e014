//! SMTP smuggling over TCP: only <CRLF>.<CRLF> ends DATA. Each fake terminator is
//! followed by a smuggled second transaction; the relay must refuse the message as a
//! whole, queue nothing, and never answer the smuggled commands.

mod common;

use common::smtp::Client;

const FAKE_TERMINATORS: [&str; 7] = [
    "\n.\r\n", "\n.\n", "\r.\r", "\r\n.\n", "\n.\r", "\r.\r\n", "\r\n.\r",
];

#[tokio::test]
async fn no_fake_terminator_ends_a_message_or_starts_another() {
    let relay = common::start("{}").await;
    for fake in FAKE_TERMINATORS {
        let mut c = Client::connect(relay.relay).await;
        c.cmd("EHLO client.test", "250 ").await;
        c.cmd("MAIL FROM:<a@sender.test>", "250").await;
        c.cmd("RCPT TO:<b@foreign.test>", "250").await;
        c.cmd("DATA", "354").await;
        let smuggled = format!(
            "Subject: first\r\n\r\nbody{fake}MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@foreign.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        );
        c.send(smuggled.as_bytes()).await;
        let reply = c.expect("550 5.5.2").await;
        assert!(reply.contains("bare"), "{fake:?}: {reply}");
        // The next reply answers NOOP: none of the smuggled commands was answered.
        c.cmd("NOOP", "250 2.0.0").await;
        c.cmd("QUIT", "221").await;
    }
    let spool = relay.stop_and_list().await;
    assert!(
        spool.is_empty(),
        "queued: {:?}",
        spool
            .iter()
            .map(|m| String::from_utf8_lossy(&m.1).into_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn dot_stuffed_lines_and_split_terminators_are_handled() {
    let relay = common::start("{}").await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    // The terminator arrives split across writes, a stuffed dot line before it.
    c.send(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n")
        .await;
    c.send(b"last line\r").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    c.send(b"\n.").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    c.send(b"\r\n").await;
    c.expect("250 2.0.0").await;
    let spool = relay.stop_and_list().await;
    assert!(
        spool[0]
            .1
            .ends_with(b"\r\nSubject: dots\r\n\r\n.leading dot\r\n..\r\nlast line\r\n")
    );
}
