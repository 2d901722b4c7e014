//! Walking a message's MIME tree with mail-parser and describing each attachment.
//!
//! mail-parser keeps a flat list of parts with child indexes for multiparts and a
//! parsed [`Message`] for message/rfc822 parts. Parts of a message/rfc822 part sent
//! as 7bit/8bit carry offsets into the outer message; parts of one sent base64 or
//! quoted-printable carry offsets into its decoded octets, which are not in the
//! message, so those parts take the range of the enclosing part.

use super::{Analysis, Attachment, Limits, MessageStop, PartRange, archive, names};
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
    let mut walker = Walker {
        original: message,
        limits,
        analysis: Analysis::default(),
        parts_seen: 0,
    };
    // mail-parser 0.11.9 has `debug_assert!(false)`s on malformed MIME it recovers
    // from in release builds (the fuzzer found them, message.rs "Invalid part ID");
    // in debug builds they panic. A panic there must not take the caller down.
    let walked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some(parsed) = MessageParser::default().parse(message) {
            walker.message(&parsed, 0, None);
        }
    }));
    if walked.is_err() {
        return Analysis {
            attachments: Vec::new(),
            stopped: Some(MessageStop::Unparseable),
        };
    }
    walker.analysis
}

struct Walker<'a> {
    original: &'a [u8],
    limits: &'a Limits,
    analysis: Analysis,
    parts_seen: usize,
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
        match &part.body {
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
                    self.push(part, Some(name), raw, range, outer.is_some());
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
                    self.push(part, name, &body, range, outer.is_some());
                }
            }
            PartType::Binary(body) | PartType::InlineBinary(body) => {
                let name = names::file_name(part);
                self.push(part, name, body, range, outer.is_some());
            }
        }
    }

    fn stop(&mut self, why: MessageStop) {
        self.analysis.stopped.get_or_insert(why);
    }

    /// Whether `nested` was parsed from the octets of the original message (so its
    /// offsets point into it) rather than from a decoded copy.
    fn is_original(&self, nested: &Message<'_>) -> bool {
        let raw: &[u8] = &nested.raw_message;
        std::ptr::eq(raw.as_ptr(), self.original.as_ptr()) && raw.len() == self.original.len()
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
        body: &[u8],
        range: Option<PartRange>,
        in_encoded_message: bool,
    ) {
        let real_type = infer::get(&body[..body.len().min(MAGIC_PREFIX)]).map(|t| t.mime_type());
        let archive = archive::is_zip(body).then(|| archive::list(body, &self.limits.archive));
        self.analysis.attachments.push(Attachment {
            name,
            declared_type: declared_type(part),
            real_type,
            size: body.len() as u64,
            range,
            in_encoded_message,
            archive,
        });
    }
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
