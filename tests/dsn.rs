//! Delivery status notifications read back by an independent MIME parser, Python's
//! `email` package: the structure a mail client sees must match what we meant to send.

use chrono::{TimeZone, Utc};
use serde_json::Value;
use sluice::delivery::Outcome;
use sluice::delivery::dsn::{self, ReportKind};
use sluice::envelope::{Envelope, QueueId};
use sluice::smtp::address::{MailParams, Mailbox, Notify, Orcpt, Recipient, Ret};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

/// Prints what a client would see of the notification on stdin, as JSON.
const PARSE: &str = r#"
import email, json, sys
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
parts = msg.get_payload()
out = {
    "type": msg.get_content_type(),
    "report_type": msg.get_param("report-type"),
    "subject": str(msg["Subject"]),
    "auto_submitted": str(msg["Auto-Submitted"]),
    "parts": [p.get_content_type() for p in parts],
    "defects": [repr(d) for p in msg.walk() for d in p.defects],
    "text": parts[0].get_content(),
}
blocks = parts[1].get_payload()
out["per_message"] = {k: str(v) for k, v in blocks[0].items()}
out["recipients"] = [{k: str(v) for k, v in b.items()} for b in blocks[1:]]
if len(parts) > 2:
    third = parts[2]
    if third.get_content_type() == "message/rfc822":
        inner = third.get_payload()[0]
        out["original_subject"] = str(inner["Subject"])
        out["original_body"] = inner.get_payload()
    else:
        out["original_headers"] = third.get_payload()
print(json.dumps(out))
"#;

fn python_view(message: &[u8]) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

const ORIGINAL: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: quarterly figures\r\n\
Message-ID: <1@example.com>\r\n\r\nHi Bob,\r\n\r\nthe figures.\r\n";

fn recipient(address: &str, notify: Option<Notify>, orcpt: Option<&str>) -> Recipient {
    let (local, domain) = address.split_once('@').expect("an address");
    Recipient {
        address: Mailbox::new(local, domain),
        notify,
        orcpt: orcpt.map(|o| Orcpt {
            addr_type: "rfc822".into(),
            address: o.into(),
        }),
    }
}

fn envelope(params: MailParams) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("alice", "example.com")),
        params,
        recipients: vec![],
        received_at_ms: 1_700_000_000_000,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        helo: "client.example.com".into(),
        authenticated_user: None,
        sender_trust: sluice::envelope::SenderTrust::Untrusted,
        attempts: 7,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn build(env: &Envelope, reports: &[(Recipient, Outcome)], kind: ReportKind) -> Vec<u8> {
    let now = Utc
        .timestamp_opt(1_700_003_600, 0)
        .single()
        .expect("a time");
    let built = dsn::build(
        env,
        reports,
        kind,
        ORIGINAL,
        "relay.example.net",
        50_000,
        now,
    );
    built.expect("a notification is due").1
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn failure_report_as_python_reads_it() {
    let env = envelope(MailParams {
        envid: Some("batch-7".into()),
        ..MailParams::default()
    });
    let success = Notify {
        success: true,
        ..Notify::default()
    };
    let reports = [
        (
            recipient("bob@example.org", None, Some("Bob@Example.org")),
            Outcome::Failed {
                remote_mta: Some("mx.example.org".into()),
                status: "5.1.1".into(),
                reply: "550 5.1.1 <bob@example.org>: user unknown".into(),
            },
        ),
        (
            recipient("carol@example.net", None, None),
            Outcome::Deferred {
                remote_mta: Some("mx.example.net".into()),
                reply: "452 4.2.2 mailbox full".into(),
            },
        ),
        (
            recipient("dave@example.org", Some(success), None),
            Outcome::Delivered {
                remote_mta: Some("mx.example.org".into()),
                reply: "250 2.0.0 ok".into(),
                handoff: sluice::delivery::outcome::Handoff::Relayed,
            },
        ),
    ];
    let v = python_view(&build(&env, &reports, ReportKind::Failure));
    assert_eq!(v["defects"], Value::Array(vec![]), "{v}");
    assert_eq!(field(&v, "type"), "multipart/report");
    assert_eq!(field(&v, "report_type"), "delivery-status");
    assert_eq!(field(&v, "subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(field(&v, "auto_submitted"), "auto-replied");
    let parts: Vec<&str> = v["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        parts,
        ["text/plain", "message/delivery-status", "message/rfc822"]
    );
    assert!(field(&v, "text").contains("550 5.1.1 <bob@example.org>: user unknown"));

    let per_message = &v["per_message"];
    assert_eq!(
        field(per_message, "Reporting-MTA"),
        "dns; relay.example.net"
    );
    assert_eq!(field(per_message, "Original-Envelope-Id"), "batch-7");
    assert_eq!(
        field(per_message, "Arrival-Date"),
        "Tue, 14 Nov 2023 22:13:20 +0000"
    );

    let rcpts = v["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(rcpts.len(), 2, "{v}");
    let bob = &rcpts[0];
    assert_eq!(field(bob, "Original-Recipient"), "rfc822; Bob@Example.org");
    assert_eq!(field(bob, "Final-Recipient"), "rfc822; bob@example.org");
    assert_eq!(field(bob, "Action"), "failed");
    assert_eq!(field(bob, "Status"), "5.1.1");
    assert_eq!(field(bob, "Remote-MTA"), "dns; mx.example.org");
    assert_eq!(
        field(bob, "Diagnostic-Code"),
        "smtp; 550 5.1.1 <bob@example.org>: user unknown"
    );
    let carol = &rcpts[1];
    assert_eq!(field(carol, "Final-Recipient"), "rfc822; carol@example.net");
    assert_eq!(field(carol, "Action"), "failed");
    assert_eq!(field(carol, "Status"), "4.2.2");
    assert!(carol.get("Original-Recipient").is_none());

    assert_eq!(field(&v, "original_subject"), "quarterly figures");
    assert_eq!(
        field(&v, "original_body"),
        "Hi Bob,\r\n\r\nthe figures.\r\n"
    );
}

#[test]
fn delay_report_with_ret_hdrs_as_python_reads_it() {
    let env = envelope(MailParams {
        ret: Some(Ret::Headers),
        ..MailParams::default()
    });
    let long_reply = format!("451 4.4.1 {}", "no answer from host ".repeat(30));
    let reports = [(
        recipient("bob@example.org", None, None),
        Outcome::Deferred {
            remote_mta: None,
            reply: long_reply.clone(),
        },
    )];
    let v = python_view(&build(&env, &reports, ReportKind::Delay));
    assert_eq!(v["defects"], Value::Array(vec![]), "{v}");
    assert_eq!(field(&v, "subject"), "Delayed Mail (still being retried)");
    let parts: Vec<&str> = v["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        parts,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let rcpts = v["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(rcpts.len(), 1);
    assert_eq!(field(&rcpts[0], "Action"), "delayed");
    assert_eq!(field(&rcpts[0], "Status"), "4.4.1");
    // Folded on the wire, the same text once unfolded.
    assert_eq!(
        field(&rcpts[0], "Diagnostic-Code"),
        format!("smtp; {}", long_reply.trim_end())
    );
    let headers = field(&v, "original_headers");
    assert!(
        headers.starts_with("From: alice@example.com\r\n"),
        "{headers:?}"
    );
    assert!(
        headers.ends_with("Message-ID: <1@example.com>\r\n"),
        "{headers:?}"
    );
    assert!(!headers.contains("the figures"));
}
