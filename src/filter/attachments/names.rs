//! File names of parts and the forms the rules compare.
//!
//! mail-parser 0.11 already decodes RFC 2231 parameters (`filename*=`, numbered
//! continuations `filename*0*=`, charset and language) and RFC 2047 encoded words that
//! start a parameter value (`name="=?utf-8?B?...?="`). What it leaves, an encoded word
//! in the middle of a value (`name="invoice =?utf-8?Q?=C3=A9?=.exe"`, which Outlook
//! and old webmails send), is decoded here.
//!
//! For matching, a name is lower-cased and stripped of what hides its real extension
//! from a reader but not from Windows: trailing dots and spaces (Windows drops them),
//! and bidirectional and zero-width format characters (U+202E "RIGHT-TO-LEFT OVERRIDE"
//! makes `invoice\u{202E}fdp.exe` display as `invoiceexe.pdf`).

use mail_parser::MessagePart;
use mail_parser::MimeHeaders;
use mail_parser::parsers::MessageStream;

/// Longest name kept, in characters; a longer one is cut (a name has no business being
/// longer, and each one is copied into findings and notices).
pub const MAX_NAME_CHARS: usize = 255;

/// The decoded file name of a part: Content-Disposition `filename`, else Content-Type
/// `name`.
pub fn file_name(part: &MessagePart<'_>) -> Option<String> {
    let raw = part.attachment_name()?;
    let decoded = decode_encoded_words(raw);
    Some(decoded.chars().take(MAX_NAME_CHARS).collect())
}

/// Decodes every RFC 2047 encoded word in `text`; anything not a valid encoded word
/// stays as it is.
pub fn decode_encoded_words(text: &str) -> String {
    if !text.contains("=?") {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'=' && bytes[i + 1] == b'?' {
            let mut stream = MessageStream::new(&bytes[i + 1..]);
            if let Some(word) = stream.decode_rfc2047() {
                out.push_str(&text[copied..i]);
                out.push_str(&word);
                i += 1 + stream.offset();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    // `copied` is always just after an ASCII '=' of an encoded word, a char boundary.
    out.push_str(&text[copied..]);
    out
}

/// Characters that change how a name is displayed without being seen: bidi controls,
/// zero-width characters and the BOM.
fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Whether a name uses one of the tricks [`canonical`] undoes.
pub fn is_disguised(name: &str) -> bool {
    name.chars().any(is_hidden) || name.ends_with(['.', ' '])
}

/// The name as Windows would treat it, lower case: hidden characters removed,
/// trailing dots and spaces dropped.
pub fn canonical(name: &str) -> String {
    let visible: String = name.chars().filter(|&c| !is_hidden(c)).collect();
    visible.trim_end_matches(['.', ' ']).to_lowercase()
}

/// The extensions of a canonical name's last path component, last first:
/// `a/invoice.pdf.exe` gives `["exe", "pdf"]`; a leading dot (`.profile`) is no
/// extension.
pub fn extensions(canonical_name: &str) -> Vec<&str> {
    let base = canonical_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(canonical_name);
    let base = base.trim_start_matches('.');
    let mut pieces: Vec<&str> = base.split('.').skip(1).map(str::trim).collect();
    pieces.reverse();
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_mid_value_are_decoded() {
        assert_eq!(
            decode_encoded_words("invoice =?utf-8?Q?=C3=A9t=C3=A9?=.exe"),
            "invoice été.exe"
        );
        assert_eq!(decode_encoded_words("=?utf-8?B?w6k=?="), "é");
        assert_eq!(decode_encoded_words("a =?bogus"), "a =?bogus");
        assert_eq!(decode_encoded_words("=?"), "=?");
    }

    #[test]
    fn canonical_names_undo_display_tricks() {
        assert_eq!(canonical("Invoice\u{202E}fdp.EXE"), "invoicefdp.exe");
        assert_eq!(canonical("setup.exe. . "), "setup.exe");
        assert!(is_disguised("a\u{202E}b"));
        assert!(is_disguised("a.exe."));
        assert!(!is_disguised("a.exe"));
        assert_eq!(extensions("dir/invoice.pdf.exe"), vec!["exe", "pdf"]);
        assert_eq!(extensions(".profile"), Vec::<&str>::new());
        assert_eq!(extensions("noext"), Vec::<&str>::new());
    }
}
