//! Session transcripts: each test reads like an SMTP conversation, under the small
//! [`TestPolicy`] and a fixed clock. Transcripts that exercise the relay policy's own
//! decisions run under the real snapshot in `policy::session`.

use super::transcript::{FixedEnv, T, TRACE, TestPolicy, config, enqueued, reply, tls};
use super::*;
use crate::envelope::SenderTrust;
use std::sync::OnceLock;

fn policy() -> Arc<TestPolicy> {
    static POLICY: OnceLock<Arc<TestPolicy>> = OnceLock::new();
    POLICY
        .get_or_init(|| Arc::new(TestPolicy::example()))
        .clone()
}

fn session(kind: ListenerKind, ip: &str) -> T<TestPolicy> {
    T::new(kind, ip, policy())
}

fn relay(ip: &str) -> T<TestPolicy> {
    session(ListenerKind::Relay, ip)
}

#[test]
fn trusted_client_relays_and_gets_queue_id_only_after_enqueue() {
    let mut t = relay("10.1.2.3");
    let ehlo = t.ok("EHLO client.test").to_string();
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "AUTH offered without TLS: {ehlo}");
    t.says(
        "MAIL FROM:<a@sender.example> RET=HDRS ENVID=x+2By",
        250,
        Some("2.1.0"),
    );
    t.says(
        "RCPT TO:<b@foreign.example> NOTIFY=FAILURE ORCPT=rfc822;b@foreign.example",
        250,
        Some("2.1.5"),
    );
    t.says("DATA", 354, None);
    let (envelope, message) = enqueued(t.content(b"Subject: hi\r\n\r\n..dot\r\n.\r\n"));
    assert_eq!(
        envelope.recipients[0].address.to_string(),
        "b@foreign.example"
    );
    assert!(envelope.recipients[0].notify.is_some_and(|n| n.failure));
    assert_eq!(envelope.params.envid.as_deref(), Some("x+y"));
    assert!(envelope.trace.is_some(), "each message starts a trace");
    let text = String::from_utf8(message).unwrap();
    assert!(
        text.starts_with("Received: from client.test ([10.1.2.3])"),
        "{text}"
    );
    assert!(text.ends_with("\r\nSubject: hi\r\n\r\n.dot\r\n"), "{text}");
    let reply = match t.0.enqueue_result(Ok(())) {
        Step::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reply.to_string(),
        format!("250 2.0.0 Ok: queued as {}", envelope.id)
    );
}

#[test]
fn queue_failure_is_a_temporary_error_never_250() {
    let failures = [
        (
            QueueFailure::Failed {
                detail: "I/O error".into(),
            },
            451,
            "4.3.0",
        ),
        (
            QueueFailure::Full {
                detail: "No space left on device".into(),
            },
            452,
            "4.3.1",
        ),
    ];
    for (error, code, status) in failures {
        let detail = match &error {
            QueueFailure::Failed { detail } | QueueFailure::Full { detail } => detail.clone(),
        };
        let mut t = relay("10.0.0.1");
        t.ok("HELO client.test");
        t.ok("MAIL FROM:<>");
        t.ok("RCPT TO:<b@foreign.example>");
        t.ok("DATA");
        let _ = enqueued(t.content(b"x\r\n.\r\n"));
        match t.0.enqueue_result(Err(error)) {
            Step::Reply(r) => assert_eq!((r.code, r.status), (code, Some(status))),
            other => panic!("{other:?}"),
        }
        let rejection = t.0.take_rejection().unwrap();
        assert_eq!(
            (rejection.reason, rejection.detail),
            ("queue_error", detail)
        );
        t.says("RCPT TO:<b@foreign.example>", 503, Some("5.5.1"));
    }
}

#[test]
fn sequencing_errors_are_503() {
    let mut t = relay("10.0.0.1");
    t.says("MAIL FROM:<a@b.example>", 503, Some("5.5.1"));
    t.ok("EHLO c.test");
    t.says("RCPT TO:<a@b.example>", 503, Some("5.5.1"));
    t.says("DATA", 503, Some("5.5.1"));
    t.ok("MAIL FROM:<a@b.example>");
    t.says("MAIL FROM:<a@b.example>", 503, Some("5.5.1"));
    t.says("DATA", 554, Some("5.5.1"));
}

#[test]
fn too_many_errors_close_the_session_with_421() {
    let mut t = relay("10.0.0.1");
    for _ in 0..9 {
        t.says("BOGUS", 500, Some("5.5.2"));
    }
    match t.0.command(b"BOGUS") {
        Step::Close(r) => assert_eq!((r.code, r.status), (421, Some("4.7.0"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn limits_on_size_and_recipients() {
    let mut t = relay("10.0.0.1");
    t.ok("EHLO c.test");
    t.says("MAIL FROM:<a@b.example> SIZE=1001", 552, Some("5.3.4"));
    t.ok("MAIL FROM:<a@b.example> SIZE=1000");
    for i in 0..3 {
        t.ok(&format!("RCPT TO:<r{i}@x.example>"));
    }
    t.says("RCPT TO:<r9@x.example>", 452, Some("4.5.3"));
    t.ok("DATA");
    let big = format!("{}\r\n.\r\n", "a".repeat(900).repeat(2));
    match t.content(big.as_bytes()) {
        Step::Reply(r) => assert_eq!((r.code, r.status), (552, Some("5.3.4"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.0.take_rejection().unwrap().reason, "message_too_big");
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut t = relay("10.0.0.1");
    t.ok("EHLO c.test");
    t.says("MAIL FROM:<jösé@b.example>", 553, Some("5.6.7"));
    t.ok("MAIL FROM:<jösé@b.example> SMTPUTF8");
    t.ok("RCPT TO:<δοκιμή@παράδειγμα.example>");
}

#[test]
fn auth_is_refused_in_plaintext_and_works_after_starttls() {
    let mut t = relay("192.0.2.9");
    t.ok("EHLO c.test");
    t.says("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 538, Some("5.7.11"));
    t.says("STARTTLS", 220, Some("2.0.0"));
    t.0.tls_started(tls());
    t.says("MAIL FROM:<a@b.example>", 503, Some("5.5.1"));
    let ehlo = t.ok("EHLO c.test").to_string();
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    match t.0.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==") {
        Step::VerifyCredentials { username, password } => {
            assert_eq!((username.as_str(), password.as_str()), ("alice", "secret"));
        }
        other => panic!("{other:?}"),
    }
    let r = match t.0.auth_result(AuthOutcome::Accepted) {
        Step::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.code, r.status), (235, Some("2.7.0")));
    let refused = t.says("MAIL FROM:<bob@elsewhere.example>", 553, Some("5.7.1"));
    assert_eq!(
        refused.to_string().trim_end(),
        "553 5.7.1 test: sender_not_owned"
    );
    assert_eq!(t.0.take_rejection().unwrap().reason, "sender_not_owned");
    t.ok("MAIL FROM:<anyone@alice.example>");
    t.ok("RCPT TO:<b@foreign.example>");
}

#[test]
fn auth_login_exchange_and_failure() {
    let mut t = session(ListenerKind::Submission, "192.0.2.9");
    t.0.tls_started(tls());
    t.ok("EHLO c.test");
    t.says("MAIL FROM:<alice@local.example>", 530, Some("5.7.0"));
    t.says("AUTH LOGIN", 334, None);
    assert!(t.0.in_auth_exchange());
    t.says("YWxpY2U=", 334, None);
    match t.0.command(b"d3Jvbmc=") {
        Step::VerifyCredentials { username, password } => {
            assert_eq!((username.as_str(), password.as_str()), ("alice", "wrong"))
        }
        other => panic!("{other:?}"),
    }
    match t.0.auth_result(AuthOutcome::Rejected) {
        Step::Reply(r) => assert_eq!((r.code, r.status), (535, Some("5.7.8"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.0.failed_auths(), 1);
    t.says("AUTH LOGIN", 334, None);
    t.says("*", 501, Some("5.0.0"));
}

#[test]
fn auth_that_cannot_be_checked_now_is_a_temporary_failure() {
    let mut t = session(ListenerKind::Submission, "192.0.2.9");
    t.0.tls_started(tls());
    t.ok("EHLO c.test");
    assert!(matches!(
        t.0.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        Step::VerifyCredentials { .. }
    ));
    match t.0.auth_result(AuthOutcome::Unavailable) {
        Step::Reply(r) => assert_eq!((r.code, r.status), (454, Some("4.7.0"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.0.failed_auths(), 0, "nothing was checked");
    assert!(matches!(
        t.0.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        Step::VerifyCredentials { .. }
    ));
}

#[test]
fn bdat_chunks_and_refused_chunk_is_read_before_the_reply() {
    let mut t = relay("10.0.0.1");
    t.ok("EHLO c.test");
    assert!(matches!(t.0.command(b"BDAT 5"), Step::ReadChunk));
    assert!(t.0.receiving_message());
    match t.0.message_bytes(b"abcdeMAIL") {
        (5, Some(Step::Reply(r))) => assert_eq!((r.code, r.status), (503, Some("5.5.1"))),
        other => panic!("{other:?}"),
    }
    t.ok("MAIL FROM:<a@b.example>");
    t.ok("RCPT TO:<c@d.example>");
    assert!(matches!(t.0.command(b"BDAT 4"), Step::ReadChunk));
    match t.0.message_bytes(b"a\r\nb") {
        (4, Some(Step::Reply(r))) => assert_eq!(r.code, 250),
        other => panic!("{other:?}"),
    }
    assert!(matches!(t.0.command(b"BDAT 2 LAST"), Step::ReadChunk));
    let (n, step) = t.0.message_bytes(b"\r\nQUIT\r\n");
    assert_eq!(n, 2);
    let (_, message) = enqueued(step.unwrap());
    assert!(message.ends_with(b"\r\na\r\nb\r\n"));
}

#[test]
fn smuggled_end_of_data_does_not_start_a_second_transaction() {
    use crate::smtp::data::BareLineEndings;
    for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
        let mut config = (*config(ListenerKind::Relay)).clone();
        config.bare_line_endings = mode;
        let env = FixedEnv::at("Tue, 2 Jan 2024 03:04:05 +0100");
        let mut t = T::with(Arc::new(config), policy(), env, "10.0.0.1");
        t.ok("EHLO c.test");
        t.ok("MAIL FROM:<a@b.example>");
        t.ok("RCPT TO:<c@d.example>");
        t.ok("DATA");
        let input = b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<evil@e.example>\r\nRCPT TO:<v@f.example>\r\nDATA\r\nbad\r\n.\r\nQUIT\r\n";
        let (n, step) = t.0.message_bytes(input);
        assert_eq!(&input[n..], b"QUIT\r\n");
        match (mode, step) {
            (BareLineEndings::Normalize, Some(step)) => {
                // One message, the would-be second transaction its content.
                let (envelope, message) = enqueued(step);
                assert_eq!(envelope.recipients.len(), 1);
                assert!(message.ends_with(b"\r\nhi\r\n\r\nMAIL FROM:<evil@e.example>\r\nRCPT TO:<v@f.example>\r\nDATA\r\nbad\r\n"));
            }
            (BareLineEndings::Reject, Some(Step::Reply(r))) => {
                assert_eq!((r.code, r.status), (550, Some("5.5.2")));
                assert!(!t.0.in_transaction());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn without_memory_new_transactions_recipients_and_content_get_452() {
    let mut t = relay("10.1.2.3");
    t.ok("EHLO client.test");
    t.0.set_resources(Resources::Exhausted);
    t.says("MAIL FROM:<a@sender.example>", 452, Some("4.3.1"));
    assert_eq!(t.0.take_rejection().unwrap().reason, "insufficient_storage");
    t.0.set_resources(Resources::Available);
    t.ok("MAIL FROM:<a@sender.example>");
    t.0.set_resources(Resources::Exhausted);
    t.says("RCPT TO:<b@remote.example>", 452, Some("4.3.1"));
    t.0.set_resources(Resources::Available);
    t.ok("RCPT TO:<b@remote.example>");
    t.0.set_resources(Resources::Exhausted);
    t.says("DATA", 452, Some("4.3.1"));
    assert!(!t.0.receiving_message(), "no content after a refused DATA");
    // A BDAT chunk refused for want of memory is still read, then answered.
    assert!(matches!(t.0.command(b"BDAT 5 LAST"), Step::ReadChunk));
    let (n, step) = t.0.message_bytes(b"hello");
    assert_eq!(n, 5);
    match step {
        Some(Step::Reply(r)) => assert_eq!((r.code, r.status), (452, Some("4.3.1"))),
        other => panic!("expected 452, got {other:?}"),
    }
    // The transaction is intact: with memory back, the message goes through.
    t.0.set_resources(Resources::Available);
    t.ok("DATA");
    let (envelope, _) = enqueued(t.content(b"Subject: x\r\n\r\nhi\r\n.\r\n"));
    assert_eq!(envelope.recipients.len(), 1);
}

#[test]
fn content_taken_by_the_ingress_as_it_comes_and_dropped_content_gets_451() {
    let mut t = relay("10.1.2.3");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    t.ok("RCPT TO:<b@remote.example>");
    assert!(!t.0.content_in_progress());
    t.ok("DATA");
    assert!(t.0.content_in_progress());
    let first = b"Subject: x\r\n\r\nfirst ";
    let (n, step) = t.0.message_bytes(first);
    assert!(step.is_none() && n == first.len());
    let taken = std::mem::take(t.0.content_buffer().unwrap());
    let received = String::from_utf8(taken).unwrap();
    assert!(received.starts_with("Received: ") && received.ends_with("first "));
    let (_, tail) = enqueued(t.content(b"second\r\n.\r\n"));
    assert_eq!(tail, b"second\r\n", "only what was not taken");
    assert!(!t.0.content_in_progress());
    match t.0.content_dropped("no room".into()) {
        Step::Reply(r) => assert_eq!((r.code, r.status), (451, Some("4.3.1"))),
        other => panic!("expected 451, got {other:?}"),
    }
    let rejection = t.0.take_rejection().unwrap();
    assert_eq!(
        (rejection.reason, rejection.detail.as_str()),
        ("insufficient_storage", "no room")
    );
    assert!(rejection.queue_id.is_some());
    t.ok("MAIL FROM:<a@sender.example>");
}

#[test]
fn the_policys_refusal_of_a_recipient_is_the_reply_and_the_rejection() {
    let mut t = relay("192.0.2.9");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    let r = t.says("RCPT TO:<b@foreign.example>", 554, Some("5.7.1"));
    assert_eq!(r.to_string().trim_end(), "554 5.7.1 test: relay_denied");
    let rejection = t.0.take_rejection().unwrap();
    assert_eq!(
        (rejection.reason, rejection.detail.as_str()),
        ("relay_denied", "test: relay_denied")
    );
    assert!(rejection.queue_id.is_some(), "refused within a transaction");
    t.ok("RCPT TO:<x@partner.example>");
}

#[test]
fn the_clock_and_ids_come_from_the_caller() {
    let env = FixedEnv::at("Tue, 2 Jan 2024 03:04:05 +0100");
    let policy = Arc::new(TestPolicy::example());
    let mut t = T::with(config(ListenerKind::Relay), policy, env.clone(), "10.1.2.3");
    t.0.tls_started(tls());
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    t.ok("RCPT TO:<b@foreign.example>");
    t.ok("DATA");
    // The header is dated when the content starts, the message received when it ends.
    env.set("Tue, 2 Jan 2024 03:04:09 +0100");
    let (envelope, message) = enqueued(t.content(b"Subject: hi\r\n\r\nbody\r\n.\r\n"));
    assert_eq!(envelope.id.as_str(), "00000000000000000000000001");
    assert_eq!(envelope.trace.unwrap().to_string(), TRACE);
    assert_eq!(envelope.received_at_ms, 1_704_161_049_000);
    assert_eq!(
        String::from_utf8(message).unwrap(),
        "Received: from client.test ([10.1.2.3])\r\n\
         \t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\
         \tby relay.test (Sluice) with ESMTPS id 00000000000000000000000001\r\n\
         \tfor <b@foreign.example>; Tue, 02 Jan 2024 03:04:05 +0100\r\n\
         Subject: hi\r\n\r\nbody\r\n"
    );
    assert_eq!(
        reply(t.0.enqueue_result(Ok(()))).to_string().trim_end(),
        "250 2.0.0 Ok: queued as 00000000000000000000000001"
    );
    // Each transaction takes the next id, refused or not.
    t.ok("MAIL FROM:<a@sender.example>");
    t.ok("RSET");
    t.ok("MAIL FROM:<a@sender.example>");
    t.ok("RCPT TO:<c@foreign.example>");
    t.ok("DATA");
    let (envelope, _) = enqueued(t.content(b"x\r\n.\r\n"));
    assert_eq!(envelope.id.as_str(), "00000000000000000000000003");
}

#[test]
fn a_newer_policy_that_no_longer_knows_the_user_ends_the_session() {
    let mut t = session(ListenerKind::Submission, "192.0.2.9");
    t.0.tls_started(tls());
    t.ok("EHLO c.test");
    assert!(matches!(
        t.0.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        Step::VerifyCredentials { .. }
    ));
    reply(t.0.auth_result(AuthOutcome::Accepted));
    let same = Arc::new(TestPolicy {
        max_recipients: Some(1),
        ..TestPolicy::example()
    });
    assert_eq!(t.0.adopt_policy(Arc::clone(&same)), None);
    assert!(Arc::ptr_eq(t.0.policy(), &same), "the newer policy applies");
    t.ok("MAIL FROM:<alice@local.example>");
    t.ok("RCPT TO:<a@foreign.example>");
    t.says("RCPT TO:<b@foreign.example>", 452, Some("4.5.3"));
    t.ok("RSET");
    let mut changed = TestPolicy::example();
    changed.users[0].1 = 2;
    let ended = t.0.adopt_policy(Arc::new(changed)).unwrap();
    assert_eq!(
        ended.to_string().trim_end(),
        "421 4.7.0 relay.test Error: credentials no longer valid, reconnect"
    );
}

/// Block lists that untrusted, unauthenticated clients must pass.
fn with_dnsbl(ip: &str) -> T<TestPolicy> {
    let policy = TestPolicy {
        dnsbl_exempt: Some(vec![
            SenderTrust::Authenticated,
            SenderTrust::TrustedNetwork,
        ]),
        ..TestPolicy::example()
    };
    let mut t = T::new(ListenerKind::Relay, ip, Arc::new(policy));
    t.ok("EHLO c.test");
    t.ok("MAIL FROM:<s@c.test>");
    t
}

fn listed() -> ClientVerdict {
    ClientVerdict::Refused(super::transcript::refusal("dnsbl", 554, "5.7.1"))
}

#[test]
fn the_first_accepted_rcpt_asks_once_and_later_ones_hear_the_same() {
    let mut s = with_dnsbl("192.0.2.1");
    // Refused by the relay rules first: no lookup for it.
    let denied = s.says("RCPT TO:<x@foreign.example>", 554, Some("5.7.1"));
    assert_eq!(denied.code, 554);
    assert!(
        s.0.take_rejection()
            .is_some_and(|r| r.reason == "relay_denied")
    );
    assert!(matches!(
        s.0.command(b"RCPT TO:<a@partner.example>"),
        Step::CheckClient
    ));
    let refused = reply(s.0.client_checked(listed()));
    assert_eq!(refused.to_string().trim_end(), "554 5.7.1 test: dnsbl");
    let rejection = s.0.take_rejection().unwrap();
    assert_eq!(rejection.reason, "dnsbl");
    assert_eq!(rejection.detail, "test: dnsbl");
    // RSET and a new transaction: the same verdict, without asking again.
    s.ok("RSET");
    s.ok("MAIL FROM:<s@c.test>");
    let again = reply(s.0.command(b"RCPT TO:<b@partner.example>"));
    assert_eq!(again, refused);
    assert_eq!(s.0.take_rejection().unwrap().reason, "dnsbl");
}

#[test]
fn clear_unavailable_and_trusted_clients() {
    let mut s = with_dnsbl("192.0.2.1");
    assert!(matches!(
        s.0.command(b"RCPT TO:<a@partner.example>"),
        Step::CheckClient
    ));
    assert_eq!(reply(s.0.client_checked(ClientVerdict::Clear)).code, 250);
    assert_eq!(reply(s.0.command(b"RCPT TO:<b@partner.example>")).code, 250);
    assert!(s.0.in_transaction());

    let mut s = with_dnsbl("192.0.2.1");
    assert!(matches!(
        s.0.command(b"RCPT TO:<a@partner.example>"),
        Step::CheckClient
    ));
    let unavailable = super::transcript::refusal("dnsbl_unavailable", 451, "4.7.1");
    let reply_451 = reply(s.0.client_checked(ClientVerdict::Refused(unavailable)));
    assert_eq!((reply_451.code, reply_451.status), (451, Some("4.7.1")));
    assert_eq!(s.0.take_rejection().unwrap().reason, "dnsbl_unavailable");

    let mut trusted = with_dnsbl("10.1.2.3");
    assert_eq!(
        reply(trusted.0.command(b"RCPT TO:<a@partner.example>")).code,
        250
    );
    // A verdict nobody asked for is a sequence error, not a recipient.
    assert_eq!(
        reply(trusted.0.client_checked(ClientVerdict::Clear)).code,
        503
    );
}
