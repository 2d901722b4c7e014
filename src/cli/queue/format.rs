//! The text of `sluice queue list` (laid out like `postqueue -p`) and `sluice queue show`.

use super::Shown;
use chrono::{Local, TimeZone};
use sluice::envelope::Envelope;
use sluice::queue::QueueEntry;
use sluice::smtp::address::{Body, MailParams, Recipient, Ret};
use std::fmt::Write as _;

/// `Tue Mar  5 10:21:33`, local time, as postqueue shows arrival times.
pub(in crate::cli) fn local_time(ms: u64, format: &str) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map(|t| t.format(format).to_string())
        .unwrap_or_else(|| format!("@{ms}"))
}

pub(in crate::cli) fn sender(envelope: &Envelope) -> String {
    match &envelope.reverse_path {
        Some(mailbox) => mailbox.to_string(),
        None => "MAILER-DAEMON".to_string(),
    }
}

pub(in crate::cli) fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The width of the id column: 26 characters and the `*` of a message being delivered.
pub(in crate::cli) const ID_WIDTH: usize = 27;
/// Where recipients start: after id, size and arrival time.
pub(in crate::cli) const RECIPIENT_INDENT: usize = ID_WIDTH + 1 + 8 + 1 + 20 + 2;

/// `sluice queue list`, in the layout of `postqueue -p`.
pub(super) fn list_table(entries: &[QueueEntry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = String::new();
    let row = |out: &mut String, id: &str, size: &str, time: &str, who: &str| {
        let _ = writeln!(out, "{id:<ID_WIDTH$} {size:>8} {time:>20}  {who}");
    };
    row(
        &mut out,
        "-Queue ID-",
        "--Size--",
        "----Arrival Time----",
        "-Sender/Recipient-------",
    );
    for entry in entries {
        let envelope = &entry.envelope;
        let mark = if entry.leased { "*" } else { "" };
        let id = format!("{}{mark}", envelope.id);
        let time = local_time(envelope.received_at_ms, "%a %b %e %H:%M:%S");
        row(
            &mut out,
            &id,
            &entry.size.to_string(),
            &time,
            &sender(envelope),
        );
        if let Some(reason) = &envelope.last_error {
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "({reason})");
        }
        for recipient in &envelope.recipients {
            let _ = writeln!(out, "{:RECIPIENT_INDENT$}{}", "", recipient.address);
        }
        out.push('\n');
    }
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    let requests = entries.len() as u64;
    let _ = writeln!(
        out,
        "-- {} Kbytes in {}.",
        bytes.div_ceil(1024),
        plural(requests, "request")
    );
    out
}

/// `sluice queue show`: the envelope, one field a line, then the content.
pub(super) fn show_text(shown: &Shown, now_ms: u64) -> String {
    let (entry, envelope) = (&shown.entry, &shown.entry.envelope);
    let long = "%a %b %e %H:%M:%S %Y";
    let status = if entry.leased {
        "being delivered".to_string()
    } else if envelope.attempts == 0 && entry.due_at_ms <= now_ms {
        "queued, due now".to_string()
    } else if entry.due_at_ms <= now_ms {
        "deferred, due now".to_string()
    } else {
        format!("deferred until {}", local_time(entry.due_at_ms, long))
    };
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("{name}:")
        };
        let _ = writeln!(out, "{label:<15} {value}");
    };
    field("Queue ID", envelope.id.as_str());
    field("Status", &status);
    envelope_fields(envelope, entry.size, &mut field);
    field("Attempts", &envelope.attempts.to_string());
    if let Some(reason) = &envelope.last_error {
        field("Last error", reason);
    }
    if let Some(ms) = envelope.delay_warned_at_ms {
        field("Delay warned", &local_time(ms, long));
    }
    out.push_str("\n*** MESSAGE CONTENTS ***\n");
    out.push_str(&shown.message.replace("\r\n", "\n"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The envelope's lines of `queue show` and `quarantine show`, through `field`: arrival,
/// size, client, user, sender, MAIL parameters, recipients.
pub(in crate::cli) fn envelope_fields(
    envelope: &Envelope,
    size: u64,
    field: &mut impl FnMut(&str, &str),
) {
    let long = "%a %b %e %H:%M:%S %Y";
    field("Arrival time", &local_time(envelope.received_at_ms, long));
    field("Size", &plural(size, "byte"));
    field(
        "Client",
        &format!("{} [{}]", envelope.helo, envelope.client_ip),
    );
    if let Some(user) = &envelope.authenticated_user {
        field("Authenticated", user);
    }
    field("Sender", &format!("<{}>", sender_path(envelope)));
    let params = mail_params(&envelope.params);
    if !params.is_empty() {
        field("Parameters", &params);
    }
    for (i, recipient) in envelope.recipients.iter().enumerate() {
        field(if i == 0 { "Recipients" } else { "" }, &rcpt(recipient));
    }
}

fn sender_path(envelope: &Envelope) -> String {
    envelope
        .reverse_path
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The MAIL FROM parameters as they were on the wire (xtext decoded).
fn mail_params(p: &MailParams) -> String {
    let mut out = Vec::new();
    if let Some(size) = p.size {
        out.push(format!("SIZE={size}"));
    }
    match p.body {
        Some(Body::SevenBit) => out.push("BODY=7BIT".into()),
        Some(Body::EightBitMime) => out.push("BODY=8BITMIME".into()),
        None => {}
    }
    if p.smtputf8 {
        out.push("SMTPUTF8".into());
    }
    match p.ret {
        Some(Ret::Full) => out.push("RET=FULL".into()),
        Some(Ret::Headers) => out.push("RET=HDRS".into()),
        None => {}
    }
    if let Some(envid) = &p.envid {
        out.push(format!("ENVID={envid}"));
    }
    if let Some(auth) = &p.auth {
        out.push(format!("AUTH=<{auth}>"));
    }
    out.join(" ")
}

/// A forward-path with its DSN parameters (RFC 3461).
fn rcpt(r: &Recipient) -> String {
    let mut out = format!("<{}>", r.address);
    if let Some(n) = r.notify {
        let conditions: Vec<&str> = [
            (n.never, "NEVER"),
            (n.success, "SUCCESS"),
            (n.failure, "FAILURE"),
            (n.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let _ = write!(out, " NOTIFY={}", conditions.join(","));
    }
    if let Some(o) = &r.orcpt {
        let _ = write!(out, " ORCPT={};{}", o.addr_type, o.address);
    }
    out
}

/// One line about a deleted message: who sent it to whom.
pub(super) fn summary(envelope: &Envelope) -> String {
    let to: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{}>", r.address))
        .collect();
    format!("from <{}> to {}", sender_path(envelope), to.join(", "))
}
