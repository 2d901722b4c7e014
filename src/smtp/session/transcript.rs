//! Test harness for sessions, shared by the session's own tests and those that run it
//! under the real policy (`policy::session`): transcripts that read like an SMTP
//! conversation ([`T`]), a clock and ids fixed in advance ([`FixedEnv`]), and a small
//! [`TestPolicy`] so that the session's tests need no policy model.

use super::*;
use crate::envelope::SenderTrust;
use crate::envelope::TraceParent;
use crate::smtp::address::{Mailbox, ReversePath};
use chrono::{DateTime, FixedOffset};
use std::sync::Mutex;

pub(crate) fn config(kind: ListenerKind) -> Arc<SessionConfig> {
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

pub(crate) fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
}

/// The trace every message of a [`FixedEnv`] starts.
pub(crate) const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A clock that says what the test set, queue ids `00…01`, `00…02`, … in order, and
/// the trace [`TRACE`].
#[derive(Debug)]
pub(crate) struct FixedEnv {
    now: Mutex<DateTime<FixedOffset>>,
    ids: Mutex<u32>,
}

impl FixedEnv {
    pub(crate) fn at(rfc2822: &str) -> Arc<FixedEnv> {
        let now = DateTime::parse_from_rfc2822(rfc2822).expect("an RFC 2822 date");
        Arc::new(FixedEnv {
            now: Mutex::new(now),
            ids: Mutex::new(0),
        })
    }

    pub(crate) fn set(&self, rfc2822: &str) {
        *self.now.lock().unwrap() = DateTime::parse_from_rfc2822(rfc2822).unwrap();
    }
}

impl SessionEnv for FixedEnv {
    fn now(&self) -> DateTime<FixedOffset> {
        *self.now.lock().unwrap()
    }

    fn queue_id(&self) -> QueueId {
        let mut n = self.ids.lock().unwrap();
        *n += 1;
        QueueId::parse(&format!("{:0>26}", *n)).expect("a queue id")
    }

    fn trace(&self) -> TraceParent {
        TraceParent::parse(TRACE).expect("a traceparent")
    }
}

/// Rules small enough to read at a glance: a trusted network, domains anyone may send
/// to, users with the senders they own, and block lists that all but the exempt trusts
/// must pass. Its refusals say `test:` so that a test can tell them from the session's.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestPolicy {
    /// Clients whose address starts with this are trusted (`"10."`).
    pub trusted_prefix: &'static str,
    /// Recipient domains accepted from anyone; the empty domain is `<Postmaster>`.
    pub domains: Vec<&'static str>,
    /// Users, each with a credential generation (a changed one ends their sessions) and
    /// the senders it owns (`a@b.example` or `@b.example`).
    pub users: Vec<(&'static str, u32, Vec<&'static str>)>,
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<usize>,
    /// `Some`: block lists are configured, and these trusts skip them.
    pub dnsbl_exempt: Option<Vec<SenderTrust>>,
}

impl TestPolicy {
    /// 10.0.0.0/8 trusted, `local.example` and `partner.example` accepted, user `alice`
    /// owning `alice@local.example` and `@alice.example`, at most 3 recipients.
    pub(crate) fn example() -> TestPolicy {
        TestPolicy {
            trusted_prefix: "10.",
            domains: vec!["local.example", "partner.example", ""],
            users: vec![("alice", 1, vec!["alice@local.example", "@alice.example"])],
            max_recipients: Some(3),
            ..TestPolicy::default()
        }
    }

    fn generation(&self, user: &str) -> Option<u32> {
        self.users
            .iter()
            .find(|(name, ..)| *name == user)
            .map(|(_, generation, _)| *generation)
    }
}

/// A refusal of the test policy's, with its reason.
pub(crate) fn refusal(reason: &'static str, code: u16, status: &'static str) -> Refusal {
    Refusal {
        reason,
        detail: format!("test: {reason}"),
        reply: Reply::new(code, status, format!("test: {reason}")),
    }
}

impl SessionPolicy for TestPolicy {
    fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    fn max_message_size(&self) -> Option<u64> {
        self.max_message_size
    }

    fn max_recipients(&self) -> Option<usize> {
        self.max_recipients
    }

    fn trusts_network(&self, ip: IpAddr) -> bool {
        !self.trusted_prefix.is_empty() && ip.to_string().starts_with(self.trusted_prefix)
    }

    fn sender(&self, user: &str, reverse_path: &ReversePath) -> Result<(), Refusal> {
        let Some(sender) = reverse_path else {
            return Ok(());
        };
        let owned = self.users.iter().any(|(name, _, senders)| {
            *name == user
                && senders.iter().any(|s| {
                    s.strip_prefix('@') == Some(sender.domain.as_str()) || *s == sender.to_string()
                })
        });
        match owned {
            true => Ok(()),
            false => Err(refusal("sender_not_owned", 553, "5.7.1")),
        }
    }

    fn recipient(&self, client: &Client<'_>, forward_path: &Mailbox) -> Result<(), Refusal> {
        let domain = forward_path.domain_lowercase();
        if client.user.is_some()
            || self.trusts_network(client.ip)
            || self.domains.contains(&domain.as_str())
        {
            return Ok(());
        }
        Err(refusal("relay_denied", 554, "5.7.1"))
    }

    fn checks_client(&self, trust: SenderTrust) -> bool {
        self.dnsbl_exempt
            .as_ref()
            .is_some_and(|exempt| !exempt.contains(&trust))
    }

    fn keeps_user(&self, earlier: &Self, user: &str) -> bool {
        self.generation(user)
            .is_some_and(|now| earlier.generation(user) == Some(now))
    }
}

/// A session under test.
pub(crate) struct T<P>(pub Session<P>);

impl<P: SessionPolicy> T<P> {
    pub(crate) fn with(
        config: Arc<SessionConfig>,
        policy: Arc<P>,
        env: Arc<dyn SessionEnv>,
        ip: &str,
    ) -> T<P> {
        let conn = ConnectionInfo {
            client_ip: ip.parse().unwrap(),
            tls: None,
        };
        T(Session::new(config, policy, env, conn))
    }

    pub(crate) fn new(kind: ListenerKind, ip: &str, policy: Arc<P>) -> T<P> {
        let env = FixedEnv::at("Tue, 2 Jan 2024 03:04:05 +0100");
        T::with(config(kind), policy, env, ip)
    }

    /// Sends a command line and checks the reply's code and enhanced status code.
    pub(crate) fn says(&mut self, line: &str, code: u16, status: Option<&str>) -> Reply {
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

    pub(crate) fn ok(&mut self, line: &str) -> Reply {
        let reply = match self.0.command(line.as_bytes()) {
            Step::Reply(r) | Step::StartData(r) => r,
            other => panic!("{line}: expected a reply, got {other:?}"),
        };
        assert!(reply.is_positive(), "{line}: {reply}");
        reply
    }

    /// Sends message content in one piece and returns the step at its end.
    pub(crate) fn content(&mut self, bytes: &[u8]) -> Step {
        let (n, step) = self.0.message_bytes(bytes);
        assert_eq!(n, bytes.len());
        step.expect("content complete")
    }
}

pub(crate) fn enqueued(step: Step) -> (Envelope, Vec<u8>) {
    match step {
        Step::Enqueue(m) => *m,
        other => panic!("expected Enqueue, got {other:?}"),
    }
}

/// The reply of a step that must be a plain reply.
pub(crate) fn reply(step: Step) -> Reply {
    match step {
        Step::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}
