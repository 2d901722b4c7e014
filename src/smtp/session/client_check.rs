//! The block-list check of the client (a policy's `dnsbl:`), asked at the first RCPT
//! that the relay rules accept, of a session that is neither authenticated nor from a
//! trusted network: by then the client has had its chance to AUTH. Asking DNS is the
//! connection's job; the session only asks ([`Step::CheckClient`]), keeps the verdict
//! for the rest of the session, and answers every later RCPT the same way.

use super::{ClientVerdict, Refusal, Session, SessionPolicy, Step};
use crate::smtp::address::Recipient;

/// Where the session stands with the block lists.
#[derive(Debug, Default)]
pub(super) enum ClientCheck {
    #[default]
    NotAsked,
    /// Asked; the RCPT that asked waits for the verdict.
    Asking(Recipient),
    Clear,
    /// Listed, or the lists could not be asked and the policy fails closed.
    Refused(Refusal),
}

impl<P: SessionPolicy> Session<P> {
    /// The recipient back when it may join the transaction now; else the step to take:
    /// the session's refusal, or the question to the connection.
    pub(super) fn client_check(&mut self, recipient: Recipient) -> Result<Recipient, Step> {
        // Judged at each RCPT: a client that authenticates after a refusal (RSET, AUTH)
        // is exempt from then on.
        if !self.policy.checks_client(self.sender_trust()) {
            return Ok(recipient);
        }
        match self.client_check {
            ClientCheck::Clear => Ok(recipient),
            ClientCheck::Refused(_) => Err(self.refuse_client()),
            ClientCheck::NotAsked | ClientCheck::Asking(_) => {
                self.client_check = ClientCheck::Asking(recipient);
                Err(Step::CheckClient)
            }
        }
    }

    /// The block lists' verdict on the client, as the connection found it after a
    /// [`Step::CheckClient`]: answers the RCPT that asked.
    pub fn client_checked(&mut self, verdict: ClientVerdict) -> Step {
        let ClientCheck::Asking(recipient) = std::mem::take(&mut self.client_check) else {
            return self.sequence_error("no client check in progress");
        };
        match verdict {
            ClientVerdict::Clear => self.clear_client(recipient),
            ClientVerdict::Refused(refusal) => {
                self.client_check = ClientCheck::Refused(refusal);
                self.refuse_client()
            }
        }
    }

    fn clear_client(&mut self, recipient: Recipient) -> Step {
        self.client_check = ClientCheck::Clear;
        self.add_recipient(recipient)
    }

    /// The refusal kept for the session, counted each time it is given.
    fn refuse_client(&mut self) -> Step {
        let ClientCheck::Refused(refusal) = &self.client_check else {
            return self.sequence_error("no client check refusal");
        };
        let refusal = refusal.clone();
        self.refuse(refusal)
    }
}
