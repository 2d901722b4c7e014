//! The text of `sluice quarantine list` (laid out like `sluice queue list`) and
//! `sluice quarantine show`.

use super::Shown;
use crate::cli::queue::format::{
    ID_WIDTH, RECIPIENT_INDENT, envelope_fields, local_time, plural, sender,
};
use sluice::queue::quarantine::HeldMessage;
use std::fmt::Write as _;

/// `sluice quarantine list`: one block a message, the reason in parentheses.
pub(super) fn list_table(held: &[HeldMessage]) -> String {
    if held.is_empty() {
        return "Quarantine is empty\n".to_string();
    }
    let mut out = String::new();
    let row = |out: &mut String, id: &str, size: &str, time: &str, who: &str| {
        let _ = writeln!(out, "{id:<ID_WIDTH$} {size:>8} {time:>20}  {who}");
    };
    row(
        &mut out,
        "-Queue ID-",
        "--Size--",
        "------Held Time-----",
        "-Sender/Recipient-------",
    );
    for h in held {
        let envelope = &h.envelope;
        let time = local_time(h.held_at_ms, "%a %b %e %H:%M:%S");
        row(
            &mut out,
            envelope.id.as_str(),
            &h.size.to_string(),
            &time,
            &sender(envelope),
        );
        let _ = writeln!(out, "({})", h.reason);
        for recipient in &envelope.recipients {
            let _ = writeln!(out, "{:RECIPIENT_INDENT$}{}", "", recipient.address);
        }
        out.push('\n');
    }
    let bytes: u64 = held.iter().map(|h| h.size).sum();
    let _ = writeln!(
        out,
        "-- {} Kbytes in {}.",
        bytes.div_ceil(1024),
        plural(held.len() as u64, "held message")
    );
    out
}

/// `sluice quarantine show`: the record, one field a line, then the original content.
pub(super) fn show_text(shown: &Shown) -> String {
    let (held, envelope) = (&shown.held, &shown.held.envelope);
    let long = "%a %b %e %H:%M:%S %Y";
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
    field("Held", &local_time(held.held_at_ms, long));
    field("Reason", &held.reason);
    envelope_fields(envelope, held.size, &mut field);
    out.push_str("\n*** MESSAGE CONTENTS ***\n");
    out.push_str(&shown.message.replace("\r\n", "\n"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}
