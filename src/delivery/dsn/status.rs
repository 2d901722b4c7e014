//! The `message/delivery-status` part (RFC 3464 2.1–2.3): per-message fields, then one
//! block of per-recipient fields for each recipient, blocks separated by empty lines.
//!
//! Remote replies and client-supplied parameters end up here, so every value goes
//! through [`text::printable`] or an encoding: none can start a field of its own.

use super::{Report, ReportKind, text};
use crate::delivery::Outcome;
use crate::smtp::address::{Mailbox, Recipient};
use crate::smtp::xtext;

/// The content of the part.
pub(super) fn delivery_status(report: &Report<'_>) -> String {
    let mut out = String::new();
    field(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", report.reporting_mta),
    );
    // Not a standard field (RFC 3464 2.4 allows extensions): lets a postmaster find
    // the message in `sluice queue` and the logs.
    field(&mut out, "X-Sluice-Queue-ID", report.envelope.id.as_str());
    if let Some(envid) = &report.envelope.params.envid {
        field(&mut out, "Original-Envelope-Id", &envelope_id(envid));
    }
    if let Some(arrival) = report.arrival() {
        field(&mut out, "Arrival-Date", &text::date(arrival));
    }
    for (recipient, outcome) in &report.recipients {
        out.push_str("\r\n");
        recipient_fields(&mut out, report, recipient, outcome);
    }
    out
}

fn recipient_fields(
    out: &mut String,
    report: &Report<'_>,
    recipient: &Recipient,
    outcome: &Outcome,
) {
    if let Some(orcpt) = &recipient.orcpt {
        let addr_type = text::printable(&orcpt.addr_type).replace([' ', ';'], "");
        let value = format!("{addr_type}; {}", address_text(&orcpt.address));
        field(out, "Original-Recipient", &value);
    }
    field(out, "Final-Recipient", &final_recipient(&recipient.address));
    field(out, "Action", report.kind.action(outcome));
    field(out, "Status", &status_code(report.kind, outcome));
    let (remote_mta, reply) = match outcome {
        Outcome::Delivered {
            remote_mta, reply, ..
        }
        | Outcome::Deferred { remote_mta, reply }
        | Outcome::Failed {
            remote_mta, reply, ..
        } => (remote_mta, reply),
    };
    if let Some(mta) = remote_mta {
        field(out, "Remote-MTA", &format!("dns; {}", text::printable(mta)));
    }
    if !reply.is_empty() {
        field(out, "Diagnostic-Code", &diagnostic(reply));
    }
    field(out, "Last-Attempt-Date", &text::date(report.now));
}

/// `Name: value` with folding, CRLF-terminated. Trailing white space (remote replies
/// have some) would only end a line in white space.
fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(&text::fold(&format!("{name}: {}", value.trim_end())));
    out.push_str("\r\n");
}

/// RFC 3461 4.4 allows only printable US-ASCII in ENVID before its xtext encoding, and
/// the field carries that decoded value (as Postfix and Dovecot do). Anything else,
/// which the ingress should have refused, is shown xtext-encoded so that it cannot
/// break the field.
fn envelope_id(envid: &str) -> String {
    if is_printable_ascii(envid) {
        envid.to_string()
    } else {
        xtext::encode(envid)
    }
}

/// `rfc822; a@b`, or for an internationalized address `utf-8; ...` in the 7-bit form
/// of RFC 6533 3, since this part is not `message/global-delivery-status`.
fn final_recipient(address: &Mailbox) -> String {
    let text = address.to_string();
    if text.is_ascii() {
        format!("rfc822; {}", text::printable(&text))
    } else {
        format!("utf-8; {}", text::utf8_addr_xtext(&text))
    }
}

/// An ORCPT address as received, or in the RFC 6533 embedded-Unicode form when it holds
/// characters that RFC 3461 4.2 does not allow.
fn address_text(address: &str) -> String {
    if is_printable_ascii(address) {
        address.to_string()
    } else {
        text::utf8_addr_xtext(address)
    }
}

fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// `smtp; <reply>` for a remote server's reply, `X-Sluice; <text>` for a local failure
/// such as a refused connection (RFC 3464 2.3.6 lets the diagnostic type be an
/// extension, as Postfix's `X-Postfix`).
fn diagnostic(reply: &str) -> String {
    let kind = if reply_code(reply).is_some() {
        "smtp"
    } else {
        "X-Sluice"
    };
    format!("{kind}; {}", text::printable(reply))
}

/// The enhanced status code (RFC 3463) for the `Status` field: the one the worker
/// recorded for a failure, else the reply's own when it is of the right class, else a
/// generic one. A deferred recipient in a failure report expired: 4.4.7, "delivery
/// time expired".
pub(super) fn status_code(kind: ReportKind, outcome: &Outcome) -> String {
    let (recorded, default, classes): (Option<&str>, &str, &[u8]) = match (kind, outcome) {
        (_, Outcome::Failed { status, .. }) => (Some(status), "5.0.0", b"45"),
        (ReportKind::Failure, Outcome::Deferred { .. }) => (None, "4.4.7", b"45"),
        (_, Outcome::Deferred { .. }) => (None, "4.0.0", b"4"),
        (_, Outcome::Delivered { .. }) => (None, "2.0.0", b"2"),
    };
    let of_class = |code: &&str| code.bytes().next().is_some_and(|c| classes.contains(&c));
    recorded
        .filter(|s| is_enhanced_code(s))
        .filter(of_class)
        .or_else(|| enhanced_code(outcome.reply()).filter(of_class))
        .unwrap_or(default)
        .to_string()
}

/// The three-digit reply code at the start of `reply`, if it looks like an SMTP reply.
fn reply_code(reply: &str) -> Option<&str> {
    let code = reply.get(..3)?;
    let valid = code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.as_bytes().first(), Some(b'2'..=b'5'))
        && matches!(reply.as_bytes().get(3), None | Some(b' ' | b'-'));
    valid.then_some(code)
}

/// The enhanced status code after the reply code: `550 5.1.1 text` → `5.1.1`.
fn enhanced_code(reply: &str) -> Option<&str> {
    reply_code(reply)?;
    let rest = reply.get(3..)?.trim_start_matches(['-', ' ']);
    let code = rest.split_whitespace().next()?;
    is_enhanced_code(code).then_some(code)
}

/// `class "." subject "." detail`, class 2, 4 or 5, one to three digits each after.
fn is_enhanced_code(code: &str) -> bool {
    let mut parts = code.split('.');
    let class = parts.next();
    let numbers = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(class, Some("2" | "4" | "5"))
        && numbers(parts.next())
        && numbers(parts.next())
        && parts.next().is_none()
}
