//! Walking a message's MIME tree with mail-parser and describing each attachment.
//!
//! mail-parser keeps a flat list of parts with child indexes for multiparts and a
//! parsed [`Message`] for message/rfc822 parts. Parts of a message/rfc822 part sent
//! as 7bit/8bit carry offsets into the outer message; parts of one sent base64 or
//! quoted-printable carry offsets into its decoded octets, which are not in the
//! message, so those parts take the range of the enclosing part.

use super::{Analysis, Attachment, Limits, MessageStop, PartRange, archive, lazy, names};
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use std::panic::AssertUnwindSafe;

/// Octets of a body that `infer` looks at: every signature it knows lies well within.
const MAGIC_PREFIX: usize = 8192;

/// Describes every attachment and named inline part of `message`, within `limits`.
///
/// Never fails: what mail-parser cannot parse yields no attachments, and a limit
/// reached is reported in [`Analysis::stopped`].
pub fn analyse(message: &[u8], limits: &Limits) -> Analysis {
    // mail-parser 0.11.9 has `debug_assert!(false)`s on malformed MIME it recovers
    // from in release builds (the fuzzer found them, message.rs "Invalid part ID");
    // in debug builds they panic. A panic there must not take the caller down.
    let walked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some((copy, hidden)) = lazy::hide(message) {
            let walker = walk(message, &copy, &hidden, limits);
            if !walker.fall_back {
                return walker.analysis;
            }
        }
        walk(message, message, &[], limits).analysis
    }));
    walked.unwrap_or(Analysis {
        attachments: Vec::new(),
        stopped: Some(MessageStop::Unparseable),
    })
}

/// Parses `parsed` (the message, or its copy with base64 hidden at `hidden`) and walks
/// it; bodies are read from `original`, whose offsets are the same.
fn walk<'a>(
    original: &'a [u8],
    parsed: &'a [u8],
    hidden: &'a [usize],
    limits: &'a Limits,
) -> Walker<'a> {
    let mut walker = Walker {
        original,
        parsed,
        hidden,
        limits,
        analysis: Analysis::default(),
        parts_seen: 0,
        fall_back: false,
    };
    if let Some(message) = MessageParser::default().parse(parsed) {
        walker.message(&message, 0, None);
    }
    walker
}

struct Walker<'a> {
    original: &'a [u8],
    /// What mail-parser parsed: `original`, or a copy with base64 hidden ([`lazy`]).
    parsed: &'a [u8],
    /// Where [`lazy::hide`] hid a base64 transfer encoding.
    hidden: &'a [usize],
    limits: &'a Limits,
    analysis: Analysis,
    parts_seen: usize,
    /// A hidden part turned out to be a message/rfc822 whose decoded octets must be
    /// parsed: the walk is redone on the original.
    fall_back: bool,
}

/// A body as the walker hands it on: decoded, or still base64 ([`lazy`]).
enum Body<'b> {
    Decoded(&'b [u8]),
    Base64(&'b [u8]),
}

impl Walker<'_> {
    /// `outer` is the range of the enclosing encoded message/rfc822 part, if any.
    fn message(&mut self, message: &Message<'_>, depth: usize, outer: Option<PartRange>) {
        if !message.parts.is_empty() {
            self.part(message, 0, depth, outer);
        }
    }

    fn part(&mut self, message: &Message<'_>, id: usize, depth: usize, outer: Option<PartRange>) {
        if depth > self.limits.max_depth {
            self.stop(MessageStop::TooDeep);
            return;
        }
        if self.parts_seen >= self.limits.max_parts {
            self.stop(MessageStop::TooManyParts);
            return;
        }
        self.parts_seen += 1;
        let Some(part) = message.parts.get(id) else {
            return;
        };
        let own = PartRange {
            start: part.offset_header as usize,
            end: (part.offset_end as usize).max(part.offset_header as usize),
        };
        let is_root = id == 0 && depth == 0;
        let range = if is_root {
            None
        } else {
            Some(outer.unwrap_or(own))
        };
        let in_original = outer.is_none() && self.is_original(message);
        let hidden = in_original && self.is_hidden(part.offset_header..part.offset_body);
        let original = self.original;
        let raw = || {
            original
                .get(part.offset_body as usize..part.offset_end as usize)
                .unwrap_or_default()
        };
        match &part.body {
            // A message/rfc822 part's decoded octets are a message to parse: hidden, it
            // comes back as raw text (or as a message parsed from its base64). And
            // mail-parser gives a message part no body offset of its own, so any hiding
            // inside one (its encoding, or one of its parts) means a plain parse.
            _ if hidden && is_message(part) => self.fall_back = true,
            PartType::Message(_)
                if in_original && self.is_hidden(part.offset_header..part.offset_end) =>
            {
                self.fall_back = true;
            }
            PartType::Text(_) | PartType::Html(_) if hidden => {
                let name = names::file_name(part);
                if name.is_some() || is_attachment(part) {
                    self.push(part, name, Body::Base64(raw()), range, false);
                }
            }
            PartType::Binary(_) | PartType::InlineBinary(_) if hidden => {
                let name = names::file_name(part);
                self.push(part, name, Body::Base64(raw()), range, false);
            }
            PartType::Multipart(children) => {
                for &child in children {
                    // mail-parser lists children after their parent; anything else would
                    // be a cycle, and walking it again would never end.
                    if (child as usize) > id {
                        self.part(message, child as usize, depth + 1, outer);
                    }
                }
            }
            PartType::Message(nested) => {
                if let Some(name) = names::file_name(part) {
                    let raw = nested.raw_message();
                    self.push(part, Some(name), Body::Decoded(raw), range, outer.is_some());
                }
                let inner_outer = if outer.is_some() || !self.is_original(nested) {
                    range
                } else {
                    None
                };
                self.message(nested, depth + 1, inner_outer);
            }
            PartType::Text(_) | PartType::Html(_) => {
                let name = names::file_name(part);
                if name.is_some() || is_attachment(part) {
                    let body = self.decoded_text_body(message, part, outer.is_some());
                    self.push(part, name, Body::Decoded(&body), range, outer.is_some());
                }
            }
            PartType::Binary(body) | PartType::InlineBinary(body) => {
                let name = names::file_name(part);
                self.push(part, name, Body::Decoded(body), range, outer.is_some());
            }
        }
    }

    /// Whether [`lazy::hide`] hid a transfer encoding within `range` of the message.
    fn is_hidden(&self, range: std::ops::Range<u32>) -> bool {
        let range = range.start as usize..range.end as usize;
        self.hidden.iter().any(|at| range.contains(at))
    }

    fn stop(&mut self, why: MessageStop) {
        self.analysis.stopped.get_or_insert(why);
    }

    /// Whether `nested` was parsed from the octets of the original message (so its
    /// offsets point into it) rather than from a decoded copy.
    fn is_original(&self, nested: &Message<'_>) -> bool {
        let raw: &[u8] = &nested.raw_message;
        std::ptr::eq(raw.as_ptr(), self.parsed.as_ptr()) && raw.len() == self.parsed.len()
    }

    /// mail-parser turns text parts into UTF-8, which changes their octets; the real
    /// type and the size need the octets as sent, decoded from the transfer encoding.
    fn decoded_text_body(
        &self,
        message: &Message<'_>,
        part: &MessagePart<'_>,
        nested_copy: bool,
    ) -> Vec<u8> {
        let raw: &[u8] = if nested_copy {
            &message.raw_message
        } else {
            self.original
        };
        let body = raw
            .get(part.offset_body as usize..part.offset_end as usize)
            .unwrap_or_default();
        let decoded = match part.encoding {
            Encoding::Base64 => base64_decode(body),
            Encoding::QuotedPrintable => quoted_printable_decode(body),
            Encoding::None => None,
        };
        decoded.unwrap_or_else(|| body.to_vec())
    }

    fn push(
        &mut self,
        part: &MessagePart<'_>,
        name: Option<String>,
        body: Body<'_>,
        range: Option<PartRange>,
        in_encoded_message: bool,
    ) {
        let limits = &self.limits.archive;
        let (real_type, archive, size) = match body {
            Body::Decoded(body) => {
                let real_type = infer::get(&body[..body.len().min(MAGIC_PREFIX)]);
                let archive = archive::is_zip(body).then(|| archive::list(body, limits));
                (real_type, archive, body.len() as u64)
            }
            Body::Base64(raw) => {
                let prefix = lazy::decode_prefix(raw, MAGIC_PREFIX);
                let archive =
                    archive::is_zip(&prefix).then(|| archive::list(&lazy::decode_all(raw), limits));
                (infer::get(&prefix), archive, lazy::decoded_size(raw))
            }
        };
        let real_type = real_type.map(|t| t.mime_type());
        self.analysis.attachments.push(Attachment {
            name,
            declared_type: declared_type(part),
            real_type,
            size,
            range,
            in_encoded_message,
            archive,
        });
    }
}

fn is_message(part: &MessagePart<'_>) -> bool {
    part.content_type()
        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("message"))
}

fn is_attachment(part: &MessagePart<'_>) -> bool {
    part.content_disposition()
        .is_some_and(|cd| cd.ctype().eq_ignore_ascii_case("attachment"))
}

fn declared_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => String::from("text/plain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    const PE: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00This program";

    fn b64(data: &[u8]) -> String {
        let text = STANDARD.encode(data);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        lines.join("\r\n")
    }

    fn part(headers: &str, body: &str) -> String {
        format!("--b\r\n{headers}\r\n\r\n{body}\r\n")
    }

    fn message(parts: &[String]) -> Vec<u8> {
        format!(
            "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{}--b--\r\n",
            parts.concat()
        )
        .into_bytes()
    }

    /// The fast path (base64 hidden from mail-parser) finds what a plain parse finds.
    #[test]
    fn hiding_base64_changes_no_finding() {
        let inner = message(&[part(
            "Content-Type: application/octet-stream; name=\"a.exe\"\r\nContent-Transfer-Encoding: base64",
            &b64(PE),
        )]);
        let big: Vec<u8> = PE
            .iter()
            .copied()
            .chain((0..200_000).map(|i| (i % 251) as u8))
            .collect();
        let cases = [
            message(&[part("Content-Type: text/plain", "hello")]),
            inner.clone(),
            message(&[
                part("Content-Type: text/plain", "hello"),
                part(
                    "Content-Type: application/pdf; name=\"r.pdf\"\r\ncontent-transfer-encoding: BASE64",
                    &b64(&big),
                ),
                part(
                    "Content-Type: text/plain; name=\"t.txt\"\r\nContent-Transfer-Encoding: base64",
                    &b64(b"some text"),
                ),
            ]),
            // A base64 message/rfc822: its decoded octets must be parsed (fall back).
            message(&[part(
                "Content-Type: message/rfc822; name=\"fwd.eml\"\r\nContent-Transfer-Encoding: base64",
                &b64(&inner),
            )]),
        ];
        let limits = Limits::default();
        for (i, case) in cases.iter().enumerate() {
            let fast = analyse(case, &limits);
            let plain = walk(case, case, &[], &limits).analysis;
            let kinds = |a: &Analysis| {
                a.attachments
                    .iter()
                    .map(|x| (x.name.clone(), x.real_type, x.range, x.archive.is_some()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(kinds(&fast), kinds(&plain), "case {i}");
            assert_eq!(fast.stopped, plain.stopped, "case {i}");
            for (f, p) in fast.attachments.iter().zip(&plain.attachments) {
                assert!(
                    f.size >= p.size && f.size <= p.size + 3,
                    "case {i}: {} vs {}",
                    f.size,
                    p.size
                );
            }
        }
        assert_eq!(
            analyse(&cases[2], &limits).attachments[0].real_type,
            Some("application/vnd.microsoft.portable-executable")
        );
        assert!(
            lazy::hide(&cases[3]).is_some(),
            "the fall-back case does hide one"
        );
    }

    /// Junk in the base64: mail-parser gives up and keeps the text, mail readers skip
    /// the junk and decode; so does the fast path, and the executable is found.
    #[test]
    fn junk_in_base64_does_not_hide_an_executable() {
        let junk = message(&[part(
            "Content-Type: application/octet-stream; name=\"x.bin\"\r\nContent-Transfer-Encoding: base64",
            &format!("{}!!\r\n", b64(PE)),
        )]);
        let found = analyse(&junk, &Limits::default());
        assert_eq!(
            found.attachments[0].real_type,
            Some("application/vnd.microsoft.portable-executable")
        );
    }
}
