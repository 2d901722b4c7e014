//! The snapshot as the SMTP session sees it ([`SessionPolicy`]): the relay and sender
//! decisions turned into the replies a client hears. The texts follow Postfix's, which
//! admins and their log searches know; the decision's explanation goes to the log.

use super::{ClientInfo, Decision, PolicySnapshot, RecipientTableKind};
use crate::envelope::SenderTrust;
use crate::smtp::address::{Mailbox, ReversePath};
use crate::smtp::reply::Reply;
use crate::smtp::session::{Client, Refusal, SessionPolicy};
use std::net::IpAddr;

impl SessionPolicy for PolicySnapshot {
    fn has_users(&self) -> bool {
        PolicySnapshot::has_users(self)
    }

    fn max_message_size(&self) -> Option<u64> {
        PolicySnapshot::max_message_size(self)
    }

    fn max_recipients(&self) -> Option<usize> {
        PolicySnapshot::max_recipients(self)
    }

    fn trusts_network(&self, ip: IpAddr) -> bool {
        self.trusted_network(ip).is_some()
    }

    fn sender(&self, user: &str, reverse_path: &ReversePath) -> Result<(), Refusal> {
        let decision = self.sender_decision(user, reverse_path);
        if decision.is_allowed() {
            return Ok(());
        }
        Err(Refusal {
            reason: "sender_not_owned",
            detail: decision.to_string(),
            reply: Reply::new(
                553,
                "5.7.1",
                format!("Sender address rejected: not owned by user {user}"),
            ),
        })
    }

    fn recipient(&self, client: &Client<'_>, forward_path: &Mailbox) -> Result<(), Refusal> {
        let client = ClientInfo {
            ip: client.ip,
            authenticated_user: client.user.map(str::to_string),
        };
        let decision = self.relay_decision(&client, forward_path);
        match refusal(&decision, forward_path) {
            None => Ok(()),
            Some((reason, reply)) => Err(Refusal {
                reason,
                detail: decision.to_string(),
                reply,
            }),
        }
    }

    fn checks_client(&self, trust: SenderTrust) -> bool {
        self.dnsbl()
            .is_some_and(|settings| !settings.exempts(trust))
    }

    fn keeps_user(&self, earlier: &Self, user: &str) -> bool {
        PolicySnapshot::keeps_user(self, earlier, user)
    }
}

/// The metric label and reply of a refused recipient, `None` when it is accepted.
fn refusal(decision: &Decision, forward_path: &Mailbox) -> Option<(&'static str, Reply)> {
    let (reason, code, status, text) = match decision {
        Decision::Denied { .. } => (
            "relay_denied",
            554,
            "5.7.1",
            format!("<{forward_path}>: Relay access denied"),
        ),
        Decision::RoutingDenied { .. } => (
            "routing_denied",
            550,
            "5.7.1",
            format!(
                "<{forward_path}>: sender-specified routing (% ! @ in the local part) is not allowed"
            ),
        ),
        Decision::AddressLiteralDenied { .. } => (
            "address_literal_denied",
            550,
            "5.7.1",
            format!("<{forward_path}>: mail to address literals is not accepted"),
        ),
        Decision::UnknownRecipient { table, .. } => {
            let table = match table {
                RecipientTableKind::Local => "local",
                RecipientTableKind::Relay => "relay",
            };
            (
                "unknown_recipient",
                550,
                "5.1.1",
                format!(
                    "<{forward_path}>: Recipient address rejected: User unknown in {table} recipient table"
                ),
            )
        }
        Decision::NoPostmaster { .. } => (
            "unknown_recipient",
            550,
            "5.1.1",
            format!("<{forward_path}>: Recipient address rejected: no local mailbox takes it"),
        ),
        Decision::UnsafeLocalPart { .. } => (
            "unknown_recipient",
            553,
            "5.1.3",
            format!(
                "<{forward_path}>: Recipient address rejected: the local part cannot be delivered here"
            ),
        ),
        Decision::LocalDomain { .. }
        | Decision::Postmaster { .. }
        | Decision::RelayDomain { .. }
        | Decision::AuthenticatedUser { .. }
        | Decision::TrustedNetwork { .. }
        | Decision::OpenRelay { .. } => return None,
    };
    Some((reason, Reply::new(code, status, text)))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
