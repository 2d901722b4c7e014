//! Session transcripts: each test reads like an SMTP conversation.

use super::*;
use crate::policy::hash_password;
use crate::queue::QueueError;
use std::sync::OnceLock;

fn policy() -> Arc<PolicySnapshot> {
    static POLICY: OnceLock<Arc<PolicySnapshot>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let yaml = format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: test}}\nspec:\n  \
                 trustedNetworks: [\"10.0.0.0/8\"]\n  \
                 localDomains:\n    - domain: local.example\n      delivery: {{maildir: {{path: /tmp/sluice-test}}}}\n  \
                 relayDomains: [partner.example]\n  \
                 users:\n    - name: alice\n      passwordHash: \"{}\"\n      allowedSenders: [\"alice@local.example\", \"@alice.example\"]\n  \
                 limits: {{maxRecipients: 3}}\n",
                hash_password("secret")
            );
            Arc::new(PolicySnapshot::from_yaml(&[("test".into(), yaml)]).unwrap())
        })
        .clone()
}

fn config(kind: ListenerKind) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "relay.test".into(),
        kind,
        tls_available: true,
        allow_plaintext_auth: false,
        max_message_size: 1000,
        max_recipients: 100,
        max_data_line: 998,
        max_received_headers: 3,
        bare_line_endings: Default::default(),
        max_errors: 10,
        received_user: ReceivedUser::default_for(kind),
    })
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
}

struct T(Session);

impl T {
    fn new(kind: ListenerKind, ip: &str) -> T {
        let conn = ConnectionInfo {
            client_ip: ip.parse().unwrap(),
            tls: None,
        };
        T(Session::new(config(kind), policy(), conn))
    }

    fn relay(ip: &str) -> T {
        T::new(ListenerKind::Relay, ip)
    }

    /// Sends a command line and checks the reply's code and enhanced status code.
    fn says(&mut self, line: &str, code: u16, status: Option<&str>) -> Reply {
        let reply = match self.0.command(line.as_bytes()) {
            Step::Reply(r) | Step::Close(r) | Step::StartTls(r) | Step::StartData(r) => r,
            other => panic!("{line}: expected a reply, got {other:?}"),
        };
        assert_eq!(
            (reply.code, reply.status),
            (code, status),
            "{line}: {reply}"
        );
        reply
    }

    fn ok(&mut self, line: &str) -> Reply {
        let reply = match self.0.command(line.as_bytes()) {
            Step::Reply(r) | Step::StartData(r) => r,
            other => panic!("{line}: expected a reply, got {other:?}"),
        };
        assert!(reply.is_positive(), "{line}: {reply}");
        reply
    }

    /// Sends message content in one piece and returns the step at its end.
    fn content(&mut self, bytes: &[u8]) -> Step {
        let (n, step) = self.0.message_bytes(bytes);
        assert_eq!(n, bytes.len());
        step.expect("content complete")
    }
}

fn enqueued(step: Step) -> (Envelope, Vec<u8>) {
    match step {
        Step::Enqueue(m) => *m,
        other => panic!("expected Enqueue, got {other:?}"),
    }
}

#[test]
fn trusted_client_relays_and_gets_queue_id_only_after_enqueue() {
    let mut t = T::relay("10.1.2.3");
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
fn a_local_part_maildir_cannot_store_is_refused_at_rcpt() {
    let mut t = T::relay("192.0.2.9");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    let r = t.says("RCPT TO:<\"../x\"@local.example>", 553, Some("5.1.3"));
    assert!(r.to_string().contains("cannot be delivered here"), "{r}");
    let rejection = t.0.take_rejection().unwrap();
    assert_eq!(rejection.reason, "unknown_recipient");
    assert!(rejection.detail.contains("cannot name a Maildir mailbox"));
    t.says("RCPT TO:<\"a/b\"@local.example>", 553, Some("5.1.3"));
    t.says("RCPT TO:<ok@local.example>", 250, Some("2.1.5"));
}

#[test]
fn untrusted_client_is_refused_relay_but_may_send_to_local_and_relay_domains() {
    let mut t = T::relay("192.0.2.9");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    let r = t.says("RCPT TO:<b@foreign.example>", 554, Some("5.7.1"));
    assert!(r.to_string().contains("Relay access denied"));
    assert_eq!(t.0.take_rejection().unwrap().reason, "relay_denied");
    t.says("RCPT TO:<x@LOCAL.example>", 250, Some("2.1.5"));
    t.says("RCPT TO:<x@partner.example>", 250, Some("2.1.5"));
    t.says("RCPT TO:<Postmaster>", 250, Some("2.1.5"));
}

#[test]
fn queue_failure_is_a_temporary_error_never_250() {
    let failures = [
        (
            QueueError::unavailable("spool", std::io::Error::other("I/O error")),
            451,
            "4.3.0",
        ),
        (
            QueueError::full("spool", Some("No space left on device".into())),
            452,
            "4.3.1",
        ),
    ];
    for (error, code, status) in failures {
        let mut t = T::relay("10.0.0.1");
        t.ok("HELO client.test");
        t.ok("MAIL FROM:<>");
        t.ok("RCPT TO:<b@foreign.example>");
        t.ok("DATA");
        let _ = enqueued(t.content(b"x\r\n.\r\n"));
        match t.0.enqueue_result(Err(error)) {
            Step::Reply(r) => assert_eq!((r.code, r.status), (code, Some(status))),
            other => panic!("{other:?}"),
        }
        t.says("RCPT TO:<b@foreign.example>", 503, Some("5.5.1"));
    }
}

#[test]
fn sequencing_errors_are_503() {
    let mut t = T::relay("10.0.0.1");
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
    let mut t = T::relay("10.0.0.1");
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
    let mut t = T::relay("10.0.0.1");
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
    let mut t = T::relay("10.0.0.1");
    t.ok("EHLO c.test");
    t.says("MAIL FROM:<jösé@b.example>", 553, Some("5.6.7"));
    t.ok("MAIL FROM:<jösé@b.example> SMTPUTF8");
    t.ok("RCPT TO:<δοκιμή@παράδειγμα.example>");
}

#[test]
fn auth_is_refused_in_plaintext_and_works_after_starttls() {
    let mut t = T::relay("192.0.2.9");
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
    t.says("MAIL FROM:<bob@elsewhere.example>", 553, Some("5.7.1"));
    t.ok("MAIL FROM:<anyone@alice.example>");
    t.ok("RCPT TO:<b@foreign.example>");
}

#[test]
fn auth_login_exchange_and_failure() {
    let mut t = T::new(ListenerKind::Submission, "192.0.2.9");
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
    let mut t = T::new(ListenerKind::Submission, "192.0.2.9");
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
    let mut t = T::relay("10.0.0.1");
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
        let conn = ConnectionInfo {
            client_ip: "10.0.0.1".parse().unwrap(),
            tls: None,
        };
        let mut t = T(Session::new(Arc::new(config), policy(), conn));
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
    let mut t = T::relay("10.1.2.3");
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
    let mut t = T::relay("10.1.2.3");
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
