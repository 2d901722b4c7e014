//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463).

use std::fmt;

/// One reply: a three-digit code, an optional enhanced status code and one or more lines
/// of text. RFC 2034 puts the enhanced code on every reply except the greeting and the
/// replies to EHLO/HELO, which therefore carry `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code, e.g. `Reply::new(250, "2.1.0", "Ok")`.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO/HELO).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply as it goes on the wire: `code-text` for all lines but the last,
    /// `code text` for the last, each ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.status {
                Some(status) => format!("{}{}{} {}\r\n", self.code, sep, status, line),
                None => format!("{}{}{}\r\n", self.code, sep, line),
            };
            out.extend_from_slice(text.as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(&self.to_bytes()).into_owned();
        f.write_str(text.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(r.to_bytes(), b"250 2.1.0 Ok\r\n");
    }

    #[test]
    fn multi_line_without_enhanced_code() {
        let r = Reply::plain(250, vec!["mx.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_bytes(), b"250-mx.example\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn multi_line_with_enhanced_code_repeats_it() {
        let r = Reply {
            code: 214,
            status: Some("2.0.0"),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_bytes(), b"214-2.0.0 a\r\n214 2.0.0 b\r\n");
    }
}
