//! Who gets a notification, and the envelope it travels in.

use super::*;
use crate::delivery::outcome::Handoff;
use crate::envelope::SenderTrust;

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
        "Final-Recipient: rfc822; b@example.org\r\nAction: relayed\r\nStatus: 2.0.0\r\n"
    ));
    assert!(success.contains("Subject: Successful Mail Delivery Report\r\n"));
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
        LIMIT,
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
        LIMIT,
        now(),
    );
    assert_ne!(again.map(|(e, _)| e.id), Some(bounce.id));
}

fn delivered_by(handoff: Handoff) -> Outcome {
    Outcome::Delivered {
        remote_mta: Some("mx.example.org".into()),
        reply: "250 2.0.0 Ok".into(),
        handoff,
    }
}

#[test]
fn success_notices_only_for_trusted_senders() {
    let mut env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [(rcpt("b@example.org", Some("SUCCESS")), delivered())];
    for trust in [SenderTrust::Authenticated, SenderTrust::TrustedNetwork] {
        env.sender_trust = trust;
        assert!(
            dsn(&env, &reports, ReportKind::Success).is_some(),
            "{trust:?}"
        );
    }
    env.sender_trust = SenderTrust::Untrusted;
    assert_eq!(dsn(&env, &reports, ReportKind::Success), None);
    // Failures still go to an untrusted sender: RFC 3461 wants them, and they are
    // bounded by the return limit.
    let failed_reports = [(rcpt("b@example.org", None), failed("550 5.1.1 no"))];
    assert!(dsn(&env, &failed_reports, ReportKind::Failure).is_some());
}

#[test]
fn a_next_hop_that_took_notify_reports_success_itself() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [
        (
            rcpt("passed@example.org", Some("SUCCESS")),
            delivered_by(Handoff::NotifyPassedOn),
        ),
        (
            rcpt("relayed@example.org", Some("SUCCESS")),
            delivered_by(Handoff::Relayed),
        ),
        (
            rcpt("final@example.org", Some("SUCCESS")),
            delivered_by(Handoff::Final),
        ),
    ];
    let success = dsn(&env, &reports, ReportKind::Success).unwrap_or_default();
    let blocks = recipient_blocks(&success);
    assert_eq!(blocks.len(), 2, "{success}");
    assert!(blocks[0].contains("relayed@example.org\r\nAction: relayed\r\n"));
    assert!(blocks[1].contains("final@example.org\r\nAction: delivered\r\n"));
    assert!(!success.contains("passed@example.org"), "{success}");
    let only_passed = &reports[..1];
    assert_eq!(dsn(&env, only_passed, ReportKind::Success), None);
}
