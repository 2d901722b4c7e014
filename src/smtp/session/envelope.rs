//! MAIL and RCPT: building the envelope of a transaction, with the checks that make
//! Sluice refuse to be an open relay (RFC 5321 4.1.1.2–3, ARCHITECTURE.md invariant 2).

use super::{
    Client, Greeted, ListenerKind, Refusal, Rejection, Session, SessionPolicy, Step, Transaction,
};
use crate::envelope::{Envelope, SenderTrust};
use crate::smtp::address::{MailParams, Mailbox, Notify, Orcpt, Recipient, ReversePath};
use crate::smtp::reply::Reply;

impl<P: SessionPolicy> Session<P> {
    pub(super) fn mail(&mut self, reverse_path: ReversePath, mut params: MailParams) -> Step {
        let helo = match &self.greeted {
            Greeted::No => return self.sequence_error("send HELO/EHLO first"),
            Greeted::Helo(name) | Greeted::Ehlo(name) => name.clone(),
        };
        if self.transaction.is_some() {
            return self.sequence_error("nested MAIL command");
        }
        if let Some(step) = self.mail_refusal(&reverse_path, &params) {
            return step;
        }
        // RFC 4954 5: an AUTH= value is only believed from an authenticated client.
        if self.user.is_none() {
            params.auth = None;
        }
        let envelope = Envelope {
            id: self.env.queue_id(),
            reverse_path,
            params,
            recipients: Vec::new(),
            received_at_ms: 0,
            client_ip: self.conn.client_ip,
            helo,
            authenticated_user: self.user.clone(),
            sender_trust: self.sender_trust(),
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: Some(self.env.trace()),
        };
        self.transaction = Some(Transaction {
            envelope,
            receiving: None,
        });
        Step::Reply(Reply::new(250, "2.1.0", "Ok"))
    }

    fn mail_refusal(&mut self, reverse_path: &ReversePath, params: &MailParams) -> Option<Step> {
        let needs_auth = matches!(
            self.config.kind,
            ListenerKind::Submission | ListenerKind::Submissions
        );
        if needs_auth && self.user.is_none() {
            return Some(self.error(Reply::new(530, "5.7.0", "Authentication required")));
        }
        if matches!(self.greeted, Greeted::Helo(_)) && *params != MailParams::default() {
            return Some(self.error(Reply::new(
                555,
                "5.5.4",
                "MAIL parameters are not supported after HELO",
            )));
        }
        if params
            .size
            .is_some_and(|size| size > self.max_message_size())
        {
            return Some(self.error(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            )));
        }
        if reverse_path.as_ref().is_some_and(Mailbox::is_utf8) && !params.smtputf8 {
            return Some(self.error(Reply::new(
                553,
                "5.6.7",
                "UTF-8 sender address requires the SMTPUTF8 parameter",
            )));
        }
        let user = self.user.as_deref()?;
        let refusal = self.policy.sender(user, reverse_path).err()?;
        Some(self.refuse(refusal))
    }

    pub(super) fn rcpt(
        &mut self,
        forward_path: Mailbox,
        notify: Option<Notify>,
        orcpt: Option<Orcpt>,
    ) -> Step {
        let (smtputf8, count) = match &self.transaction {
            None => return self.sequence_error("need MAIL command"),
            Some(t) if t.receiving.is_some() => {
                return self.sequence_error("message content in progress");
            }
            Some(t) => (t.envelope.params.smtputf8, t.envelope.recipients.len()),
        };
        if count >= self.max_recipients() {
            return Step::Reply(Reply::new(452, "4.5.3", "Error: too many recipients"));
        }
        if matches!(self.greeted, Greeted::Helo(_)) && (notify.is_some() || orcpt.is_some()) {
            return self.error(Reply::new(
                555,
                "5.5.4",
                "RCPT parameters are not supported after HELO",
            ));
        }
        if forward_path.is_utf8() && !smtputf8 {
            return self.error(Reply::new(
                553,
                "5.6.7",
                "UTF-8 recipient address requires SMTPUTF8 in MAIL",
            ));
        }
        let client = Client {
            ip: self.conn.client_ip,
            user: self.user.as_deref(),
        };
        if let Err(refusal) = self.policy.recipient(&client, &forward_path) {
            return self.refuse(refusal);
        }
        let recipient = Recipient {
            address: forward_path,
            notify,
            orcpt,
        };
        // After the relay decision, as Postfix's reject_rbl_client after
        // reject_unauth_destination: a recipient refused anyway costs no DNS.
        match self.client_check(recipient) {
            Ok(recipient) => self.add_recipient(recipient),
            Err(step) => step,
        }
    }

    /// Takes a recipient that passed every check into the transaction.
    pub(super) fn add_recipient(&mut self, recipient: Recipient) -> Step {
        if let Some(t) = self.transaction.as_mut()
            && !t.envelope.recipients.contains(&recipient)
        {
            t.envelope.recipients.push(recipient);
        }
        Step::Reply(Reply::new(250, "2.1.5", "Ok"))
    }

    /// Authenticated, or from a trusted network: what the worker needs to know to send
    /// success notices (only such senders get them).
    pub(super) fn sender_trust(&self) -> SenderTrust {
        if self.user.is_some() {
            SenderTrust::Authenticated
        } else if self.policy.trusts_network(self.conn.client_ip) {
            SenderTrust::TrustedNetwork
        } else {
            SenderTrust::Untrusted
        }
    }

    /// Answers with the rules' refusal, recorded for the metric and counted as an error.
    pub(super) fn refuse(&mut self, refusal: Refusal) -> Step {
        self.reject(refusal.reason, refusal.detail);
        self.error(refusal.reply)
    }

    pub(super) fn reject(&mut self, reason: &'static str, detail: String) {
        let queue_id = self.transaction.as_ref().map(|t| t.envelope.id.clone());
        self.rejection = Some(Rejection {
            reason,
            detail,
            queue_id,
        });
    }
}
