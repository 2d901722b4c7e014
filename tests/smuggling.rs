//! SMTP smuggling and line endings over TCP: only <CRLF>.<CRLF> ends DATA, in both
//! `bareLineEndings` modes. Each fake terminator is followed by a smuggled second
//! transaction; the relay must never answer the smuggled commands nor queue them as a
//! message of their own. In `reject` mode any bare line ending refuses the message; in
//! `normalize` mode (the default) a bare LF ends a line like CRLF, and what is stored
//! and delivered is CRLF only.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{AcceptAll, Sink};
use common::smtp::Client;
use std::process::Command;
use std::time::Duration;

const FAKE_TERMINATORS: [&str; 7] = [
    "\n.\r\n", "\n.\n", "\r.\r", "\r\n.\n", "\n.\r", "\r.\r\n", "\r\n.\r",
];

const SMUGGLED: &str = "MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@foreign.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n";

/// The configuration of the tests with the relay listener in `reject` mode.
fn reject_config(delivery: &str) -> String {
    common::config_yaml_with("{}", delivery)
        .replace("kind: relay }", "kind: relay, bareLineEndings: reject }")
}

/// True when every CR is followed by LF and every LF follows a CR.
fn crlf_only(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => content.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && content[i - 1] == b'\r',
        _ => true,
    })
}

/// A bare CR is refused in both modes; a bare LF only in reject mode.
fn has_bare_cr(fake: &str) -> bool {
    // The fake is followed by "MAIL", so a CR at its end is bare too.
    fake.replace("\r\n", "").contains('\r')
}

/// Sends one message with `fake` in it and returns the reply to the end of data; then
/// checks that none of the smuggled commands was answered.
async fn send_with_fake(relay: &common::Relay, fake: &str, expect: &str) -> String {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    let content = format!("Subject: first\r\n\r\nbody{fake}{SMUGGLED}\r\n.\r\n");
    c.send(content.as_bytes()).await;
    let reply = c.expect(expect).await;
    // The next reply answers NOOP: none of the smuggled commands was answered.
    c.cmd("NOOP", "250 2.0.0").await;
    c.cmd("QUIT", "221").await;
    reply
}

#[tokio::test]
async fn no_fake_terminator_ends_a_message_or_starts_another_in_reject_mode() {
    let relay =
        common::start_with(&reject_config("{ enabled: false }"), &common::policy_yaml()).await;
    for fake in FAKE_TERMINATORS {
        let reply = send_with_fake(&relay, fake, "550 5.5.2").await;
        assert!(reply.contains("bare"), "{fake:?}: {reply}");
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

/// In normalize mode `<LF>.<CRLF>`, `<LF>.<LF>` and `<CRLF>.<LF>` are lines of the one
/// message (stored as an empty line), so the smuggled transaction stays content of the
/// first; fakes with a bare CR are refused.
#[tokio::test]
async fn no_fake_terminator_ends_a_message_or_starts_another_in_normalize_mode() {
    let relay = common::start("{}").await;
    let mut taken = 0;
    for fake in FAKE_TERMINATORS {
        if has_bare_cr(fake) {
            send_with_fake(&relay, fake, "550 5.5.2").await;
        } else {
            send_with_fake(&relay, fake, "250 2.0.0").await;
            taken += 1;
        }
    }
    let spool = relay.stop_and_list().await;
    assert_eq!((taken, spool.len()), (3, 3));
    for (entry, body) in &spool {
        let recipients: Vec<String> = entry
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(recipients, ["b@foreign.test"]);
        assert!(crlf_only(body), "{:?}", String::from_utf8_lossy(body));
        let want = format!("\r\nSubject: first\r\n\r\nbody\r\n\r\n{SMUGGLED}\r\n");
        assert!(
            body.ends_with(want.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn bdat_content_is_normalized_or_refused_and_never_ends_early() {
    let content = format!("Subject: chunked\n\nbody\n.\n{SMUGGLED}");
    // (config, reply to the first chunk, to the last): reject mode refuses at the
    // first chunk that holds a bare LF, and the transaction is over.
    for (config, expect_first, expect) in [
        (common::config_yaml("{}"), "250 2.0.0", "250 2.0.0"),
        (reject_config("{ enabled: false }"), "550 5.5.2", "5"),
    ] {
        let relay = common::start_with(&config, &common::policy_yaml()).await;
        let mut c = Client::connect(relay.relay).await;
        c.cmd("EHLO client.test", "250 ").await;
        c.cmd("MAIL FROM:<a@sender.test>", "250").await;
        c.cmd("RCPT TO:<b@foreign.test>", "250").await;
        let (first, second) = content.split_at(20);
        c.send(format!("BDAT {}\r\n{first}", first.len()).as_bytes())
            .await;
        c.expect(expect_first).await;
        c.send(format!("BDAT {} LAST\r\n{second}", second.len()).as_bytes())
            .await;
        c.expect(expect).await;
        c.cmd("NOOP", "250 2.0.0").await;
        let spool = relay.stop_and_list().await;
        if expect.starts_with("250") {
            assert_eq!(spool.len(), 1);
            let body = &spool[0].1;
            assert!(crlf_only(body), "{:?}", String::from_utf8_lossy(body));
            let want = format!("\r\nSubject: chunked\r\n\r\nbody\r\n.\r\n{SMUGGLED}");
            assert!(body.ends_with(want.as_bytes()));
        } else {
            assert!(spool.is_empty());
        }
    }
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
    // These pauses are the test, not a synchronisation: each piece of the terminator
    // must reach the relay in a read of its own.
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

/// `smtplib.sendmail` with bytes sends them as they are: LF line endings, dots stuffed
/// after each LF, and `<CRLF>.<CRLF>` appended.
const SENDMAIL_LF: &str = r#"
import smtplib, sys
from email.message import EmailMessage
msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = "a@sender.test", "b@mx.test", "lf only"
msg.set_content("line one\n.\n..two dots\nlast")
data = msg.as_bytes()
assert b"\r" not in data and b"\n" in data
try:
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
        s.sendmail("a@sender.test", ["b@mx.test"], data)
    print("250 sent")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;

async fn sendmail_lf(port: u16) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", SENDMAIL_LF, &port.to_string()])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A relay that delivers every message to `sink` by MX.
async fn delivering_relay(dns: &DnsServer, sink: &Sink, reject: bool) -> common::Relay {
    let delivery = format!(
        "{{ allowPrivateDestinations: true, nameserver: \"{}\", mxPort: {}, retry: {{ firstRetry: 1s, maxInterval: 1s, jitter: 0 }} }}",
        dns.addr,
        sink.addr.port()
    );
    let config = match reject {
        true => reject_config(&delivery),
        false => common::config_yaml_with("{}", &delivery),
    };
    let policy = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: e2e}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n";
    common::start_with(&config, policy).await
}

#[tokio::test]
async fn python_sendmail_with_lf_only_is_delivered_as_crlf_or_refused_in_reject_mode() {
    let zone = Zone::default()
        .mx("mx.test", 10, "mx1.mx.test")
        .addr("mx1.mx.test", "127.0.0.1");
    let dns = DnsServer::start(zone).await;
    let sink = Sink::start(AcceptAll).await;

    let relay = delivering_relay(&dns, &sink, false).await;
    assert_eq!(sendmail_lf(relay.relay.port()).await, "250 sent");
    let delivered = sink.wait_for(1, Duration::from_secs(20)).await;
    // The sink un-stuffs: the lone "." line arrived stuffed, or it would have ended
    // the data there and the rest would be missing.
    let data = &delivered[0].data;
    assert!(crlf_only(data), "{:?}", String::from_utf8_lossy(data));
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("\r\nSubject: lf only\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nline one\r\n.\r\n..two dots\r\nlast\r\n\r\n"),
        "{text:?}"
    );
    relay.stop_and_list().await;

    let relay = delivering_relay(&dns, &sink, true).await;
    let reply = sendmail_lf(relay.relay.port()).await;
    assert!(reply.starts_with("550 5.5.2"), "{reply}");
    assert!(relay.stop_and_list().await.is_empty());
    assert_eq!(sink.transactions().len(), 1);
}
