//! The third part of a notification: the original message (`message/rfc822`) or only its
//! header (`text/rfc822-headers`, RFC 6522 4), chosen by RET (RFC 3461 4.3) and by the
//! return limit (`limits.bounceSizeLimit`, Postfix's `bounce_size_limit`).
//!
//! A bounce goes to the reverse-path, which anyone can forge: the limit keeps Sluice from
//! mailing a chosen victim a large message (backscatter). The original's octets are
//! copied unchanged; when they would break the 998-octet line limit of the
//! notification, less is returned rather than anything altered.

use super::ReportKind;
use crate::smtp::address::Ret;

/// Longest line in octets, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;

/// What goes into the third part.
pub(super) struct Returned<'a> {
    pub content_type: &'static str,
    pub description: &'static str,
    pub content: &'a [u8],
}

/// The full message for a failure, unless RET=HDRS or the message is larger than
/// `limit`; otherwise its header, cut to at most `limit` octets. Delay and success
/// reports carry only the header whatever RET says, since RET governs failed DSNs
/// (RFC 3461 4.3) and the message is not lost. `None` when there is no header to return
/// or it has an overlong line.
pub(super) fn returned(
    original: &[u8],
    kind: ReportKind,
    ret: Option<Ret>,
    limit: usize,
) -> Option<Returned<'_>> {
    let full = kind == ReportKind::Failure
        && ret != Some(Ret::Headers)
        && original.len() <= limit
        && lines_fit(original);
    if full {
        return Some(Returned {
            content_type: "message/rfc822",
            description: "Undelivered message",
            content: original,
        });
    }
    let header = header_block(original, limit);
    (!header.is_empty() && lines_fit(header)).then_some(Returned {
        content_type: "text/rfc822-headers",
        description: "Header of the message",
        content: header,
    })
}

/// The header fields at the start of `message`, each with its line ending, without the
/// empty line that ends them and never more than `limit` octets (whole lines only).
/// It ends at the first line that is not a header field (`name:`) or the continuation
/// of one (leading white space), and at a last line without a line ending: what follows
/// is body, whatever the message looks like, and a header-only notice returns no body.
pub(super) fn header_block(message: &[u8], limit: usize) -> &[u8] {
    let mut end = 0;
    let mut first = true;
    while let Some(len) = message[end..].iter().position(|&b| b == b'\n') {
        let line = &message[end..end + len + 1];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let field = if first {
            is_field_start(text)
        } else {
            is_field_start(text) || text.starts_with(b" ") || text.starts_with(b"\t")
        };
        if !field || end + line.len() > limit {
            break;
        }
        end += line.len();
        first = false;
    }
    if end < message.len() && !first {
        // Cut by the limit in the middle of a folded field: drop the partial field, so
        // that what is returned is whole fields.
        end = field_boundary(message, end);
    }
    &message[..end]
}

/// `field-name ":"` with field-name one or more printable ASCII characters other than
/// the colon (RFC 5322 3.6.8).
fn is_field_start(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

/// The largest `end' <= end` where no continuation line follows: the start of the line
/// at `end` is a boundary unless that line continues the field before it.
fn field_boundary(message: &[u8], mut end: usize) -> usize {
    while end > 0 && matches!(message.get(end), Some(b' ' | b'\t')) {
        // Step back to the start of the previous line.
        let before = &message[..end - 1];
        end = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    }
    end
}

fn lines_fit(content: &[u8]) -> bool {
    content
        .split(|&b| b == b'\n')
        .all(|line| line.strip_suffix(b"\r").unwrap_or(line).len() <= MAX_LINE)
}
