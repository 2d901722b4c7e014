//! The block-list check of the client (a policy's `dnsbl:`), asked at the first RCPT
//! that the relay rules accept, of a session that is neither authenticated nor from a
//! trusted network: by then the client has had its chance to AUTH. Asking DNS is the
//! connection's job; the session only asks ([`Step::CheckClient`]), keeps the verdict
//! for the rest of the session, and answers every later RCPT the same way.

use super::{Session, Step};
use crate::filter::dnsbl::{self, Verdict};
use crate::smtp::address::Recipient;
use crate::smtp::reply::Reply;

/// Where the session stands with the block lists.
#[derive(Debug, Default)]
pub(super) enum ClientCheck {
    #[default]
    NotAsked,
    /// Asked; the RCPT that asked waits for the verdict.
    Asking(Recipient),
    Clear,
    /// Listed, or the lists could not be asked and the policy fails closed.
    Refused {
        reason: &'static str,
        detail: String,
        reply: Reply,
    },
}

impl Session {
    /// The recipient back when it may join the transaction now; else the step to take:
    /// the session's refusal, or the question to the connection.
    pub(super) fn client_check(&mut self, recipient: Recipient) -> Result<Recipient, Step> {
        let Some(settings) = self.policy.dnsbl() else {
            return Ok(recipient);
        };
        // Judged at each RCPT: a client that authenticates after a refusal (RSET, AUTH)
        // is exempt from then on.
        if settings.exempts(self.sender_trust()) {
            return Ok(recipient);
        }
        match self.client_check {
            ClientCheck::Clear => Ok(recipient),
            ClientCheck::Refused { .. } => Err(self.refuse_client()),
            ClientCheck::NotAsked | ClientCheck::Asking(_) => {
                self.client_check = ClientCheck::Asking(recipient);
                Err(Step::CheckClient)
            }
        }
    }

    /// The block lists' verdict on the client, as the connection found it after a
    /// [`Step::CheckClient`]: answers the RCPT that asked.
    pub fn client_checked(&mut self, verdict: Verdict) -> Step {
        let ClientCheck::Asking(recipient) = std::mem::take(&mut self.client_check) else {
            return self.sequence_error("no client check in progress");
        };
        let ip = self.conn.client_ip;
        self.client_check = match verdict {
            Verdict::Clear => return self.clear_client(recipient),
            Verdict::Listed(zones) => ClientCheck::Refused {
                reason: "dnsbl",
                detail: format!("client [{ip}] listed by {}", zones.join(", ")),
                reply: dnsbl::listed_reply(ip, &zones),
            },
            Verdict::Unavailable => ClientCheck::Refused {
                reason: "dnsbl_unavailable",
                detail: format!("client [{ip}]: the block lists gave no verdict, failing closed"),
                reply: dnsbl::unavailable_reply(),
            },
        };
        self.refuse_client()
    }

    fn clear_client(&mut self, recipient: Recipient) -> Step {
        self.client_check = ClientCheck::Clear;
        self.add_recipient(recipient)
    }

    /// The refusal kept for the session, counted each time it is given.
    fn refuse_client(&mut self) -> Step {
        let ClientCheck::Refused {
            reason,
            detail,
            reply,
        } = &self.client_check
        else {
            return self.sequence_error("no client check refusal");
        };
        let (reason, detail, reply) = (*reason, detail.clone(), reply.clone());
        self.reject(reason, detail);
        self.error(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConnectionInfo, ListenerKind, ReceivedUser, SessionConfig};
    use super::*;
    use crate::policy::PolicySnapshot;
    use std::sync::Arc;

    fn session(ip: &str) -> Session {
        let yaml = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: t}\nspec:\n  trustedNetworks: [10.0.0.0/8]\n  relayDomains: [partner.example]\n  dnsbl: {zones: [{zone: a.test}, {zone: b.test}]}\n";
        let policy = PolicySnapshot::from_yaml(&[("t".into(), yaml.into())]).unwrap();
        let config = SessionConfig {
            hostname: "relay.test".into(),
            kind: ListenerKind::Relay,
            tls_available: false,
            allow_plaintext_auth: false,
            max_message_size: 1000,
            max_recipients: 100,
            max_data_line: 998,
            max_received_headers: 3,
            bare_line_endings: Default::default(),
            max_errors: 10,
            received_user: ReceivedUser::Omitted,
        };
        let conn = ConnectionInfo {
            client_ip: ip.parse().unwrap(),
            tls: None,
        };
        let mut s = Session::new(Arc::new(config), Arc::new(policy), conn);
        for line in ["EHLO c.test", "MAIL FROM:<s@c.test>"] {
            assert!(matches!(s.command(line.as_bytes()), Step::Reply(r) if r.is_positive()));
        }
        s
    }

    fn reply(step: Step) -> Reply {
        match step {
            Step::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn the_first_accepted_rcpt_asks_once_and_later_ones_hear_the_same() {
        let mut s = session("192.0.2.1");
        // Refused by the relay rules first: no lookup for it.
        let denied = reply(s.command(b"RCPT TO:<x@foreign.example>"));
        assert_eq!(denied.code, 554);
        assert!(
            s.take_rejection()
                .is_some_and(|r| r.reason == "relay_denied")
        );
        assert!(matches!(
            s.command(b"RCPT TO:<a@partner.example>"),
            Step::CheckClient
        ));
        let listed = reply(s.client_checked(Verdict::Listed(vec!["b.test".into()])));
        assert_eq!(
            listed.to_string().trim_end(),
            "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using b.test"
        );
        let rejection = s.take_rejection().unwrap();
        assert_eq!(rejection.reason, "dnsbl");
        assert!(rejection.detail.contains("b.test"), "{}", rejection.detail);
        // RSET and a new transaction: the same verdict, without asking again.
        reply(s.command(b"RSET"));
        reply(s.command(b"MAIL FROM:<s@c.test>"));
        let again = reply(s.command(b"RCPT TO:<b@partner.example>"));
        assert_eq!(again, listed);
        assert_eq!(s.take_rejection().unwrap().reason, "dnsbl");
    }

    #[test]
    fn clear_unavailable_and_trusted_clients() {
        let mut s = session("192.0.2.1");
        assert!(matches!(
            s.command(b"RCPT TO:<a@partner.example>"),
            Step::CheckClient
        ));
        assert_eq!(reply(s.client_checked(Verdict::Clear)).code, 250);
        assert_eq!(reply(s.command(b"RCPT TO:<b@partner.example>")).code, 250);
        assert!(s.in_transaction());

        let mut s = session("192.0.2.1");
        assert!(matches!(
            s.command(b"RCPT TO:<a@partner.example>"),
            Step::CheckClient
        ));
        let unavailable = reply(s.client_checked(Verdict::Unavailable));
        assert_eq!((unavailable.code, unavailable.status), (451, Some("4.7.1")));
        assert_eq!(s.take_rejection().unwrap().reason, "dnsbl_unavailable");

        let mut trusted = session("10.1.2.3");
        assert_eq!(
            reply(trusted.command(b"RCPT TO:<a@partner.example>")).code,
            250
        );
        // A verdict nobody asked for is a sequence error, not a recipient.
        assert_eq!(reply(trusted.client_checked(Verdict::Clear)).code, 503);
    }
}
