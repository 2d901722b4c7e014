//! The third part of a notification: the original message (`message/rfc822`) or only its
//! header (`text/rfc822-headers`, RFC 6522 4), chosen by RET (RFC 3461 4.3).
//!
//! The original's octets are copied unchanged; when they would break the 998-octet line
//! limit of the notification, less is returned rather than anything altered.

use super::ReportKind;
use crate::smtp::address::Ret;

/// Without RET, the whole message is returned up to this size, only its header beyond:
/// RFC 3461 4.3 leaves the choice to us, and a large bounce tends to be refused by the
/// sender's own server for its size. An explicit RET=FULL is always honoured.
pub const FULL_RETURN_LIMIT: usize = 1 << 20;

/// Longest line in octets, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;

/// What goes into the third part.
pub(super) struct Returned<'a> {
    pub content_type: &'static str,
    pub description: &'static str,
    pub content: &'a [u8],
}

/// The full message for a failure when RET=FULL, or without RET when it is small;
/// otherwise its header. Delay and success reports carry only the header whatever RET
/// says, since RET governs failed DSNs (RFC 3461 4.3) and the message is not lost.
/// `None` when even the header has an overlong line.
pub(super) fn returned(
    original: &[u8],
    kind: ReportKind,
    ret: Option<Ret>,
) -> Option<Returned<'_>> {
    let full = kind == ReportKind::Failure
        && match ret {
            Some(Ret::Full) => true,
            Some(Ret::Headers) => false,
            None => original.len() <= FULL_RETURN_LIMIT,
        };
    if full && lines_fit(original) {
        return Some(Returned {
            content_type: "message/rfc822",
            description: "Undelivered message",
            content: original,
        });
    }
    let header = header_block(original);
    lines_fit(header).then_some(Returned {
        content_type: "text/rfc822-headers",
        description: "Header of the message",
        content: header,
    })
}

/// The header fields, each with its CRLF, without the empty line that ends them. A
/// message with no empty line is all header (RFC 5322 3.5: the body is optional).
pub(super) fn header_block(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => message.get(..end + 2).unwrap_or(message),
        None => message,
    }
}

fn lines_fit(content: &[u8]) -> bool {
    content
        .split(|&b| b == b'\n')
        .all(|line| line.strip_suffix(b"\r").unwrap_or(line).len() <= MAX_LINE)
}
