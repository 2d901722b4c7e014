//! Cutting attachments out of a message by splicing byte ranges.
//!
//! The message is never re-serialised: each cut part (its headers and body, between
//! the boundary lines) is replaced by a short text/plain part and every other octet,
//! boundaries, preamble, signatures of other parts, stays as it was. The notice is
//! sent base64 so that any file name in it (UTF-8, or with CR/LF smuggled in through
//! RFC 2231) cannot end up as a header or a boundary line.

use super::{Analysis, Attachment, Finding, PartRange};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// `message` with each part that a finding names (by `range`) replaced by a notice
/// built by `notice` from the first finding on it. Findings without a range are
/// ignored; a range inside another one is covered by it.
pub fn strip(message: &[u8], findings: &[Finding], notice: impl Fn(&Finding) -> String) -> Vec<u8> {
    let cuts: Vec<(PartRange, String)> = findings
        .iter()
        .filter_map(|f| f.range.map(|r| (r, notice(f))))
        .collect();
    splice(message, cuts)
}

/// `message` with every attachment replaced by a notice built by `notice`.
pub fn strip_all(
    message: &[u8],
    analysis: &Analysis,
    notice: impl Fn(&Attachment) -> String,
) -> Vec<u8> {
    let cuts: Vec<(PartRange, String)> = analysis
        .attachments
        .iter()
        .filter_map(|a| a.range.map(|r| (r, notice(a))))
        .collect();
    splice(message, cuts)
}

/// `message` with each range replaced by a notice part holding its text; ranges that
/// overlap one already cut, or fall outside the message, are skipped.
pub fn splice(message: &[u8], mut cuts: Vec<(PartRange, String)>) -> Vec<u8> {
    // Stable: of two findings on one part, the first one's notice wins.
    cuts.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(message.len());
    let mut copied = 0;
    for (range, text) in cuts {
        if range.start < copied || range.end > message.len() || range.start > range.end {
            continue;
        }
        out.extend_from_slice(&message[copied..range.start]);
        out.extend_from_slice(&notice_part(&text));
        copied = range.end;
    }
    out.extend_from_slice(&message[copied..]);
    out
}

/// A text/plain part holding `text`, without the CRLF that ends it: that one belongs
/// to the boundary line after it and stays in the message.
pub fn notice_part(text: &str) -> Vec<u8> {
    let encoded = STANDARD.encode(text.as_bytes());
    let mut part = b"Content-Type: text/plain; charset=utf-8\r\n\
Content-Disposition: inline\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let lines: Vec<&[u8]> = encoded.as_bytes().chunks(76).collect();
    part.extend_from_slice(&lines.join(&b"\r\n"[..]));
    part
}
