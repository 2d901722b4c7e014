//! How the pipeline combines verdicts: precedence in policy order, tag mode, exemptions,
//! fail modes and quarantine, with the attachment check and scanners nobody answers for.

use super::*;
use crate::filter::attachments::rules::ActionRule;
use crate::filter::attachments::{Action, Rules};
use crate::filter::settings::Exemption;
use std::net::{IpAddr, Ipv4Addr};

/// The start of a PE executable, which `infer` knows by its magic bytes.
const EXE: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00This program cannot be run in DOS mode";
const EXE_BASE64: &str = "TVqQAAMAAAAEAAAA";

/// A text part and an attachment named `name`: an executable when the name ends in
/// `.exe`, plain text otherwise.
fn multipart(extra_header: &str, name: &str) -> Bytes {
    use base64::Engine;
    let body: &[u8] = if name.ends_with(".exe") {
        EXE
    } else {
        b"just some notes"
    };
    let payload = base64::engine::general_purpose::STANDARD.encode(body);
    Bytes::from(format!(
        "Received: from c by relay\r\n{extra_header}Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{payload}\r\n--b--\r\n"
    ))
}

fn single_part(name: &str) -> Bytes {
    Bytes::from(format!(
        "Subject: s\r\nContent-Type: application/pdf; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n%PDF-1.4 x\r\n"
    ))
}

fn context() -> ScanContext {
    ScanContext {
        mail_from: "a@example.org".into(),
        recipients: vec!["b@example.net".into()],
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: "client.example".into(),
        user: None,
        queue_id: "QID1".into(),
        tls: None,
    }
}

fn check(name: &str, kind: CheckKind) -> CheckSettings {
    CheckSettings {
        name: name.into(),
        timeout_ms: 2_000,
        exempt: Vec::new(),
        fail_mode: FailMode::Closed,
        mode: FilterMode::Enforce,
        kind,
    }
}

fn attachments(rules: Rules) -> CheckSettings {
    check("attachments", CheckKind::Attachments(rules))
}

/// A loopback port nobody listens on: connections are refused at once.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

fn clamd_down(fail_mode: FailMode) -> CheckSettings {
    CheckSettings {
        fail_mode,
        ..check(
            "clamav",
            CheckKind::Clamav {
                addresses: vec![closed_port()],
            },
        )
    }
}

async fn run(checks: &[CheckSettings], message: &Bytes, trust: SenderTrust) -> Outcome {
    Pipeline::new(checks, &Default::default())
        .run(message, &context(), trust)
        .await
}

fn results(outcome: &Outcome) -> Vec<(&str, &str)> {
    outcome
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.result))
        .collect()
}

/// The decoded text of the (base64) notice that replaced a part.
fn notice_text(message: &str) -> String {
    use base64::Engine;
    let start =
        message.find("Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let Some(start) = start else {
        panic!("no notice in {message}");
    };
    let body = &message[start..];
    let body = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let encoded: String = body.split("\r\n--").next().unwrap().split("\r\n").collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn content(outcome: &Outcome) -> String {
    match &outcome.disposition {
        Disposition::Accept { content: Some(c) } => String::from_utf8(c.clone()).unwrap(),
        other => panic!("expected a changed message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_later_in_the_list_beats_an_earlier_deferral() {
    let checks = [clamd_down(FailMode::Closed), attachments(Rules::default())];
    let outcome = run(&checks, &multipart("", "setup.exe"), SenderTrust::Untrusted).await;
    let Disposition::Refuse(reply) = &outcome.disposition else {
        panic!("{outcome:?}");
    };
    assert_eq!((reply.code, reply.status), (550, Some("5.7.1")));
    assert!(reply.lines[0].contains("\"setup.exe\""), "{reply:?}");
    assert_eq!(
        results(&outcome),
        [("clamav", "error"), ("attachments", "reject")]
    );
    assert!(!outcome.deliver && outcome.hold.is_none());

    let clean = multipart("", "notes.txt");
    let outcome = run(&checks, &clean, SenderTrust::Untrusted).await;
    let Disposition::Refuse(reply) = &outcome.disposition else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        reply.code, 451,
        "clamd down and failing closed defers: {reply:?}"
    );
    let outcome = run(
        &[clamd_down(FailMode::Open)],
        &clean,
        SenderTrust::Untrusted,
    )
    .await;
    assert_eq!(outcome.disposition, Disposition::Accept { content: None });
    assert_eq!(results(&outcome), [("clamav", "error")]);
}

#[tokio::test]
async fn exempt_senders_skip_the_check() {
    let exempt = CheckSettings {
        exempt: vec![Exemption::Authenticated],
        ..attachments(Rules::default())
    };
    let message = multipart("", "setup.exe");
    let outcome = run(
        std::slice::from_ref(&exempt),
        &message,
        SenderTrust::Authenticated,
    )
    .await;
    assert_eq!(outcome.disposition, Disposition::Accept { content: None });
    assert_eq!(results(&outcome), [("attachments", "exempt")]);
    let outcome = run(&[exempt], &message, SenderTrust::TrustedNetwork).await;
    assert!(matches!(outcome.disposition, Disposition::Refuse(_)));
}

#[tokio::test]
async fn tag_mode_only_writes_a_header_and_forged_ones_go() {
    let tag = CheckSettings {
        mode: FilterMode::Tag,
        ..attachments(Rules::default())
    };
    let message = multipart(
        "X-Sluice-Filter: attachments; accept; forged\r\n",
        "setup.exe",
    );
    let outcome = run(&[tag], &message, SenderTrust::Untrusted).await;
    assert_eq!(results(&outcome), [("attachments", "tag")]);
    let text = content(&outcome);
    assert!(!text.contains("forged"), "{text}");
    assert_eq!(text.matches("X-Sluice-Filter:").count(), 1, "{text}");
    assert!(text.contains("X-Sluice-Filter: attachments; reject; attachment \"setup.exe\""));
    assert!(
        text.contains(EXE_BASE64),
        "the attachment is still there: {text}"
    );
    assert!(outcome.deliver && outcome.hold.is_none());

    let outcome = run(
        &[attachments(Rules::default())],
        &message,
        SenderTrust::Untrusted,
    )
    .await;
    assert!(matches!(outcome.disposition, Disposition::Refuse(_)));
    let clean = multipart(
        "X-Sluice-Filter: attachments; accept; forged\r\n",
        "notes.txt",
    );
    let outcome = run(
        &[attachments(Rules::default())],
        &clean,
        SenderTrust::Untrusted,
    )
    .await;
    assert!(
        !content(&outcome).contains("forged"),
        "removed in enforce mode too"
    );
}

#[tokio::test]
async fn quarantine_cuts_the_part_and_holds_the_original() {
    let rules = Rules {
        every_attachment: Some(ActionRule {
            action: Action::Quarantine,
        }),
        ..Rules::default()
    };
    let outcome = run(
        &[attachments(rules.clone())],
        &multipart("", "report.txt"),
        SenderTrust::Untrusted,
    )
    .await;
    assert!(outcome.deliver);
    assert!(
        outcome
            .hold
            .as_deref()
            .is_some_and(|h| h.starts_with("attachments: ")),
        "{outcome:?}"
    );
    let text = content(&outcome);
    assert!(text.contains("hello"), "{text}");
    let notice = notice_text(&text);
    assert!(
        notice.contains("\"report.txt\" was removed") && notice.contains("quarantine as QID1"),
        "{notice}"
    );
    assert!(!text.contains("anVzdCBzb21l"), "the part is gone: {text}");

    // A single-part message is its own attachment: held whole, nothing delivered.
    let outcome = run(
        &[attachments(rules)],
        &single_part("report.pdf"),
        SenderTrust::Untrusted,
    )
    .await;
    assert!(!outcome.deliver && outcome.hold.is_some(), "{outcome:?}");
    assert_eq!(outcome.disposition, Disposition::Accept { content: None });

    // Stripping it instead cannot cut a part: refused.
    let strip = Rules {
        every_attachment: Some(ActionRule {
            action: Action::Strip,
        }),
        ..Rules::default()
    };
    let outcome = run(
        &[attachments(strip)],
        &single_part("report.pdf"),
        SenderTrust::Untrusted,
    )
    .await;
    assert!(
        matches!(&outcome.disposition, Disposition::Refuse(r) if r.code == 550),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_check_that_cannot_be_built_fails_by_its_mode() {
    let broken = check(
        "clamav",
        CheckKind::Clamav {
            addresses: vec!["not an address".into()],
        },
    );
    let outcome = run(
        std::slice::from_ref(&broken),
        &multipart("", "notes.txt"),
        SenderTrust::Untrusted,
    )
    .await;
    assert!(matches!(&outcome.disposition, Disposition::Refuse(r) if r.code == 451));
    let open = CheckSettings {
        fail_mode: FailMode::Open,
        ..broken
    };
    let outcome = run(&[open], &multipart("", "notes.txt"), SenderTrust::Untrusted).await;
    assert_eq!(outcome.disposition, Disposition::Accept { content: None });
}
