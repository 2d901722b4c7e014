//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030): receiving message content, the end of the
//! message, and the reply once the queue has it.

use super::{Greeted, Rejection, Resources, Session, Step};
use crate::envelope::unix_ms;
use crate::filter::received::{self, HopCounter, Trace};
use crate::queue::QueueError;
use crate::smtp::data::{BdatReceiver, BodyLimits, BodyOutcome, DataReceiver};
use crate::smtp::reply::Reply;
use std::time::SystemTime;

/// Content being received for the current transaction.
#[derive(Debug)]
pub(super) struct Receiving {
    message: Vec<u8>,
    /// The hops before us, counted as the content passes: the ingress takes `message`
    /// away after each read. Our own Received header is not fed to it.
    hops: HopCounter,
    framing: Framing,
}

#[derive(Debug)]
enum Framing {
    Data(DataReceiver),
    /// `chunk_left` octets of the current chunk are still to come; `last` once BDAT LAST.
    Bdat {
        receiver: BdatReceiver,
        chunk_left: u64,
        last: bool,
    },
}

impl Receiving {
    /// True while DATA content or the rest of a BDAT chunk is still to come.
    pub(super) fn expects_bytes(&self) -> bool {
        match &self.framing {
            Framing::Data(_) => true,
            Framing::Bdat { chunk_left, .. } => *chunk_left > 0,
        }
    }
}

/// A BDAT chunk that must be read and thrown away before its error reply is sent.
#[derive(Debug)]
pub(super) struct Discard {
    left: u64,
    reply: Reply,
}

impl Session {
    pub(super) fn data(&mut self) -> Step {
        if let Some(refusal) = self.content_refusal() {
            return self.error(refusal);
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.receiving.is_some())
        {
            return self.sequence_error("DATA cannot follow BDAT");
        }
        if self.resources == Resources::Exhausted {
            return Step::Reply(self.insufficient_storage_reply(452, super::BUDGET_SPENT.into()));
        }
        let receiver = DataReceiver::new(self.body_limits());
        self.start_receiving(Framing::Data(receiver));
        Step::StartData(Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".to_string()],
        ))
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) -> Step {
        let refusal = self.content_refusal().or_else(|| match &self.transaction {
            Some(t)
                if matches!(
                    t.receiving,
                    Some(Receiving {
                        framing: Framing::Data(_),
                        ..
                    })
                ) =>
            {
                Some(Reply::new(503, "5.5.1", "Error: BDAT cannot follow DATA"))
            }
            Some(t) if t.receiving.is_none() && self.resources == Resources::Exhausted => {
                Some(self.insufficient_storage_reply(452, super::BUDGET_SPENT.into()))
            }
            _ => None,
        });
        if let Some(reply) = refusal {
            if size == 0 {
                return self.error(reply);
            }
            // RFC 3030 3: the chunk is read and discarded even when it is refused.
            self.discard = Some(Discard { left: size, reply });
            return Step::ReadChunk;
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.receiving.is_none())
        {
            let receiver = BdatReceiver::new(self.body_limits());
            self.start_receiving(Framing::Bdat {
                receiver,
                chunk_left: 0,
                last: false,
            });
        }
        if let Some(Framing::Bdat {
            chunk_left,
            last: is_last,
            ..
        }) = self.framing_mut()
        {
            *chunk_left = size;
            *is_last = last;
        }
        if size == 0 {
            return self.chunk_done();
        }
        Step::ReadChunk
    }

    /// Why message content cannot start now, if it cannot.
    fn content_refusal(&self) -> Option<Reply> {
        match &self.transaction {
            None => Some(Reply::new(503, "5.5.1", "Error: need MAIL command")),
            Some(t) if t.envelope.recipients.is_empty() => {
                Some(Reply::new(554, "5.5.1", "Error: no valid recipients"))
            }
            Some(_) => None,
        }
    }

    fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_size: self.max_message_size(),
            max_line: self.config.max_data_line,
            bare_line_endings: self.config.bare_line_endings,
        }
    }

    /// Starts the content with our Received header, so that the body is never copied.
    fn start_receiving(&mut self, framing: Framing) {
        let greeted_ehlo = matches!(self.greeted, Greeted::Ehlo(_));
        let Some(t) = self.transaction.as_mut() else {
            return;
        };
        let trace = Trace {
            hostname: &self.config.hostname,
            envelope: &t.envelope,
            tls: self.conn.tls.as_ref(),
            esmtp: greeted_ehlo,
            user: self.config.received_user,
        };
        let header = received::header(&trace, chrono::Local::now());
        let mut message = Vec::with_capacity(header.len() + 8192);
        message.extend_from_slice(header.as_bytes());
        t.receiving = Some(Receiving {
            message,
            hops: HopCounter::default(),
            framing,
        });
    }

    fn framing_mut(&mut self) -> Option<&mut Framing> {
        let receiving = self.transaction.as_mut()?.receiving.as_mut()?;
        Some(&mut receiving.framing)
    }

    /// Feeds message content. Returns how many bytes were consumed and, once the content
    /// (or the current BDAT chunk) is complete, the next step.
    pub fn message_bytes(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        if self.discard.is_some() {
            return self.discard_bytes(input);
        }
        let Some(receiving) = self.transaction.as_mut().and_then(|t| t.receiving.as_mut()) else {
            return (0, None);
        };
        match &mut receiving.framing {
            Framing::Data(receiver) => {
                let before = receiving.message.len();
                let (n, outcome) = receiver.feed(input, &mut receiving.message);
                receiving
                    .hops
                    .feed(receiving.message.get(before..).unwrap_or_default());
                (n, outcome.map(|o| self.end_of_message(o)))
            }
            Framing::Bdat {
                receiver,
                chunk_left,
                ..
            } => {
                let n = input
                    .len()
                    .min(usize::try_from(*chunk_left).unwrap_or(usize::MAX));
                let before = receiving.message.len();
                receiver.feed(&input[..n], &mut receiving.message);
                receiving
                    .hops
                    .feed(receiving.message.get(before..).unwrap_or_default());
                *chunk_left -= n as u64;
                let done = *chunk_left == 0;
                (n, done.then(|| self.chunk_done()))
            }
        }
    }

    fn discard_bytes(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        let Some(discard) = self.discard.as_mut() else {
            return (0, None);
        };
        let n = input
            .len()
            .min(usize::try_from(discard.left).unwrap_or(usize::MAX));
        discard.left -= n as u64;
        if discard.left > 0 {
            return (n, None);
        }
        match self.discard.take() {
            Some(done) => (n, Some(self.error(done.reply))),
            None => (n, None),
        }
    }

    fn chunk_done(&mut self) -> Step {
        let Some(Framing::Bdat { receiver, last, .. }) = self.framing_mut() else {
            return self.sequence_error("no BDAT in progress");
        };
        let (outcome, last, received) = (receiver.outcome(), *last, receiver.received());
        if last || outcome != BodyOutcome::Complete {
            return self.end_of_message(outcome);
        }
        Step::Reply(Reply::new(
            250,
            "2.0.0",
            format!("Ok: {received} octets received"),
        ))
    }

    fn end_of_message(&mut self, outcome: BodyOutcome) -> Step {
        let Some(mut t) = self.transaction.take() else {
            return self.sequence_error("no transaction");
        };
        let Some(receiving) = t.receiving.take() else {
            return self.sequence_error("no message content");
        };
        if let Some(reply) = outcome.reply() {
            self.reject(
                outcome_reason(outcome),
                format!("queue id {}", t.envelope.id),
            );
            return Step::Reply(reply);
        }
        let hops = receiving.hops.hops();
        let max = self.config.max_received_headers;
        if hops > max {
            self.reject(
                "too_many_hops",
                format!("queue id {}: {hops} Received headers", t.envelope.id),
            );
            // RFC 5321 6.3 and RFC 3463 X.4.6: a routing loop.
            return Step::Reply(Reply::new(
                554,
                "5.4.6",
                format!("Too many hops: {hops} Received headers, at most {max} (mail loop?)"),
            ));
        }
        t.envelope.received_at_ms = unix_ms(SystemTime::now());
        self.pending = Some(t.envelope.id.clone());
        Step::Enqueue(Box::new((t.envelope, receiving.message)))
    }

    /// The content received so far that the ingress has not taken yet. The receivers
    /// append to it; the ingress moves it to where the message is kept (memory within its
    /// budget, or a file) after every [`Session::message_bytes`], so that the session
    /// itself holds no more than one read of content.
    pub fn content_buffer(&mut self) -> Option<&mut Vec<u8>> {
        let receiving = self.transaction.as_mut()?.receiving.as_mut()?;
        Some(&mut receiving.message)
    }

    /// True from the start of DATA or the first BDAT until the message ends (accepted,
    /// refused, or abandoned by RSET).
    pub fn content_in_progress(&self) -> bool {
        self.transaction
            .as_ref()
            .is_some_and(|t| t.receiving.is_some())
    }

    /// Instead of [`Session::enqueue_result`] after a [`Step::Enqueue`]: the ingress had
    /// no room for the content (memory budget spent, spill file not writable) and dropped
    /// it while the rest was read, so the client is told to try again later.
    pub fn content_dropped(&mut self, why: String) -> Step {
        let Some(id) = self.pending.take() else {
            return self.sequence_error("no message waiting for the queue");
        };
        let reply = self.insufficient_storage_reply(451, why);
        if let Some(rejection) = self.rejection.as_mut() {
            rejection.queue_id = Some(id);
        }
        Step::Reply(reply)
    }

    /// The filters' refusal of the message handed over by [`Step::Enqueue`] (a 5xx or
    /// 4xx `reply`), instead of the queue's answer; `detail` is for the log.
    pub fn filter_refused(&mut self, reply: Reply, detail: String) -> Step {
        let Some(id) = self.pending.take() else {
            return self.sequence_error("no message waiting for the queue");
        };
        self.rejection = Some(Rejection {
            reason: "filter",
            detail,
            queue_id: Some(id),
        });
        Step::Reply(reply)
    }

    /// The queue's answer to a [`Step::Enqueue`]: only now may the client hear 250.
    pub fn enqueue_result(&mut self, result: Result<(), QueueError>) -> Step {
        let Some(id) = self.pending.take() else {
            return self.sequence_error("no message waiting for the queue");
        };
        match result {
            Ok(()) => Step::Reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))),
            Err(e) => {
                // RFC 3463 4.3.1: the mail system is full; the client retries later.
                let reply = match e {
                    QueueError::Full { .. } => Reply::new(
                        452,
                        "4.3.1",
                        "Error: insufficient system storage, try again later",
                    ),
                    _ => Reply::new(
                        451,
                        "4.3.0",
                        "Error: queue file write error, try again later",
                    ),
                };
                self.rejection = Some(Rejection {
                    reason: "queue_error",
                    detail: e.to_string(),
                    queue_id: Some(id),
                });
                Step::Reply(reply)
            }
        }
    }
}

fn outcome_reason(outcome: BodyOutcome) -> &'static str {
    match outcome {
        BodyOutcome::Complete => "complete",
        BodyOutcome::TooBig => "message_too_big",
        BodyOutcome::LineTooLong => "line_too_long",
        BodyOutcome::BareLineEnding => "bare_line_ending",
    }
}
