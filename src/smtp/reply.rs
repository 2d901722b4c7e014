//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463): built
//! by the server side, and parsed from a remote server by the outbound client
//! ([`ReplyParser`]).

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

/// The longest reply line taken from a remote server, CRLF included. RFC 5321 4.5.3.1.5
/// says 512; real servers send longer text, so allow some room, but keep it bounded.
pub const MAX_REPLY_LINE: usize = 4096;
/// The most lines one reply may have; an EHLO reply has a few dozen at most.
pub const MAX_REPLY_LINES: usize = 100;

/// Why a remote server's reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {line:?}")]
    Syntax { line: String },
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("reply code changed from {first} to {then} within one reply")]
    CodeChanged { first: u16, then: u16 },
}

/// Assembles one (possibly multi-line) reply from lines received one at a time.
///
/// ```text
/// Reply-line = *( Reply-code "-" [ textstring ] CRLF )
///              Reply-code [ SP textstring ] CRLF
/// Reply-code = %x32-35 %x30-35 %x30-39
/// ```
///
/// The parsed [`Reply`] carries `status: None` and the text exactly as received (an
/// enhanced status code included); [`Reply::enhanced_status`] finds the code in it.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    pub fn new() -> Self {
        ReplyParser::default()
    }

    /// Takes one line without its CRLF; `Ok(Some(reply))` when it was the last line,
    /// after which the parser is ready for the next reply.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() + 2 > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let (code, last, text) = split_reply_line(line)?;
        if let Some(first) = self.code.filter(|&first| first != code) {
            return Err(ReplyError::CodeChanged { first, then: code });
        }
        self.code = Some(code);
        self.lines.push(text);
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply::plain(code, std::mem::take(&mut self.lines))))
    }
}

/// Splits `250-text` / `250 text` / `250` into the code, whether this is the last line,
/// and the text (control characters replaced, so the text is safe to log).
fn split_reply_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let syntax = || ReplyError::Syntax {
        line: String::from_utf8_lossy(line).into_owned(),
    };
    let (digits, rest) = line.split_at_checked(3).ok_or_else(syntax)?;
    let code_ok = matches!(digits, [b'2'..=b'5', b'0'..=b'5', b'0'..=b'9']);
    if !code_ok {
        return Err(syntax());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let last = match rest.first() {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(syntax()),
    };
    let text = String::from_utf8_lossy(rest.get(1..).unwrap_or_default())
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok((code, last, text))
}

/// True for `class "." subject "." detail` (RFC 3463 2) whose class matches the reply
/// code's first digit, as RFC 2034 requires.
fn is_enhanced_status(token: &str, code: u16) -> bool {
    let mut parts = token.split('.');
    let class_ok = parts.next() == Some(&(code / 100).to_string());
    let numbers_ok = (0..2).all(|_| {
        parts
            .next()
            .is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    });
    class_ok && numbers_ok && parts.next().is_none()
}

impl Reply {
    /// The enhanced status code: the one the reply was built with, or the one leading
    /// the text of a parsed reply, e.g. `5.1.1`; `None` when there is none.
    pub fn enhanced_status(&self) -> Option<&str> {
        if let Some(status) = self.status {
            return Some(status);
        }
        let first = self.lines.first()?.split(' ').next()?;
        is_enhanced_status(first, self.code).then_some(first)
    }

    /// The reply on one line, for logs and DSNs: the code, the enhanced status code
    /// once, and the text of all lines joined with spaces, e.g.
    /// `550 5.1.1 <bob@example.org>: user unknown`.
    pub fn one_line(&self) -> String {
        let status = self.enhanced_status().map(str::to_string);
        let mut out = self.code.to_string();
        if let Some(status) = &status {
            out.push(' ');
            out.push_str(status);
        }
        for line in &self.lines {
            let text = match (&status, self.status) {
                // A parsed reply repeats its enhanced code on every line; say it once.
                (Some(s), None) => line.strip_prefix(s.as_str()).unwrap_or(line),
                _ => line,
            };
            let text = text.trim();
            if !text.is_empty() {
                out.push(' ');
                out.push_str(text);
            }
        }
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

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut parser = ReplyParser::new();
        let mut out = Vec::new();
        for line in input.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.extend(parser.push_line(line)?);
        }
        Ok(out)
    }

    #[test]
    fn parses_single_and_multi_line_replies() {
        for ending in ["\r\n", "\n"] {
            let input = "220 mx.example ESMTP\n250-mx.example\n250-SIZE 1000\n250 8BITMIME\n"
                .replace('\n', ending);
            let replies = parse_all(input.as_bytes()).unwrap();
            assert_eq!(replies.len(), 2);
            assert_eq!(
                replies[0],
                Reply::plain(220, vec!["mx.example ESMTP".into()])
            );
            assert_eq!(replies[1].code, 250);
            assert_eq!(replies[1].lines, ["mx.example", "SIZE 1000", "8BITMIME"]);
        }
    }

    #[test]
    fn bare_code_and_empty_continuation() {
        let replies = parse_all(b"250\r\n354-\r\n354 go\r\n").unwrap();
        assert_eq!(replies[0], Reply::plain(250, vec![String::new()]));
        assert_eq!(replies[1].lines, ["", "go"]);
    }

    #[test]
    fn enhanced_status_and_one_line() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (
                b"550 5.1.1 <bob@example.org>: user unknown\r\n",
                Some("5.1.1"),
                "550 5.1.1 <bob@example.org>: user unknown",
            ),
            (
                b"452-4.5.3 too many\r\n452 4.5.3 recipients\r\n",
                Some("4.5.3"),
                "452 4.5.3 too many recipients",
            ),
            (b"554 no service here\r\n", None, "554 no service here"),
            // The class must match the reply code.
            (b"250 5.1.1 odd\r\n", None, "250 5.1.1 odd"),
            (b"250 2.1.1234 odd\r\n", None, "250 2.1.1234 odd"),
            (b"250 2.0.0\r\n", Some("2.0.0"), "250 2.0.0"),
            (b"354\r\n", None, "354"),
        ];
        for (input, status, line) in cases {
            let reply = parse_all(input).unwrap().remove(0);
            assert_eq!(reply.enhanced_status(), *status, "{input:?}");
            assert_eq!(reply.one_line(), *line);
        }
        let built = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(built.one_line(), "250 2.1.0 Ok");
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let bad: &[&[u8]] = &[
            b"",
            b"25",
            b"2500 x",
            b"abc def",
            b"650 x",
            b"199 x",
            b"260 x",
            b"250x",
            b"\xff\xfe\xfd",
            b"-250 x",
        ];
        for line in bad {
            let err = ReplyParser::new().push_line(line).unwrap_err();
            assert!(matches!(err, ReplyError::Syntax { .. }), "{line:?}: {err}");
        }
        let mut p = ReplyParser::new();
        p.push_line(b"250-a").unwrap();
        assert_eq!(
            p.push_line(b"251 b"),
            Err(ReplyError::CodeChanged {
                first: 250,
                then: 251
            })
        );
        let long = vec![b'x'; MAX_REPLY_LINE];
        let mut line = b"250 ".to_vec();
        line.extend_from_slice(&long);
        assert_eq!(
            ReplyParser::new().push_line(&line),
            Err(ReplyError::LineTooLong)
        );
        let mut p = ReplyParser::new();
        let many = (0..MAX_REPLY_LINES)
            .map(|_| p.push_line(b"250-x"))
            .collect::<Vec<_>>();
        assert!(many.iter().all(|r| r == &Ok(None)));
        assert_eq!(p.push_line(b"250 x"), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn control_characters_do_not_reach_the_text() {
        let reply = ReplyParser::new()
            .push_line(b"550 a\x1b[2Jb\x00c")
            .unwrap()
            .unwrap();
        assert_eq!(reply.lines, ["a [2Jb c"]);
    }
}
