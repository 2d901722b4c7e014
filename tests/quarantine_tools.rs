//! `sluice quarantine list|show|release|delete`, the real binary against a running relay's
//! admin listener, on the spool and on JetStream: what it prints, its exit codes, and
//! that a release queues the original byte for byte to its recipients under a new id.

mod common;

use common::nats::NatsServer;
use sluice::envelope::{Envelope, QueueId, SenderTrust};
use sluice::queue::jetstream::codec::EnvelopeLimits;
use sluice::queue::jetstream::{JetStreamOptions, JetStreamQuarantine, JetStreamQueue};
use sluice::queue::quarantine::{HeldMessage, Quarantine};
use sluice::queue::spool::SpoolQuarantine;
use sluice::queue::{QueueAdmin, QueueEntry};
use sluice::smtp::address::{MailParams, Mailbox, Recipient};
use std::net::SocketAddr;
use std::path::Path;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn quarantine(config: &Path, admin: SocketAddr, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("quarantine")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn held(recipients: &[&str], held_at_ms: u64, body: &[u8]) -> HeldMessage {
    HeldMessage {
        envelope: Envelope {
            id: QueueId::generate(),
            reverse_path: Some(Mailbox::new("a", "sender.test")),
            params: MailParams::default(),
            recipients: recipients
                .iter()
                .map(|r| Recipient {
                    address: Mailbox::new(*r, "foreign.test"),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            received_at_ms: held_at_ms,
            client_ip: "192.0.2.7".parse().unwrap(),
            helo: "client.test".into(),
            authenticated_user: None,
            sender_trust: SenderTrust::Untrusted,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: None,
        },
        reason: "attachment: invoice.pdf.exe (executable)".into(),
        held_at_ms,
        size: body.len() as u64,
    }
}

const ORIGINAL: &[u8] = b"Subject: first\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\n\r\nMZ\x90\x00\r\n--b--\r\n";

/// Holds two messages in `q`, then lists, shows, releases one and deletes the other
/// through the CLI; returns the held record released and the new queue id.
async fn list_show_release_delete(
    relay: &common::Relay,
    q: &dyn Quarantine,
) -> (HeldMessage, QueueId) {
    let config = relay.dir.path().join("sluice.yaml");
    let admin = relay.admin;
    let empty = quarantine(&config, admin, &["list"]).await;
    assert_eq!(
        (empty.code, empty.stdout.as_str()),
        (0, "Quarantine is empty\n")
    );
    let first = held(&["b", "c"], 1_700_000_000_000, ORIGINAL);
    let second = held(&["d"], 1_700_000_001_000, b"Subject: second\r\n\r\nx\r\n");
    q.hold(&first, ORIGINAL).await.unwrap();
    q.hold(&second, b"Subject: second\r\n\r\nx\r\n")
        .await
        .unwrap();
    let (a, b) = (
        first.envelope.id.to_string(),
        second.envelope.id.to_string(),
    );

    let list = quarantine(&config, admin, &["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(lines[0].starts_with("-Queue ID- "), "{}", list.stdout);
    assert!(lines[1].starts_with(&format!("{a} ")) && lines[1].ends_with("  a@sender.test"));
    assert_eq!(lines[2], "(attachment: invoice.pdf.exe (executable))");
    let indent = " ".repeat(59);
    assert_eq!(lines[3], format!("{indent}b@foreign.test"));
    assert_eq!(lines[4], format!("{indent}c@foreign.test"));
    assert!(lines[6].starts_with(&b), "{}", list.stdout);
    assert_eq!(lines.last(), Some(&"-- 1 Kbytes in 2 held messages."));
    let json = quarantine(&config, admin, &["list", "--json"]).await;
    let records: Vec<HeldMessage> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(records, [first.clone(), second.clone()]);

    let show = quarantine(&config, admin, &["show", &a]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    for needle in [
        &format!("Queue ID:       {a}\n"),
        "Reason:         attachment: invoice.pdf.exe (executable)\n",
        &format!("Size:           {} bytes\n", ORIGINAL.len()),
        "Sender:         <a@sender.test>\n",
        "Recipients:     <b@foreign.test>\n                <c@foreign.test>\n",
        "\n*** MESSAGE CONTENTS ***\nSubject: first\n",
        "name=\"invoice.pdf.exe\"\n",
    ] {
        assert!(
            show.stdout.contains(needle),
            "{needle:?} in\n{}",
            show.stdout
        );
    }

    let release = quarantine(&config, admin, &["release", &a]).await;
    assert_eq!(release.code, 0, "{}", release.stderr);
    let queued = release
        .stdout
        .strip_prefix(&format!("{a}: released, queued as "))
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(QueueId::parse)
        .unwrap_or_else(|| panic!("{}", release.stdout));
    assert_ne!(queued, first.envelope.id);

    let delete = quarantine(&config, admin, &["delete", &b]).await;
    assert_eq!(
        (delete.code, delete.stdout.as_str()),
        (0, format!("{b}: deleted\n").as_str())
    );
    assert!(q.list().await.unwrap().is_empty());
    for args in [["show", &a], ["release", &a], ["delete", &b]] {
        let run = quarantine(&config, admin, &args).await;
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("no held message"), "{}", run.stderr);
    }
    let bad = quarantine(&config, admin, &["show", "not-an-id"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    (first, queued)
}

fn assert_released(entry: &QueueEntry, body: &[u8], held: &HeldMessage) {
    assert_eq!(body, ORIGINAL, "byte for byte");
    assert_eq!(entry.envelope.recipients, held.envelope.recipients);
    assert_eq!(entry.envelope.reverse_path, held.envelope.reverse_path);
}

#[tokio::test]
async fn the_tools_manage_the_spool_quarantine_of_a_running_relay() {
    let relay = common::start("{}").await;
    let q = SpoolQuarantine::open(&relay.spool_dir(), EnvelopeLimits::default())
        .await
        .unwrap();
    let (first, queued) = list_show_release_delete(&relay, &q).await;
    let queue = relay.stop_and_list().await;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].0.envelope.id, queued);
    assert_released(&queue[0].0, &queue[0].1, &first);
}

#[tokio::test]
async fn the_tools_manage_the_jetstream_quarantine() {
    let nats = NatsServer::start();
    let relay = common::start_on_jetstream("{}", &nats.url()).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let q = JetStreamQuarantine::open(js, &JetStreamOptions::default()).await;
    let (first, queued) = list_show_release_delete(&relay, &q).await;
    let stream = JetStreamQueue::connect(&nats.url(), JetStreamOptions::default())
        .await
        .unwrap();
    let listed = stream.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    let (entry, body) = stream.inspect(&queued).await.unwrap().expect("queued");
    assert_released(&entry, &body, &first);
}

/// `GET path` on the admin listener: the body of a 200.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let answer = common::roles::http_get(admin, path).await;
    let Some((200, body)) = answer else {
        panic!("GET {path}: {answer:?}");
    };
    body
}

/// The whole path, through SMTP: a quarantine rule strips the attachment from the copy
/// that is queued and holds the original; `sluice quarantine release` queues the
/// original as it was received, byte for byte, to the same recipient.
#[tokio::test]
async fn a_quarantined_message_is_released_byte_for_byte() {
    let policy = common::policy_yaml()
        + "  filters:\n    - attachments:\n        blockedExtensions: {action: quarantine, extensions: [exe]}\n        blockedRealTypes: null\n";
    let relay = common::start_with(&common::config_yaml("{}"), &policy).await;
    let config = relay.dir.path().join("sluice.yaml");
    let sent = "Subject: report\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\n\
        Content-Type: text/plain\r\n\r\nsee attached\r\n--xx\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename=\"setup.exe\"\r\n\r\n\
        not really a program\r\n--xx--\r\n";
    let mut c = common::smtp::Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@partner.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(format!("{sent}.\r\n").as_bytes()).await;
    let reply = c.expect("250 ").await;
    let id = reply.rsplit(' ').next().unwrap().trim().to_string();

    let held: Vec<HeldMessage> = serde_json::from_str(
        &quarantine(&config, relay.admin, &["list", "--json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].envelope.id.as_str(), id);
    assert!(held[0].reason.contains("setup.exe"), "{}", held[0].reason);
    let shown: serde_json::Value =
        serde_json::from_str(&admin_get(relay.admin, &format!("/quarantine/{id}")).await).unwrap();
    let original = shown["message"].as_str().unwrap().to_string();
    assert!(
        original.ends_with(sent),
        "the original as sent:\n{original}"
    );
    let queued: serde_json::Value =
        serde_json::from_str(&admin_get(relay.admin, &format!("/queue/{id}")).await).unwrap();
    let stripped = queued["message"].as_str().unwrap();
    assert!(!stripped.contains("not really a program"), "{stripped}");

    let release = quarantine(&config, relay.admin, &["release", &id]).await;
    assert_eq!(release.code, 0, "{}", release.stderr);
    let new_id = release
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let queue = relay.stop_and_list().await;
    let released = queue
        .iter()
        .find(|(e, _)| e.envelope.id.as_str() == new_id)
        .expect("the released original is queued");
    assert_eq!(released.1, original.as_bytes(), "byte for byte");
    let to: Vec<String> = released
        .0
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(to, ["b@partner.test"]);
    assert!(
        queue.iter().any(|(e, _)| e.envelope.id.as_str() == id),
        "the stripped copy stays"
    );
}
