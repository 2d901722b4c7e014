//! Tests of notification building: who gets one, what each part holds, and one complete
//! notification compared octet for octet.

use super::*;
use crate::smtp::address::{Orcpt, Ret};
use chrono::TimeZone;

const ORIGINAL: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\
Message-ID: <1@example.com>\r\n\r\nHi Bob.\r\n";
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
        attempts: 3,
        last_error: None,
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
    build(env, reports, kind, ORIGINAL, "relay.example.net", now()).map(|(_, m)| text_of(&m))
}

#[test]
fn no_notification_for_a_null_reverse_path() {
    let env = envelope(None, MailParams::default());
    let reports = [(rcpt("bob@example.org", None), failed("550 5.1.1 unknown"))];
    assert_eq!(dsn(&env, &reports, ReportKind::Failure), None);
}

#[test]
fn notify_decides_who_hears_what() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    use ReportKind::*;
    let cases: &[(Option<&str>, ReportKind, Outcome, bool)] = &[
        (None, Failure, failed("550 5.1.1 x"), true),
        (None, Failure, deferred("451 4.3.0 x"), true),
        (None, Delay, deferred("451 4.3.0 x"), true),
        (None, Success, delivered(), false),
        (Some("NEVER"), Failure, failed("550 5.1.1 x"), false),
        (Some("NEVER"), Delay, deferred("451 4.3.0 x"), false),
        (Some("SUCCESS"), Failure, failed("550 5.1.1 x"), false),
        (Some("SUCCESS"), Delay, deferred("451 4.3.0 x"), false),
        (Some("SUCCESS"), Success, delivered(), true),
        (Some("FAILURE"), Failure, failed("550 5.1.1 x"), true),
        (Some("FAILURE"), Delay, deferred("451 4.3.0 x"), false),
        (Some("DELAY"), Delay, deferred("451 4.3.0 x"), true),
        (Some("DELAY"), Failure, failed("550 5.1.1 x"), false),
        (Some("SUCCESS,FAILURE,DELAY"), Success, delivered(), true),
        // The kind picks the outcomes it reports on.
        (Some("SUCCESS,FAILURE,DELAY"), Failure, delivered(), false),
        (
            Some("SUCCESS,FAILURE,DELAY"),
            Delay,
            failed("550 5.1.1 x"),
            false,
        ),
        (
            Some("SUCCESS,FAILURE,DELAY"),
            Success,
            deferred("451 4.3.0 x"),
            false,
        ),
    ];
    for (spec, kind, outcome, want) in cases {
        let reports = [(rcpt("bob@example.org", *spec), outcome.clone())];
        let got = dsn(&env, &reports, *kind).is_some();
        assert_eq!(got, *want, "NOTIFY={spec:?} {kind:?} {outcome:?}");
    }
}

#[test]
fn mixed_recipients_report_only_those_concerned() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [
        (
            rcpt("a@example.org", None),
            failed("550 5.1.1 <a@example.org>: user unknown"),
        ),
        (rcpt("b@example.org", Some("SUCCESS")), delivered()),
        (rcpt("c@example.org", Some("NEVER")), failed("550 5.1.1 no")),
        (
            rcpt("d@example.org", Some("FAILURE")),
            deferred("452 4.2.2 mailbox full"),
        ),
        (
            rcpt("e@example.org", Some("SUCCESS")),
            failed("550 5.7.1 refused"),
        ),
    ];
    let message = dsn(&env, &reports, ReportKind::Failure).unwrap_or_default();
    let blocks = recipient_blocks(&message);
    assert_eq!(blocks.len(), 2, "{message}");
    assert!(blocks[0].contains("Final-Recipient: rfc822; a@example.org\r\n"));
    assert!(blocks[0].contains("Action: failed\r\nStatus: 5.1.1\r\n"));
    assert!(blocks[1].contains("Final-Recipient: rfc822; d@example.org\r\n"));
    assert!(
        blocks[1].contains("Action: failed\r\nStatus: 4.2.2\r\n"),
        "{}",
        blocks[1]
    );
    for absent in ["<b@example.org>", "<c@example.org>", "<e@example.org>"] {
        assert!(!message.contains(absent), "{absent} in\n{message}");
    }
    let success = dsn(&env, &reports, ReportKind::Success).unwrap_or_default();
    let blocks = recipient_blocks(&success);
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].contains(
        "Final-Recipient: rfc822; b@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
    ));
    assert!(success.contains("Subject: Successful Mail Delivery Report\r\n"));
}

#[test]
fn orcpt_and_envid_are_reported() {
    let params = MailParams {
        envid: Some("QQ 314159+x".into()),
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), params);
    let mut with_orcpt = rcpt("bob@example.org", None);
    with_orcpt.orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "Bob@Example.ORG".into(),
    });
    let reports = [
        (with_orcpt, failed("550 5.1.1 unknown")),
        (rcpt("carol@example.org", None), failed("550 5.1.1 unknown")),
    ];
    let message = dsn(&env, &reports, ReportKind::Failure).unwrap_or_default();
    let status = part_content(&message, "message/delivery-status").unwrap_or_default();
    let per_message = status.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        per_message.contains("\r\nOriginal-Envelope-Id: QQ 314159+x\r\n"),
        "{status}"
    );
    let blocks = recipient_blocks(&message);
    assert!(blocks[0].starts_with("Original-Recipient: rfc822; Bob@Example.ORG\r\nFinal-Recipient: rfc822; bob@example.org\r\n"));
    assert!(!blocks[1].contains("Original-Recipient"));

    let unprintable = MailParams {
        envid: Some("a\r\nAction: delivered".into()),
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), unprintable);
    let message = dsn(&env, &reports, ReportKind::Failure).unwrap_or_default();
    assert!(message.contains("Original-Envelope-Id: a+0D+0AAction:+20delivered\r\n"));
    let no_envid = envelope(Some("alice@example.com"), MailParams::default());
    let message = dsn(&no_envid, &reports, ReportKind::Failure).unwrap_or_default();
    assert!(!message.contains("Original-Envelope-Id"));
}

fn returned_part(
    ret: Option<Ret>,
    kind: ReportKind,
    original: &[u8],
) -> (Option<String>, Option<String>) {
    let params = MailParams {
        ret,
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), params);
    let outcome = match kind {
        ReportKind::Failure => failed("550 5.1.1 unknown"),
        ReportKind::Delay => deferred("451 4.4.1 no answer"),
        ReportKind::Success => delivered(),
    };
    let reports = [(
        rcpt("bob@example.org", Some("SUCCESS,FAILURE,DELAY")),
        outcome,
    )];
    let built = build(&env, &reports, kind, original, "relay.example.net", now());
    let message = text_of(&built.map(|(_, m)| m).unwrap_or_default());
    (
        part_content(&message, "message/rfc822"),
        part_content(&message, "text/rfc822-headers"),
    )
}

const HEADER: &str = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\nMessage-ID: <1@example.com>\r\n";

#[test]
fn ret_hdrs_returns_only_the_header() {
    let (full, header) = returned_part(Some(Ret::Headers), ReportKind::Failure, ORIGINAL);
    assert_eq!(full, None);
    assert_eq!(header.as_deref(), Some(HEADER));
}

#[test]
fn ret_full_or_absent_returns_the_message() {
    for ret in [Some(Ret::Full), None] {
        let (full, header) = returned_part(ret, ReportKind::Failure, ORIGINAL);
        assert_eq!(
            full.as_deref().map(str::as_bytes),
            Some(ORIGINAL),
            "{ret:?}"
        );
        assert_eq!(header, None);
    }
}

#[test]
fn large_messages_return_their_header_unless_ret_full() {
    let mut big = ORIGINAL.to_vec();
    while big.len() <= FULL_RETURN_LIMIT {
        big.extend_from_slice(&[b'x'; 78]);
        big.extend_from_slice(b"\r\n");
    }
    let (full, header) = returned_part(None, ReportKind::Failure, &big);
    assert_eq!((full, header.as_deref()), (None, Some(HEADER)));
    let (full, header) = returned_part(Some(Ret::Full), ReportKind::Failure, &big);
    assert_eq!(full.map(|f| f.len()), Some(big.len()));
    assert_eq!(header, None);
}

#[test]
fn delay_and_success_reports_return_the_header() {
    for kind in [ReportKind::Delay, ReportKind::Success] {
        let (full, header) = returned_part(Some(Ret::Full), kind, ORIGINAL);
        assert_eq!((full, header.as_deref()), (None, Some(HEADER)), "{kind:?}");
    }
}

#[test]
fn overlong_lines_are_not_returned() {
    let long = "y".repeat(999);
    let body_line = format!("{HEADER}\r\n{long}\r\n");
    let (full, header) = returned_part(Some(Ret::Full), ReportKind::Failure, body_line.as_bytes());
    assert_eq!((full, header.as_deref()), (None, Some(HEADER)));
    let header_line = format!("X-Long: {long}\r\n\r\nbody\r\n");
    let (full, header) =
        returned_part(Some(Ret::Full), ReportKind::Failure, header_line.as_bytes());
    assert_eq!((full, header), (None, None));
    let fits = format!("X-Long: {}\r\n\r\nbody\r\n", &long[..990]);
    let (full, _) = returned_part(Some(Ret::Full), ReportKind::Failure, fits.as_bytes());
    assert_eq!(full.as_deref(), Some(fits.as_str()));
}

#[test]
fn header_block_edges() {
    assert_eq!(original::header_block(b"\r\nbody\r\n"), b"");
    assert_eq!(original::header_block(b"A: b\r\n"), b"A: b\r\n");
    assert_eq!(original::header_block(b"A: b\r\n\r\n"), b"A: b\r\n");
    assert_eq!(original::header_block(b""), b"");
}

#[test]
fn hostile_replies_cannot_add_fields_or_long_lines() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let injected = "550 5.1.1 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@y";
    let long = format!("550 5.7.1 {} {}", "w".repeat(3000), "word ".repeat(400));
    let reports = [
        (rcpt("a@example.org", None), failed(injected)),
        (rcpt("b@example.org", None), failed(&long)),
    ];
    let message = dsn(&env, &reports, ReportKind::Failure).unwrap_or_default();
    let blocks = recipient_blocks(&message);
    assert_eq!(blocks.len(), 2, "{message}");
    assert_eq!(message.matches("\r\nAction: ").count(), 2);
    assert!(blocks[0].contains("Diagnostic-Code: smtp; 550 5.1.1 no??Action: delivered????Final-Recipient:\r\n rfc822; x@y\r\n"), "{}", blocks[0]);
    for line in message.split("\r\n") {
        assert!(line.len() <= 998, "{} octets", line.len());
    }
    // Folding keeps the words: unfolded, the long reply is there again.
    let unfolded = blocks[1].replace("\r\n ", " ");
    assert!(unfolded.contains(&format!("smtp; 550 5.7.1 {}", "w".repeat(900))));
    assert!(unfolded.contains(&"word ".repeat(399)));
}

#[test]
fn the_boundary_avoids_the_content() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [(rcpt("bob@example.org", None), failed("550 5.1.1 unknown"))];
    let report = Report::select(
        &env,
        &reports,
        ReportKind::Failure,
        "relay.example.net",
        now(),
    );
    let Some(report) = report else {
        panic!("a report is due");
    };
    let first = format!("=_sluice_{FIXED_ID}_0");
    let (_, plain) = report.compose(ORIGINAL, fixed_id());
    assert!(text_of(&plain).contains(&format!("boundary=\"{first}\"")));
    let tricky = format!("Subject: x\r\n\r\n--{first}\r\n--=_sluice_{FIXED_ID}_1--\r\n");
    let (_, message) = report.compose(tricky.as_bytes(), fixed_id());
    let message = text_of(&message);
    assert!(
        message.contains(&format!("boundary=\"=_sluice_{FIXED_ID}_2\"")),
        "{message}"
    );
}

#[test]
fn the_notification_envelope() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [(rcpt("bob@example.org", None), failed("550 5.1.1 unknown"))];
    let built = build(
        &env,
        &reports,
        ReportKind::Failure,
        ORIGINAL,
        "relay.example.net",
        now(),
    );
    let Some((bounce, message)) = built else {
        panic!("a notification is due");
    };
    assert_ne!(bounce.id, env.id);
    assert_eq!(bounce.reverse_path, None);
    assert_eq!(
        bounce.recipients,
        vec![rcpt("alice@example.com", Some("NEVER"))]
    );
    assert_eq!(bounce.received_at_ms, 1_700_003_600_000);
    assert_eq!(bounce.client_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(bounce.authenticated_user, None);
    assert_eq!(bounce.attempts, 0);
    assert_eq!(bounce.params.size, Some(message.len() as u64));
    assert_eq!((bounce.params.body, bounce.params.smtputf8), (None, false));
    assert!(text_of(&message).contains(&format!(
        "Message-ID: <{}.dsn@relay.example.net>\r\n",
        bounce.id
    )));
    let again = build(
        &env,
        &reports,
        ReportKind::Failure,
        ORIGINAL,
        "relay.example.net",
        now(),
    );
    assert_ne!(again.map(|(e, _)| e.id), Some(bounce.id));
}

#[test]
fn internationalized_addresses() {
    let env = envelope(Some("jörg@bücher.example"), MailParams::default());
    let reports = [(rcpt("zoë@exämple.org", None), failed("550 5.1.1 unknown"))];
    let built = build(
        &env,
        &reports,
        ReportKind::Failure,
        "Subject: é\r\n\r\nb\r\n".as_bytes(),
        "relay.example.net",
        now(),
    );
    let Some((bounce, message)) = built else {
        panic!("a notification is due");
    };
    assert!(bounce.params.smtputf8);
    assert_eq!(bounce.params.body, Some(Body::EightBitMime));
    let message = text_of(&message);
    assert!(
        message.contains("Final-Recipient: utf-8; zo\\x{EB}@ex\\x{E4}mple.org\r\n"),
        "{message}"
    );
    assert!(message.contains("Content-Type: message/rfc822\r\nContent-Description: Undelivered message\r\nContent-Transfer-Encoding: 8bit\r\n"));
    let status = part_content(&message, "message/delivery-status").unwrap_or_default();
    assert!(status.is_ascii());
}

#[test]
fn status_codes() {
    use ReportKind::*;
    let failed_with = |status: &str, reply: &str| Outcome::Failed {
        remote_mta: None,
        status: status.into(),
        reply: reply.into(),
    };
    let cases: &[(ReportKind, Outcome, &str)] = &[
        (Failure, failed_with("5.1.1", "550 5.2.2 full"), "5.1.1"),
        (Failure, failed_with("", "550 5.2.2 full"), "5.2.2"),
        (Failure, failed_with("bogus", "550 no code"), "5.0.0"),
        (Failure, failed_with("2.0.0", "554-5.7.1 nope"), "5.7.1"),
        (Failure, deferred("451 4.7.1 greylisted"), "4.7.1"),
        (Failure, deferred("connection refused"), "4.4.7"),
        (Delay, deferred("421 4.4.2 timeout"), "4.4.2"),
        (Delay, deferred("451 greylisted"), "4.0.0"),
        (Delay, deferred("451 5.1.1 confused"), "4.0.0"),
        (Delay, deferred("4511 4.1.1 not a reply"), "4.0.0"),
        (Success, delivered(), "2.0.0"),
        (
            Success,
            Outcome::Delivered {
                remote_mta: None,
                reply: "250 2.6.0 queued".into(),
            },
            "2.6.0",
        ),
        (
            Success,
            Outcome::Delivered {
                remote_mta: None,
                reply: "250 2.1234.0 x".into(),
            },
            "2.0.0",
        ),
    ];
    for (kind, outcome, want) in cases {
        assert_eq!(
            status::status_code(*kind, outcome),
            *want,
            "{kind:?} {outcome:?}"
        );
    }
}

#[test]
fn diagnostic_types() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [(
        rcpt("bob@example.org", None),
        deferred("connect to mx.example.org: connection refused"),
    )];
    let message = dsn(&env, &reports, ReportKind::Delay).unwrap_or_default();
    assert!(
        message.contains(
            "\r\nDiagnostic-Code: X-Sluice; connect to mx.example.org: connection refused\r\n"
        ),
        "{message}"
    );
    assert!(!message.contains("Remote-MTA"));
}

#[test]
fn folding() {
    assert_eq!(text::fold("A: short value"), "A: short value");
    let words = format!("A: {}", ["word"; 20].join(" "));
    let folded = text::fold(&words);
    assert_eq!(folded.replace("\r\n", ""), words);
    assert!(
        folded
            .split("\r\n")
            .all(|l| l.len() <= 78 && !l.trim().is_empty()),
        "{folded}"
    );
    let gap = format!("A: {}{}", "x".repeat(70), "     y");
    assert!(text::fold(&gap).split("\r\n").all(|l| !l.trim().is_empty()));
    let run = "z".repeat(2500);
    let folded = text::fold(&run);
    assert_eq!(
        folded.split("\r\n").map(str::len).collect::<Vec<_>>(),
        [998, 998, 506]
    );
}

/// One complete notification, octet for octet: the header block, the fields and their
/// order, the part structure.
#[test]
fn a_complete_failure_notification() {
    let params = MailParams {
        envid: Some("ENV-42".into()),
        ret: Some(Ret::Headers),
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), params);
    let mut bob = rcpt("bob@example.org", Some("FAILURE"));
    bob.orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "bob@example.org".into(),
    });
    let reports = [
        (
            bob,
            failed("550 5.1.1 <bob@example.org>: Recipient address rejected"),
        ),
        (
            rcpt("carol@example.org", None),
            deferred("connection timed out"),
        ),
    ];
    let report = Report::select(
        &env,
        &reports,
        ReportKind::Failure,
        "relay.example.net",
        now(),
    );
    let Some(report) = report else {
        panic!("a report is due");
    };
    let (_, message) = report.compose(ORIGINAL, fixed_id());
    let b = format!("=_sluice_{FIXED_ID}_0");
    let want = format!(
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n\
To: <alice@example.com>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
Message-ID: <{FIXED_ID}.dsn@relay.example.net>\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"{b}\"\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--{b}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Description: Notification\r\n\
\r\n\
This is the mail system at relay.example.net.\r\n\
\r\n\
Your message could not be delivered to the recipients below. The mail\r\n\
system has given up on them: it will not try again.\r\n\
\r\n\
<bob@example.org>: host mx.example.org said:\r\n\
\x20   550 5.1.1 <bob@example.org>: Recipient address rejected\r\n\
\r\n\
<carol@example.org>:\r\n\
\x20   connection timed out\r\n\
\r\n\
Your message has queue ID {FIXED_ID} and arrived on Tue, 14 Nov 2023 22:13:20 +0000.\r\n\
\r\n\
--{b}\r\n\
Content-Type: message/delivery-status\r\n\
Content-Description: Delivery report\r\n\
\r\n\
Reporting-MTA: dns; relay.example.net\r\n\
X-Sluice-Queue-ID: {FIXED_ID}\r\n\
Original-Envelope-Id: ENV-42\r\n\
Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
\r\n\
Original-Recipient: rfc822; bob@example.org\r\n\
Final-Recipient: rfc822; bob@example.org\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.org\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected\r\n\
Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
\r\n\
Final-Recipient: rfc822; carol@example.org\r\n\
Action: failed\r\n\
Status: 4.4.7\r\n\
Diagnostic-Code: X-Sluice; connection timed out\r\n\
Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
\r\n\
--{b}\r\n\
Content-Type: text/rfc822-headers\r\n\
Content-Description: Header of the message\r\n\
\r\n\
{HEADER}\
\r\n\
--{b}--\r\n"
    );
    let got = text_of(&message);
    for (i, (g, w)) in got.split("\r\n").zip(want.split("\r\n")).enumerate() {
        assert_eq!(g, w, "line {i}");
    }
    assert_eq!(got, want);
}
