//! A `*` route to Postfix's own smtp-sink as the smarthost: what Postfix receives is
//! what the client sent, octet for octet, apart from the Received header.

use super::*;
use sluice::telemetry::metrics::{DeliveryStatus, RouteLabel};
use std::path::PathBuf;
use tokio::process::{Child, Command};

/// smtp-sink dumping each transaction into its own file in `dir`.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    _child: Child,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops to `nobody` (it must, as root) before it writes a dump.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let template = format!("{}/%H%M%S.", dir.path().display());
        let child = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody", "-d", &template])
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .expect("run /usr/sbin/smtp-sink");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "smtp-sink does not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SmtpSink {
            port,
            dir,
            _child: child,
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    /// Waits until `n` dumps are complete (the relay got its 250, so the queue moved on,
    /// and smtp-sink closed the file) and returns them.
    async fn dumps(&self, n: usize, relay: &common::Relay) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let dumps: Vec<Vec<u8>> = self
                .files()
                .iter()
                .map(|f| std::fs::read(f).unwrap())
                .collect();
            // A dump ends with the empty line smtp-sink appends after the message.
            if dumps.len() >= n
                && dumps.iter().all(|d| d.ends_with(b"\n\n"))
                && queue(relay).await.is_empty()
            {
                return dumps;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} dumps: {:?}",
                dumps.len(),
                dumps
                    .iter()
                    .map(|d| String::from_utf8_lossy(d))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A dump taken apart: smtp-sink's `X-…` envelope records, and the message after its
/// own Received header.
struct Dump {
    records: Vec<String>,
    message: Vec<u8>,
}

fn parse_dump(dump: &[u8]) -> Dump {
    let mut rest = dump;
    let mut records = Vec::new();
    while rest.starts_with(b"X-") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap();
        records.push(String::from_utf8(rest[..end].to_vec()).unwrap());
        rest = &rest[end + 1..];
    }
    let message = skip_header(rest, b"Received: ", b"\n");
    assert!(message.len() < rest.len(), "no smtp-sink Received header");
    Dump {
        records,
        message: message.to_vec(),
    }
}

/// What smtp-sink writes for `content`: lines end with LF, and an empty line follows.
fn as_dumped(content: &[u8]) -> Vec<u8> {
    let mut out = String::from_utf8_lossy(content).replace("\r\n", "\n");
    out.push('\n');
    out.into_bytes()
}

/// Leading dots (a lone one, two of them), UTF-8 in the header (RFC 6532) and 8-bit
/// text in the body.
const CONTENT: &str = "From: Alice <alice@sender.test>\r\nTo: bob@far.test\r\n\
Subject: =?UTF-8?Q?caf=C3=A9?= caf\u{e9} \u{1f4e8}\r\n\r\n\
.a line that was dot-stuffed\r\n..two dots\r\n.\r\n\
\u{fc}ber 8-bit: \u{e9}t\u{e9}, \u{65e5}\u{672c}\u{8a9e}\r\n\r\nlast line\r\n";

#[tokio::test]
async fn smtp_sink_receives_the_message_byte_identical_apart_from_received() {
    let sink = SmtpSink::start().await;
    let relay = relay("", &star_route(sink.port, "opportunistic", "")).await;
    send(
        &relay,
        "alice@sender.test",
        " BODY=8BITMIME",
        &["bob@far.test", "carol@far.test"],
        CONTENT.as_bytes(),
    )
    .await;
    let dumps = sink.dumps(1, &relay).await;
    assert_eq!(dumps.len(), 1);
    let dump = parse_dump(&dumps[0]);
    assert!(
        dump.message
            .starts_with(b"Received: from client.test ([127.0.0.1])"),
        "{}",
        String::from_utf8_lossy(&dump.message)
    );
    let message = skip_header(&dump.message, b"Received: ", b"\n");
    assert_eq!(
        String::from_utf8_lossy(message),
        String::from_utf8_lossy(&as_dumped(CONTENT.as_bytes()))
    );
    assert_eq!(message, as_dumped(CONTENT.as_bytes()));
    assert!(
        dump.records
            .contains(&"X-Helo-Args: relay.test".to_string()),
        "{:?}",
        dump.records
    );
    let mail = dump
        .records
        .iter()
        .find(|r| r.starts_with("X-Mail-Args: "))
        .unwrap();
    assert!(
        mail.starts_with("X-Mail-Args: <alice@sender.test>") && mail.contains("BODY=8BITMIME"),
        "{mail}"
    );
    let rcpts: Vec<_> = dump
        .records
        .iter()
        .filter(|r| r.starts_with("X-Rcpt-Args: "))
        .collect();
    assert_eq!(
        rcpts,
        [
            "X-Rcpt-Args: <bob@far.test>",
            "X-Rcpt-Args: <carol@far.test>"
        ]
    );
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Smarthost, DeliveryStatus::Sent),
        2
    );
}

/// smtp-sink does not announce SMTPUTF8, so a message whose client asked for it cannot
/// go there (RFC 6531 3.4): it bounces with 5.6.7, and the bounce, which needs no
/// SMTPUTF8 for an ASCII sender, reaches smtp-sink.
#[tokio::test]
async fn a_message_that_needs_smtputf8_bounces_at_smtp_sink() {
    let sink = SmtpSink::start().await;
    let relay = relay("", &star_route(sink.port, "opportunistic", "")).await;
    send(
        &relay,
        "alice@sender.test",
        " BODY=8BITMIME SMTPUTF8",
        &["bob@far.test"],
        CONTENT.as_bytes(),
    )
    .await;
    let dumps = sink.dumps(1, &relay).await;
    assert_eq!(dumps.len(), 1, "only the bounce");
    let dsn = parse_dump(&dumps[0]);
    assert!(
        dsn.records.iter().any(|r| r.starts_with("X-Mail-Args: <>")),
        "{:?}",
        dsn.records
    );
    assert!(
        dsn.records
            .iter()
            .any(|r| r.starts_with("X-Rcpt-Args: <alice@sender.test>")),
        "{:?}",
        dsn.records
    );
    let text = String::from_utf8_lossy(&dsn.message);
    assert!(
        text.contains("Status: 5.6.7") && text.contains("Final-Recipient: rfc822; bob@far.test"),
        "{text}"
    );
    let running = relay.running.as_ref().unwrap();
    assert_eq!(
        running
            .metrics
            .deliveries
            .get(RouteLabel::Smarthost, DeliveryStatus::Bounced),
        1
    );
}
