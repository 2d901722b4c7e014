//! Base64 bodies decoded only as far as the rules need.
//!
//! mail-parser decodes every part in full while it looks for the part's end, one octet
//! at a time: for a 100 KiB attachment that is most of the analysis. The rules need
//! only the first [`MAGIC_PREFIX`](super::walk) octets (magic bytes), the decoded size,
//! and the whole body of a zip. So before parsing, [`hide`] rewrites each
//! `Content-Transfer-Encoding: base64` header value in a copy of the message to a token
//! mail-parser does not know (same length, so every offset stays true), and the walker
//! decodes those bodies itself ([`decode_prefix`], [`decoded_size`], [`decode_all`]).
//!
//! Only the common spellings at the start of a line are hidden; any other (folded,
//! commented, odd case) is left to mail-parser, which is correct, only slower. A hidden
//! part that mail-parser then takes for a message/rfc822 (whose decoded octets it would
//! have parsed) sends the walker back to a plain parse of the original message.
//!
//! Decoding is lenient, as mail readers are: octets outside the base64 alphabet are
//! skipped, and decoding stops at the first `=`.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// What hidden values become: six octets, no transfer encoding mail-parser knows.
const TOKEN: &[u8; 6] = b"xb64lz";
const HEADER: &[u8] = b"content-transfer-encoding:";

/// A copy of `message` with the base64 transfer encodings hidden, and the offsets of
/// the hidden values; `None` when there is none to hide.
pub fn hide(message: &[u8]) -> Option<(Vec<u8>, Vec<usize>)> {
    let mut hidden = Vec::new();
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', message).map(|i| i + 1));
    for start in starts {
        let line = &message[start.min(message.len())..];
        if line.len() < HEADER.len() + 6 || !line[..HEADER.len()].eq_ignore_ascii_case(HEADER) {
            continue;
        }
        let mut at = HEADER.len();
        while matches!(line.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        let Some(value) = line.get(at..at + 6) else {
            continue;
        };
        let mut end = at + 6;
        while matches!(line.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        if value.eq_ignore_ascii_case(b"base64") && matches!(line.get(end..end + 2), Some(b"\r\n"))
        {
            hidden.push(start + at);
        }
    }
    if hidden.is_empty() {
        return None;
    }
    let mut copy = message.to_vec();
    for &at in &hidden {
        copy[at..at + 6].copy_from_slice(TOKEN);
    }
    Some((copy, hidden))
}

fn is_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn engine() -> GeneralPurpose {
    let config = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&STANDARD, config)
}

/// The alphabet octets of `body` before the first `=`, at most `max`.
fn symbols(body: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(max.min(body.len()));
    for &b in body {
        if b == b'=' || out.len() == max {
            break;
        }
        if is_alphabet(b) {
            out.push(b);
        }
    }
    out
}

fn decode(mut symbols: Vec<u8>) -> Vec<u8> {
    // A lone symbol after the last full group carries no whole octet.
    if symbols.len() % 4 == 1 {
        symbols.pop();
    }
    engine().decode(&symbols).unwrap_or_default()
}

/// The first `n` (or fewer) decoded octets of `body`.
pub fn decode_prefix(body: &[u8], n: usize) -> Vec<u8> {
    let mut prefix = decode(symbols(body, n.div_ceil(3) * 4));
    prefix.truncate(n);
    prefix
}

/// The whole decoded body.
pub fn decode_all(body: &[u8]) -> Vec<u8> {
    decode(symbols(body, usize::MAX))
}

/// The decoded size of `body`, counted without decoding: three octets per four
/// symbols. Octets that are neither line breaks, blanks nor `=` count as symbols, so
/// junk between the symbols can only make the size larger, never smaller.
pub fn decoded_size(body: &[u8]) -> u64 {
    let end = memchr::memchr(b'=', body).unwrap_or(body.len());
    let body = &body[..end];
    let blanks = body
        .iter()
        .filter(|&&b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count();
    let symbols = (body.len() - blanks) as u64;
    symbols / 4 * 3 + (symbols % 4).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as PLAIN;

    fn wrapped(data: &[u8]) -> Vec<u8> {
        let text = PLAIN.encode(data);
        let lines: Vec<&[u8]> = text.as_bytes().chunks(76).collect();
        lines.join(&b"\r\n"[..])
    }

    #[test]
    fn decoding_agrees_with_a_strict_decoder_on_clean_input() {
        for len in [0, 1, 2, 3, 4, 5, 56, 57, 58, 8191, 8192, 8193, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let body = wrapped(&data);
            assert_eq!(decode_all(&body), data, "{len}");
            assert_eq!(decoded_size(&body), len as u64, "{len}");
            assert_eq!(decode_prefix(&body, 8192), data[..len.min(8192)], "{len}");
        }
    }

    #[test]
    fn junk_is_skipped_and_only_grows_the_size() {
        let body = b"TV!qQ\r\nAA*MA\r\n==";
        assert_eq!(decode_all(body), b"MZ\x90\x00\x03\x00");
        assert!(decoded_size(body) >= 5);
    }

    #[test]
    fn only_base64_header_values_at_line_starts_are_hidden() {
        let message = b"Content-Transfer-Encoding: base64\r\nX: 1\r\n\r\n--b\r\ncontent-transfer-encoding:\tBASE64 \r\nX-Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: base64x\r\nContent-Transfer-Encoding: quoted-printable\r\n";
        let (copy, at) = hide(message).expect("two to hide");
        assert_eq!(at.len(), 2);
        assert_eq!(copy.len(), message.len());
        let text = String::from_utf8(copy).unwrap();
        assert!(text.starts_with("Content-Transfer-Encoding: xb64lz\r\n"));
        assert!(text.contains("content-transfer-encoding:\txb64lz \r\n"));
        assert!(text.contains("X-Content-Transfer-Encoding: base64\r\n"));
        assert!(text.contains("Encoding: base64x\r\n"));
        assert_eq!(hide(b"Subject: base64\r\n\r\nbody"), None);
    }
}
