//! Tests of notification building: who gets one, what each part holds, and one complete
//! notification compared octet for octet. This file holds the fixtures.

mod fields;
mod returned;
mod selection;
mod snapshot;

use super::*;
use crate::smtp::address::{Orcpt, Ret};
use chrono::TimeZone;

const ORIGINAL: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\
Message-ID: <1@example.com>\r\n\r\nHi Bob.\r\n";
/// The header block of [`ORIGINAL`].
const HEADER: &str = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\nMessage-ID: <1@example.com>\r\n";
/// The default return limit (`limits.bounceSizeLimit`).
const LIMIT: usize = 50_000;
const FIXED_ID: &str = "01HZY3K7Q8X9V2M4N6P0R5T7W8";

fn fixed_id() -> QueueId {
    QueueId::parse(FIXED_ID).unwrap_or_else(QueueId::generate)
}

fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    Mailbox::new(local, domain)
}

/// `NOTIFY=` as on the wire: `NEVER`, `SUCCESS,FAILURE`, ...; `None` for no parameter.
fn notify(spec: Option<&str>) -> Option<Notify> {
    spec.map(|spec| Notify {
        never: spec.contains("NEVER"),
        success: spec.contains("SUCCESS"),
        failure: spec.contains("FAILURE"),
        delay: spec.contains("DELAY"),
    })
}

fn rcpt(address: &str, spec: Option<&str>) -> Recipient {
    Recipient {
        address: mailbox(address),
        notify: notify(spec),
        orcpt: None,
    }
}

fn envelope(sender: Option<&str>, params: MailParams) -> Envelope {
    Envelope {
        id: fixed_id(),
        reverse_path: sender.map(mailbox),
        params,
        recipients: vec![],
        received_at_ms: 1_700_000_000_000,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        helo: "client.example.com".into(),
        authenticated_user: Some("alice".into()),
        sender_trust: crate::envelope::SenderTrust::Authenticated,
        attempts: 3,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_003_600, 0)
        .single()
        .unwrap_or_default()
}

fn failed(reply: &str) -> Outcome {
    Outcome::Failed {
        remote_mta: Some("mx.example.org".into()),
        status: "5.1.1".into(),
        reply: reply.into(),
    }
}

fn deferred(reply: &str) -> Outcome {
    Outcome::Deferred {
        remote_mta: None,
        reply: reply.into(),
    }
}

fn delivered() -> Outcome {
    Outcome::Delivered {
        remote_mta: Some("mx.example.org".into()),
        reply: "250 2.0.0 Ok: queued as 4F2".into(),
        handoff: crate::delivery::outcome::Handoff::Relayed,
    }
}

fn text_of(message: &[u8]) -> String {
    String::from_utf8_lossy(message).into_owned()
}

/// The content of the part with this content type, up to the next delimiter.
fn part_content(message: &str, content_type: &str) -> Option<String> {
    let start = message.find(&format!("Content-Type: {content_type}\r\n"))?;
    let body = start + message[start..].find("\r\n\r\n")? + 4;
    let end = body + message[body..].find("\r\n--=_sluice_")?;
    Some(message[body..end].to_string())
}

/// The per-recipient blocks of the delivery-status part.
fn recipient_blocks(message: &str) -> Vec<String> {
    let status = part_content(message, "message/delivery-status").unwrap_or_default();
    status
        .split("\r\n\r\n")
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn dsn(env: &Envelope, reports: &[(Recipient, Outcome)], kind: ReportKind) -> Option<String> {
    build(
        env,
        reports,
        kind,
        ORIGINAL,
        "relay.example.net",
        LIMIT,
        now(),
    )
    .map(|(_, m)| text_of(&m))
}

#[test]
fn a_bounce_continues_the_trace_of_its_message() {
    let mut env = envelope(Some("sender@example.com"), MailParams::default());
    let untraced = build(
        &env,
        &[(rcpt("a@x.example", None), failed("550 5.1.1 no"))],
        ReportKind::Failure,
        ORIGINAL,
        "relay.example.net",
        LIMIT,
        now(),
    );
    assert_eq!(untraced.unwrap().0.trace, None);
    let trace = crate::envelope::TraceParent::new_root();
    env.trace = Some(trace);
    let (dsn, _) = build(
        &env,
        &[(rcpt("a@x.example", None), failed("550 5.1.1 no"))],
        ReportKind::Failure,
        ORIGINAL,
        "relay.example.net",
        LIMIT,
        now(),
    )
    .unwrap();
    let continued = dsn.trace.expect("traced");
    assert_eq!(continued.trace_id(), trace.trace_id());
    assert_ne!(continued, trace, "a step of its own in the trace");
}
