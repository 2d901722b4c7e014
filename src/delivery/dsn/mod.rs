//! Delivery status notifications (RFC 3464) for the sender of a message, as requested by
//! the DSN extension (RFC 3461) and wrapped in a `multipart/report` (RFC 6522): failures
//! (bounces), delay warnings and, when asked for, success reports.
//!
//! [`build`] decides whether a notification is due and composes it, together with the
//! envelope that carries it back to the sender. Pure: the worker enqueues the result.
//!
//! The notification has three parts: a human explanation (`text`), the
//! `message/delivery-status` fields (`status`), and the original message or its header
//! (`original`).

mod original;
mod status;
#[cfg(test)]
mod tests;
mod text;

use crate::delivery::Outcome;
use crate::delivery::outcome::Handoff;
use crate::envelope::{Envelope, QueueId, SenderTrust};
use crate::smtp::address::{Body, MailParams, Mailbox, Notify, Recipient};
use chrono::{DateTime, Utc};
use std::net::{IpAddr, Ipv4Addr};

/// What happened to the recipients a notification is about; sets its `Action` field
/// (RFC 3464 2.3.3) and the outcomes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `failed`: the recipients were given up, by a permanent failure (`Outcome::Failed`)
    /// or because the message expired while deferred (`Outcome::Deferred`).
    Failure,
    /// `delayed`: still being retried (`Outcome::Deferred`).
    Delay,
    /// `delivered`: the next hop took it (`Outcome::Delivered`).
    Success,
}

impl ReportKind {
    /// The `Action` of one recipient: a success handed to a next hop that knows no DSN
    /// is `relayed` (RFC 3461 5.2.2), one that reached the mailbox `delivered`.
    fn action(self, outcome: &Outcome) -> &'static str {
        match (self, outcome) {
            (ReportKind::Failure, _) => "failed",
            (ReportKind::Delay, _) => "delayed",
            (
                ReportKind::Success,
                Outcome::Delivered {
                    handoff: Handoff::Relayed,
                    ..
                },
            ) => "relayed",
            (ReportKind::Success, _) => "delivered",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            ReportKind::Failure => "Undelivered Mail Returned to Sender",
            ReportKind::Delay => "Delayed Mail (still being retried)",
            ReportKind::Success => "Successful Mail Delivery Report",
        }
    }

    /// A success that a next hop took NOTIFY for is that hop's to report (RFC 3461
    /// 5.2.1): we report only what stopped with us.
    fn covers(self, outcome: &Outcome) -> bool {
        match self {
            ReportKind::Failure => !outcome.is_delivered(),
            ReportKind::Delay => matches!(outcome, Outcome::Deferred { .. }),
            ReportKind::Success => matches!(
                outcome,
                Outcome::Delivered { handoff, .. } if *handoff != Handoff::NotifyPassedOn
            ),
        }
    }

    /// Success notices go only to senders the ingress vouched for (authenticated or in a
    /// trusted network): otherwise anyone could have us mail a forged reverse-path a
    /// notice for every message. Failures and delays go to everyone, as RFC 3461 wants.
    fn allowed_for(self, trust: SenderTrust) -> bool {
        self != ReportKind::Success || !trust.is_untrusted()
    }

    /// RFC 3461 4.1: no NOTIFY means FAILURE, with DELAY at the MTA's discretion (we
    /// send delays then); SUCCESS only when asked for; NEVER silences everything.
    fn requested_by(self, notify: Option<&Notify>) -> bool {
        match (self, notify) {
            (_, Some(n)) if n.never => false,
            (ReportKind::Failure | ReportKind::Delay, None) => true,
            (ReportKind::Success, None) => false,
            (ReportKind::Failure, Some(n)) => n.failure,
            (ReportKind::Delay, Some(n)) => n.delay,
            (ReportKind::Success, Some(n)) => n.success,
        }
    }
}

/// Everything the parts of one notification are made from.
struct Report<'a> {
    envelope: &'a Envelope,
    sender: &'a Mailbox,
    /// Only the recipients this notification is about.
    recipients: Vec<(&'a Recipient, &'a Outcome)>,
    kind: ReportKind,
    /// Configuration, but it lands in header fields: kept to printable ASCII.
    reporting_mta: String,
    /// The most of the original returned (`limits.bounceSizeLimit`).
    return_limit: usize,
    now: DateTime<Utc>,
}

/// Builds the notification for `envelope`'s sender about the recipients in `reports` that
/// `kind` covers and whose NOTIFY asks for it; `None` when there is nothing to send,
/// and always for a null reverse-path (a bounce is never bounced, RFC 5321 6.1).
///
/// Returns the envelope to enqueue and the complete message (CRLF line endings). The
/// envelope has a null reverse-path, the original sender as only recipient with
/// NOTIFY=NEVER (a notification that fails is dropped, not bounced), a fresh queue id,
/// `received_at_ms` = `now`, and client IP 127.0.0.1: it was generated here, not
/// received, and loopback is what a local submission would show.
///
/// `original` is the message as queued; at most `return_limit` octets of it go back (a
/// larger one returns its header only). Success notices go only to trusted senders (see
/// `ReportKind::allowed_for`). The fields of `message/delivery-status` carry no
/// `Will-Retry-Until` (it is optional, RFC 3464 2.3.9): the schedule is the worker's.
pub fn build(
    envelope: &Envelope,
    reports: &[(Recipient, Outcome)],
    kind: ReportKind,
    original: &[u8],
    reporting_mta: &str,
    return_limit: usize,
    now: DateTime<Utc>,
) -> Option<(Envelope, Vec<u8>)> {
    let report = Report::select(envelope, reports, kind, reporting_mta, return_limit, now)?;
    Some(report.compose(original, QueueId::generate()))
}

impl<'a> Report<'a> {
    fn select(
        envelope: &'a Envelope,
        reports: &'a [(Recipient, Outcome)],
        kind: ReportKind,
        reporting_mta: &str,
        return_limit: usize,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        let sender = envelope.reverse_path.as_ref()?;
        if !kind.allowed_for(envelope.sender_trust) {
            return None;
        }
        let recipients: Vec<_> = reports
            .iter()
            .filter(|(r, o)| kind.covers(o) && kind.requested_by(r.notify.as_ref()))
            .map(|(r, o)| (r, o))
            .collect();
        if recipients.is_empty() {
            return None;
        }
        Some(Report {
            envelope,
            sender,
            recipients,
            kind,
            reporting_mta: text::printable(reporting_mta),
            return_limit,
            now,
        })
    }

    /// When the original message was received, if its envelope says so sensibly.
    fn arrival(&self) -> Option<DateTime<Utc>> {
        i64::try_from(self.envelope.received_at_ms)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
    }

    /// The notification with queue id `id` (fixed in tests, to compare whole messages).
    fn compose(&self, original: &[u8], id: QueueId) -> (Envelope, Vec<u8>) {
        let message = self.message(original, &id);
        let eight_bit = !message.is_ascii();
        let envelope = Envelope {
            id,
            reverse_path: None,
            params: MailParams {
                size: u64::try_from(message.len()).ok(),
                body: eight_bit.then_some(Body::EightBitMime),
                smtputf8: self.sender.is_utf8(),
                ..MailParams::default()
            },
            recipients: vec![Recipient {
                address: self.sender.clone(),
                notify: Some(Notify {
                    never: true,
                    ..Notify::default()
                }),
                orcpt: None,
            }],
            received_at_ms: u64::try_from(self.now.timestamp_millis()).unwrap_or(0),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: self.reporting_mta.clone(),
            authenticated_user: None,
            sender_trust: SenderTrust::Untrusted,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            // The bounce continues the original message's trace.
            trace: self.envelope.trace.map(|t| t.child()),
        };
        (envelope, message)
    }

    fn message(&self, original: &[u8], id: &QueueId) -> Vec<u8> {
        let human = text::human(self);
        let status = status::delivery_status(self);
        let returned = original::returned(
            original,
            self.kind,
            self.envelope.params.ret,
            self.return_limit,
        );
        let mut bodies = vec![human.as_bytes(), status.as_bytes()];
        bodies.extend(returned.as_ref().map(|r| r.content));
        let boundary = boundary(id, &bodies);
        let eight_bit = bodies.iter().any(|b| !b.is_ascii());

        let mut out = self.header(id, &boundary, eight_bit).into_bytes();
        out.extend_from_slice(b"This is a MIME-encapsulated message.\r\n");
        let text_type = "text/plain; charset=utf-8";
        part(
            &mut out,
            &boundary,
            text_type,
            "Notification",
            human.as_bytes(),
        );
        part(
            &mut out,
            &boundary,
            "message/delivery-status",
            "Delivery report",
            status.as_bytes(),
        );
        if let Some(r) = &returned {
            part(
                &mut out,
                &boundary,
                r.content_type,
                r.description,
                r.content,
            );
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    /// The header block of the notification, ending with the empty line.
    fn header(&self, id: &QueueId, boundary: &str, eight_bit: bool) -> String {
        let mta = &self.reporting_mta;
        let mut h = format!("From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n");
        h += &format!("To: <{}>\r\n", self.sender);
        h += &format!("Subject: {}\r\n", self.kind.subject());
        h += &format!("Date: {}\r\n", text::date(self.now));
        h += &format!("Message-ID: <{id}.dsn@{mta}>\r\n");
        // RFC 3834 5: keeps vacation responders and the like from answering.
        h += "Auto-Submitted: auto-replied\r\n";
        h += "MIME-Version: 1.0\r\n";
        h += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
        h += &format!("\tboundary=\"{boundary}\"\r\n");
        if eight_bit {
            h += "Content-Transfer-Encoding: 8bit\r\n";
        }
        h += "\r\n";
        h
    }
}

/// One body part: the delimiter, its header, its content. The CRLF before the next
/// delimiter belongs to that delimiter (RFC 2046 5.1.1), so content is copied as is.
fn part(out: &mut Vec<u8>, boundary: &str, content_type: &str, description: &str, content: &[u8]) {
    out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Description: {description}\r\n").as_bytes());
    if !content.is_ascii() {
        out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(content);
}

/// A boundary that occurs in none of the parts (RFC 2046 5.1.1). The original and the
/// remote replies are outside our control, so candidates are tried until one is absent;
/// finite content cannot contain them all, so the loop ends.
fn boundary(id: &QueueId, bodies: &[&[u8]]) -> String {
    let mut n: u64 = 0;
    loop {
        let candidate = format!("=_sluice_{id}_{n}");
        if !bodies.iter().any(|b| contains(b, candidate.as_bytes())) {
            return candidate;
        }
        n = n.wrapping_add(1);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
