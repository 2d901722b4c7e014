//! The human-readable part of a notification, and the text helpers every part uses:
//! making untrusted text safe for a header field, folding long lines, dates.

use super::{Report, ReportKind};
use crate::delivery::Outcome;
use chrono::{DateTime, TimeZone};
use std::fmt::Write;

/// Folding aims at this line length (RFC 5322 2.1.1 SHOULD)...
const SOFT_LIMIT: usize = 78;
/// ...and never exceeds this one (RFC 5322 2.1.1 MUST, RFC 5321 4.5.3.1.6).
const HARD_LIMIT: usize = 998;

/// The explanation for people, CRLF line endings.
pub(super) fn human(report: &Report<'_>) -> String {
    let mut out = format!(
        "This is the mail system at {}.\r\n\r\n",
        report.reporting_mta
    );
    let intro = match report.kind {
        ReportKind::Failure => {
            "Your message could not be delivered to the recipients below. The mail\r\n\
             system has given up on them: it will not try again."
        }
        ReportKind::Delay => {
            "Your message has not yet been delivered to the recipients below. The mail\r\n\
             system will keep trying; you do not need to send it again."
        }
        ReportKind::Success => {
            "Your message was delivered to the recipients below, as you asked. Where the\r\n\
             report says \"relayed\", it went on to a mail system that sends no such reports."
        }
    };
    out.push_str(intro);
    out.push_str("\r\n");
    for (recipient, outcome) in &report.recipients {
        out.push_str("\r\n");
        out.push_str(&fold(&recipient_line(
            &recipient.address.to_string(),
            outcome,
        )));
        out.push_str("\r\n");
        let reply = outcome.reply().trim();
        if !reply.is_empty() {
            out.push_str(&fold(&format!("    {}", printable(reply))));
            out.push_str("\r\n");
        }
    }
    let _ = write!(out, "\r\nYour message has queue ID {}", report.envelope.id);
    if let Some(arrival) = report.arrival() {
        let _ = write!(out, " and arrived on {}", date(arrival));
    }
    out.push_str(".\r\n");
    out
}

fn recipient_line(address: &str, outcome: &Outcome) -> String {
    let remote_mta = match outcome {
        Outcome::Delivered { remote_mta, .. }
        | Outcome::Deferred { remote_mta, .. }
        | Outcome::Failed { remote_mta, .. } => remote_mta,
    };
    match remote_mta {
        Some(mta) => format!("<{address}>: host {} said:", printable(mta)),
        None => format!("<{address}>:"),
    }
}

/// RFC 5322 date-time, e.g. `Tue, 14 Nov 2023 22:13:20 +0000`.
pub(super) fn date<Tz: TimeZone>(when: DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    when.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// Printable US-ASCII only: a CR or LF in a remote reply could otherwise start a field
/// of its own, and `message/delivery-status` is 7-bit. Tabs become spaces, anything
/// else unprintable becomes `?`.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c,
            '\t' => ' ',
            _ => '?',
        })
        .collect()
}

/// Folds a header field (or a line of text) at spaces so that lines stay near
/// [`SOFT_LIMIT`] octets; a run without spaces longer than [`HARD_LIMIT`] is broken
/// anyway, which adds a space to the unfolded value but keeps the message valid.
pub(super) fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / SOFT_LIMIT * 3);
    let mut width = 0;
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            // The space becomes the folding white space of a continuation line; never
            // before an empty word, which would leave a line of white space only.
            if width > 0 && !word.is_empty() && width + 1 + word.len() > SOFT_LIMIT {
                out.push_str("\r\n");
                width = 0;
            }
            out.push(' ');
            width += 1;
        }
        for c in word.chars() {
            if width + c.len_utf8() > HARD_LIMIT {
                out.push_str("\r\n ");
                width = 1;
            }
            out.push(c);
            width += c.len_utf8();
        }
    }
    out
}

/// `utf-8-addr-xtext` (RFC 6533 3): printable ASCII except `\`, `+` and `=` as is,
/// anything else as `\x{HEX}`, the code point in upper-case hex without leading zeros
/// (two digits at least).
pub(super) fn utf8_addr_xtext(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for c in address.chars() {
        if matches!(c, '!'..='~') && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:02X}}}", u32::from(c));
        }
    }
    out
}
