//! One mail transaction (RFC 5321 3.3): MAIL, RCPT for each recipient, DATA with the
//! content, all pipelined when the server allows it (RFC 2920); for LMTP, one reply per
//! accepted recipient after the final dot (RFC 2033 4.2).

use super::commands::{self, Needs};
use super::connection::Connection;
use super::data::dot_stuff;
use super::error::ClientError;
use crate::delivery::Outcome;
use crate::delivery::outcome::Handoff;
use crate::envelope::Envelope;
use crate::smtp::address::Recipient;
use crate::smtp::reply::Reply;

/// Content goes out in writes of this size, each under the data block timeout.
const DATA_BLOCK: usize = 64 * 1024;

/// Per recipient: `None` while accepted by RCPT and awaiting the end of data.
type Pending = Vec<Option<Outcome>>;

impl Connection {
    /// Sends one message to `recipients` (a subset of the envelope's) and returns one
    /// outcome per recipient, in order. Replies to MAIL, RCPT and DATA become outcomes;
    /// `Err` means the connection failed, after which it is unusable and every recipient
    /// without an outcome should get [`ClientError::to_outcome`]. Call
    /// [`Connection::reset`] before reusing the connection for another message.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        recipients: &[Recipient],
        message: &[u8],
    ) -> Result<Vec<Outcome>, ClientError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let needs = Needs::of(envelope, recipients, message);
        let refusal = commands::refusal(&self.extensions, needs, message.len(), self.remote());
        if let Some((status, text)) = refusal {
            let failed = Outcome::Failed {
                remote_mta: Some(self.remote().to_string()),
                status: status.to_string(),
                reply: text,
            };
            return Ok(vec![failed; recipients.len()]);
        }
        let mail = commands::mail_from(envelope, &self.extensions, needs, message.len());
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|r| commands::rcpt_to(r, &self.extensions))
            .collect();
        let pending = if self.extensions.pipelining {
            self.pipelined(&mail, &rcpts).await?
        } else {
            self.stepwise(&mail, &rcpts).await?
        };
        match pending {
            Ok((pending, data)) => self.content(pending, data, message).await,
            Err(outcomes) => Ok(outcomes),
        }
    }

    /// MAIL, RCPTs and DATA in one write, replies read in order (RFC 2920 3.1). Returns
    /// the DATA reply when some recipient was accepted, else the final outcomes.
    async fn pipelined(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Result<(Pending, Reply), Vec<Outcome>>, ClientError> {
        let t = self.config.timeouts;
        let mut batch = mail.to_string();
        rcpts.iter().for_each(|r| batch.push_str(r));
        batch.push_str("DATA\r\n");
        self.wire.write(batch.as_bytes(), "MAIL", t.mail).await?;
        let mail_reply = self.wire.reply("MAIL", t.mail).await?;
        let mut pending = Pending::with_capacity(rcpts.len());
        for _ in rcpts {
            let reply = self.wire.reply("RCPT", t.rcpt).await?;
            pending.push(self.rcpt_outcome(&reply));
        }
        let data = self.wire.reply("DATA", t.data_init).await?;
        let accepted = pending.iter().any(Option::is_none);
        if mail_reply.code / 100 == 2 && accepted {
            return Ok(Ok((pending, data)));
        }
        if data.code == 354 {
            // The server took DATA though nobody can receive the message: end it empty.
            let end = self
                .wire
                .exchange(b".\r\n", "end of data", t.data_termination);
            end.await?;
        }
        Ok(Err(self.without_data(&mail_reply, pending)))
    }

    /// MAIL, then each RCPT, then DATA, each waiting for its reply.
    async fn stepwise(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Result<(Pending, Reply), Vec<Outcome>>, ClientError> {
        let t = self.config.timeouts;
        let mail_reply = self.wire.exchange(mail.as_bytes(), "MAIL", t.mail).await?;
        if mail_reply.code / 100 != 2 {
            return Ok(Err(self.without_data(&mail_reply, vec![None; rcpts.len()])));
        }
        let mut pending = Pending::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let reply = self.wire.exchange(rcpt.as_bytes(), "RCPT", t.rcpt).await?;
            pending.push(self.rcpt_outcome(&reply));
        }
        if pending.iter().all(Option::is_some) {
            return Ok(Err(self.without_data(&mail_reply, pending)));
        }
        let data = self.wire.exchange(b"DATA\r\n", "DATA", t.data_init).await?;
        Ok(Ok((pending, data)))
    }

    /// The outcomes when no content is sent: MAIL's reply for everyone if it failed,
    /// else each RCPT's.
    fn without_data(&self, mail: &Reply, pending: Pending) -> Vec<Outcome> {
        if mail.code / 100 != 2 {
            return vec![self.outcome(mail); pending.len()];
        }
        finish(pending, || self.outcome(mail))
    }

    /// After the reply to DATA: on 354 the content and the end-of-data reply(ies).
    async fn content(
        &mut self,
        pending: Pending,
        data: Reply,
        message: &[u8],
    ) -> Result<Vec<Outcome>, ClientError> {
        let t = self.config.timeouts;
        if data.code != 354 {
            return Ok(finish(pending, || self.outcome(&data)));
        }
        let wire_bytes = dot_stuff(message);
        for block in wire_bytes.chunks(DATA_BLOCK) {
            self.wire
                .write(block, "message content", t.data_block)
                .await?;
        }
        if !self.config.lmtp {
            let end = self.wire.reply("end of data", t.data_termination).await?;
            return Ok(finish(pending, || self.outcome(&end)));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for slot in pending {
            let outcome = match slot {
                Some(outcome) => outcome,
                None => {
                    let reply = self.wire.reply("end of data", t.data_termination).await?;
                    self.outcome(&reply)
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// `None` (accepted, awaiting the content) for 2xx, else the recipient's outcome.
    fn rcpt_outcome(&self, reply: &Reply) -> Option<Outcome> {
        (reply.code / 100 != 2).then(|| self.outcome(reply))
    }

    fn outcome(&self, reply: &Reply) -> Outcome {
        let mut outcome = reply_outcome(reply, Some(self.remote().to_string()));
        if let Outcome::Delivered { handoff, .. } = &mut outcome {
            *handoff = self.handoff();
        }
        outcome
    }

    /// A server that announced DSN got our NOTIFY (see `commands::rcpt_to`), so a
    /// success notice is its to send (RFC 3461 5.2.1); an LMTP server without DSN is
    /// the final delivery.
    fn handoff(&self) -> Handoff {
        if self.extensions.dsn {
            Handoff::NotifyPassedOn
        } else if self.config.lmtp {
            Handoff::Final
        } else {
            Handoff::Relayed
        }
    }
}

/// Fills the recipients still pending with `outcome`.
fn finish(pending: Pending, outcome: impl Fn() -> Outcome) -> Vec<Outcome> {
    pending
        .into_iter()
        .map(|o| o.unwrap_or_else(&outcome))
        .collect()
}

/// 2xx → Delivered, 5xx → Failed with the reply's enhanced status code (5.0.0 when it
/// has none), anything else → Deferred: a 4xx, or a reply that makes no sense here.
pub fn reply_outcome(reply: &Reply, remote_mta: Option<String>) -> Outcome {
    let text = reply.one_line();
    match reply.code / 100 {
        2 => Outcome::Delivered {
            remote_mta,
            reply: text,
            handoff: Handoff::Relayed,
        },
        5 => Outcome::Failed {
            remote_mta,
            status: reply.enhanced_status().unwrap_or("5.0.0").to_string(),
            reply: text,
        },
        _ => Outcome::Deferred {
            remote_mta,
            reply: text,
        },
    }
}
