//! The fields of the delivery-status part, and what untrusted text may do to them.

use super::*;

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
fn internationalized_addresses() {
    let env = envelope(Some("jörg@bücher.example"), MailParams::default());
    let reports = [(rcpt("zoë@exämple.org", None), failed("550 5.1.1 unknown"))];
    let built = build(
        &env,
        &reports,
        ReportKind::Failure,
        "Subject: é\r\n\r\nb\r\n".as_bytes(),
        "relay.example.net",
        LIMIT,
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
                handoff: crate::delivery::outcome::Handoff::Final,
            },
            "2.6.0",
        ),
        (
            Success,
            Outcome::Delivered {
                remote_mta: None,
                reply: "250 2.1234.0 x".into(),
                handoff: crate::delivery::outcome::Handoff::Final,
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
