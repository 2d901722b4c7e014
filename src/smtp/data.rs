//! Message content framing for DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030):
//! dot-unstuffing, the end-of-data indication, the size and line-length limits, and the
//! SMTP smuggling defence.
//!
//! Smuggling works when two servers disagree on where the content ends, e.g. one ends
//! it at `<LF>.<LF>` and the next only at `<CRLF>.<CRLF>`. Here only `<CRLF>.<CRLF>`
//! ends DATA, and any bare CR or LF gets the whole message refused (like Postfix's
//! `smtpd_forbid_bare_newline`), so no content we accept can mean anything else
//! downstream, and the stream is always followed to the real terminator.

use super::reply::Reply;

/// Limits applied while receiving content.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Octets of content (after dot-unstuffing, line endings included).
    pub max_size: u64,
    /// Octets of one line without its CRLF. RFC 5321 4.5.3.1.6 says 998; this is the
    /// configurable upper bound. For DATA the stuffing dot counts: it is on the wire.
    pub max_line: usize,
}

/// The verdict on a received message.
///
/// When several limits were broken, the first of `TooBig`, `BareLineEnding`,
/// `LineTooLong` wins: a size over the limit advertised in EHLO SIZE is the verdict a
/// client can act on without reading its content, and a bare line ending (a broken or
/// hostile client) matters more than a long line (usually a formatting slip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOutcome {
    Complete,
    TooBig,
    LineTooLong,
    BareLineEnding,
}

impl BodyOutcome {
    /// The reply refusing the message, or `None` when it may be accepted.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            BodyOutcome::Complete => None,
            BodyOutcome::TooBig => Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            )),
            BodyOutcome::LineTooLong => Some(Reply::new(552, "5.3.4", "Message line too long")),
            BodyOutcome::BareLineEnding => Some(Reply::new(
                550,
                "5.5.2",
                "Message refused: bare <CR> or <LF> in data (see RFC 5321 2.3.8)",
            )),
        }
    }
}

/// Bookkeeping shared by DATA and BDAT: size, line length, bare line endings.
#[derive(Debug)]
struct Content {
    limits: BodyLimits,
    received: u64,
    line_len: usize,
    too_big: bool,
    too_long: bool,
    bare: bool,
}

impl Content {
    fn new(limits: BodyLimits) -> Self {
        Content {
            limits,
            received: 0,
            line_len: 0,
            too_big: false,
            too_long: false,
            bare: false,
        }
    }

    /// Appends what still fits under `max_size`; counts everything.
    fn append(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let room = self.limits.max_size.saturating_sub(self.received);
        let take = usize::try_from(room).map_or(bytes.len(), |r| r.min(bytes.len()));
        out.extend_from_slice(bytes.get(..take).unwrap_or(bytes));
        self.received = self.received.saturating_add(bytes.len() as u64);
        self.too_big |= self.received > self.limits.max_size;
    }

    fn line_octets(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        self.too_long |= self.line_len > self.limits.max_line;
    }

    /// Takes text up to and including the next CR or LF. A CR is appended at once but
    /// judged by [`Content::after_cr`] once the next octet is known. Returns the octets
    /// consumed and whether the last one was a CR.
    fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let n = input
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(input.len());
        let (text, rest) = input.split_at(n);
        self.append(text, out);
        self.line_octets(n);
        match rest.first() {
            Some(b'\r') => {
                self.append(b"\r", out);
                (n + 1, true)
            }
            Some(_) => {
                self.bare = true;
                self.append(b"\n", out);
                self.line_len = 0;
                (n + 1, false)
            }
            None => (n, false),
        }
    }

    /// Settles a CR: followed by LF it ends the line, otherwise it was bare.
    fn after_cr(&mut self, lf: bool, out: &mut Vec<u8>) {
        if lf {
            self.append(b"\n", out);
            self.line_len = 0;
        } else {
            self.bare = true;
            self.line_octets(1);
        }
    }

    fn outcome(&self, pending_bare: bool) -> BodyOutcome {
        if self.too_big {
            BodyOutcome::TooBig
        } else if self.bare || pending_bare {
            BodyOutcome::BareLineEnding
        } else if self.too_long {
            BodyOutcome::LineTooLong
        } else {
            BodyOutcome::Complete
        }
    }
}

/// Where the DATA receiver stands between two octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a CRLF (or the start of DATA).
    LineStart,
    /// `.` at a line start: stuffing, or the start of the end-of-data indication.
    Dot,
    /// `.<CR>` at a line start: the end of data if LF follows.
    DotCr,
    /// Inside a line, or at the start of one that followed a bare LF (where a dot can
    /// end nothing).
    InLine,
    /// After a CR inside a line.
    Cr,
    Done,
}

/// Receives the content of one DATA command.
#[derive(Debug)]
pub struct DataReceiver {
    content: Content,
    state: State,
}

impl DataReceiver {
    pub fn new(limits: BodyLimits) -> Self {
        DataReceiver {
            content: Content::new(limits),
            state: State::LineStart,
        }
    }

    /// Consumes DATA stream bytes, appending the dot-unstuffed content to `out` (never
    /// more than max_size bytes: beyond the limit content is discarded but the stream
    /// is still followed to its end). Returns how many bytes of `input` were consumed
    /// and, once the terminating `<CRLF>.<CRLF>` was seen, the outcome. Bytes after the
    /// terminator are not consumed (they are the next commands, pipelined). Once done,
    /// further calls consume nothing and repeat the outcome.
    ///
    /// ```text
    /// end-of-data = CRLF "." CRLF   ; the first CRLF ends the last line of content
    /// ```
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<BodyOutcome>) {
        let mut pos = 0;
        while self.state != State::Done {
            match input.get(pos..) {
                Some(rest) if !rest.is_empty() => pos += self.step(rest, out),
                _ => break,
            }
        }
        let outcome = (self.state == State::Done).then(|| self.content.outcome(false));
        (pos, outcome)
    }

    /// Advances over the start of non-empty `rest`; returns the octets consumed, which
    /// is zero only when the state changes to one that consumes.
    fn step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> usize {
        let first = rest.first().copied();
        let (next, consumed) = match (self.state, first) {
            (State::LineStart, Some(b'.')) => {
                self.content.line_octets(1);
                (State::Dot, 1)
            }
            (State::Dot, Some(b'\r')) => (State::DotCr, 1),
            (State::DotCr, Some(b'\n')) => (State::Done, 1),
            (State::DotCr, _) => {
                // `.<CR>x`: the dot was stuffing and the CR is bare.
                self.content.append(b"\r", out);
                self.content.after_cr(false, out);
                (State::InLine, 0)
            }
            (State::Cr, Some(b'\n')) => {
                self.content.after_cr(true, out);
                (State::LineStart, 1)
            }
            (State::Cr, _) => {
                self.content.after_cr(false, out);
                (State::InLine, 0)
            }
            (State::InLine, _) => {
                let (n, cr) = self.content.scan(rest, out);
                (if cr { State::Cr } else { State::InLine }, n)
            }
            (State::LineStart | State::Dot, _) => (State::InLine, 0),
            (State::Done, _) => (State::Done, 0),
        };
        self.state = next;
        consumed
    }

    /// Octets of content so far (after dot-unstuffing).
    pub fn received(&self) -> u64 {
        self.content.received
    }
}

/// Receives the chunks of one BDAT transaction; the content is taken as is.
#[derive(Debug)]
pub struct BdatReceiver {
    content: Content,
    /// The last octet seen was a CR, to be judged by the next one.
    pending_cr: bool,
}

impl BdatReceiver {
    pub fn new(limits: BodyLimits) -> Self {
        BdatReceiver {
            content: Content::new(limits),
            pending_cr: false,
        }
    }

    /// Consumes one chunk's bytes (the caller reads exactly the BDAT size from the
    /// socket, possibly in several calls); appends to out up to max_size, tracks line
    /// lengths and bare CR/LF across chunk boundaries.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                let lf = rest.first() == Some(&b'\n');
                self.content.after_cr(lf, out);
                if lf {
                    rest = rest.get(1..).unwrap_or_default();
                    continue;
                }
            }
            let (n, cr) = self.content.scan(rest, out);
            self.pending_cr = cr;
            rest = rest.get(n..).unwrap_or_default();
        }
    }

    pub fn received(&self) -> u64 {
        self.content.received
    }

    /// The outcome if the content ended here (after the LAST chunk). A CR ending the
    /// data so far counts as bare, so an early check can differ from the final outcome
    /// only when the next chunk starts with LF.
    pub fn outcome(&self) -> BodyOutcome {
        self.content.outcome(self.pending_cr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::line::tests::fragmentations;

    fn lim(max_size: u64, max_line: usize) -> BodyLimits {
        BodyLimits { max_size, max_line }
    }

    /// Feeds `input` to a DataReceiver in every fragmentation; checks they all agree
    /// and that `out` stays within max_size. Returns (content, outcome, unconsumed).
    fn data(limits: BodyLimits, input: &[u8]) -> (Vec<u8>, Option<BodyOutcome>, Vec<u8>) {
        let mut results = fragmentations(input).into_iter().map(|fragments| {
            let (mut rx, mut out, mut rest) = (DataReceiver::new(limits), Vec::new(), Vec::new());
            let mut outcome = None;
            for fragment in fragments {
                if outcome.is_some() {
                    rest.extend_from_slice(fragment);
                    continue;
                }
                let (n, o) = rx.feed(fragment, &mut out);
                assert!(n == fragment.len() || o.is_some(), "stopped early");
                rest.extend_from_slice(&fragment[n..]);
                outcome = o;
                assert!(out.len() as u64 <= limits.max_size);
            }
            (out, outcome, rest)
        });
        let first = results.next().unwrap();
        for other in results {
            assert_eq!(
                other,
                first,
                "fragmentations disagree on {:?}",
                String::from_utf8_lossy(input)
            );
        }
        first
    }

    #[test]
    fn data_table() {
        use BodyOutcome::*;
        let (l19, l20, l21) = ("a".repeat(19), "a".repeat(20), "a".repeat(21));
        // (input, content, outcome, unconsumed)
        #[rustfmt::skip]
        let cases: Vec<(String, String, Option<BodyOutcome>, &str)> = vec![
            (".\r\n".into(), "".into(), Some(Complete), ""),
            (".\r\nQUIT\r\n".into(), "".into(), Some(Complete), "QUIT\r\n"),
            ("\r\n.\r\n".into(), "\r\n".into(), Some(Complete), ""),
            ("S: a\r\n\r\nbody\r\n.\r\nMAIL".into(), "S: a\r\n\r\nbody\r\n".into(), Some(Complete), "MAIL"),
            ("..a\r\n..\r\n. b\r\na.\r\n.\r\n".into(), ".a\r\n.\r\n b\r\na.\r\n".into(), Some(Complete), ""),
            ("a\r\n.\r".into(), "a\r\n".into(), None, ""),
            ("a\r\n.".into(), "a\r\n".into(), None, ""),
            ("a\r\n".into(), "a\r\n".into(), None, ""),
            (format!("{l20}\r\n.\r\n"), format!("{l20}\r\n"), Some(Complete), ""),
            (format!("{l21}\r\n.\r\n"), format!("{l21}\r\n"), Some(LineTooLong), ""),
            // The stuffing dot is on the wire and counts.
            (format!(".{l19}\r\n.\r\n"), format!("{l19}\r\n"), Some(Complete), ""),
            (format!(".{l20}\r\n.\r\n"), format!("{l20}\r\n"), Some(LineTooLong), ""),
            ("a\rb\r\n.\r\n".into(), "a\rb\r\n".into(), Some(BareLineEnding), ""),
            ("a\nb\r\n.\r\n".into(), "a\nb\r\n".into(), Some(BareLineEnding), ""),
            (".\r.\r\n.\r\n".into(), "\r.\r\n".into(), Some(BareLineEnding), ""),
            // A dot after a bare LF ends nothing.
            (".\n.\r\n".into(), "\n.\r\n".into(), None, ""),
            (".\n.\r\n.\r\n".into(), "\n.\r\n".into(), Some(BareLineEnding), ""),
            (format!("{l21}\n\r\n.\r\n"), format!("{l21}\n\r\n"), Some(BareLineEnding), ""),
        ];
        for (input, content, outcome, rest) in &cases {
            let (out, got, unconsumed) = data(lim(64, 20), input.as_bytes());
            let got = (out.as_slice(), got, unconsumed.as_slice());
            assert_eq!(
                got,
                (content.as_bytes(), *outcome, rest.as_bytes()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn size_limit_exactly_at_and_one_over() {
        let limits = lim(16, 100);
        let at = "0123456789abcd\r\n"; // 16 octets
        assert_eq!(
            data(limits, format!("{at}.\r\n").as_bytes()).1,
            Some(BodyOutcome::Complete)
        );
        let (out, outcome, _) = data(limits, format!("x{at}\r\n.\r\n").as_bytes());
        assert_eq!(
            (out.as_slice(), outcome),
            (
                format!("x{at}").as_bytes()[..16].as_ref(),
                Some(BodyOutcome::TooBig)
            )
        );
        let (_, outcome, _) = data(limits, format!("x{at}\n\r\n.\r\n").as_bytes());
        assert_eq!(
            outcome,
            Some(BodyOutcome::TooBig),
            "TooBig outranks a bare LF"
        );
    }

    #[test]
    fn smuggling_attempts_do_not_end_the_message() {
        let fakes = ["\n.\r\n", "\n.\n", "\r.\r", "\r\n.\n", "\n.\r", "\r.\r\n"];
        let more = ["\r\n.\r", "\n.\r\r\n", "\r\n\r.\r\n"];
        let limits = lim(1024, 998);
        for fake in fakes.into_iter().chain(more) {
            let smuggled = "MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\nevil\r\n";
            let input = format!("Subject: x\r\n\r\nhello{fake}{smuggled}\r\n.\r\nQUIT\r\n");
            let (out, outcome, rest) = data(limits, input.as_bytes());
            assert_eq!(outcome, Some(BodyOutcome::BareLineEnding), "{fake:?}");
            assert_eq!(rest, b"QUIT\r\n", "{fake:?}");
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.contains(smuggled),
                "{fake:?}: smuggled commands kept as content"
            );
        }
    }

    #[test]
    fn memory_stays_bounded_and_stream_is_followed() {
        let limits = lim(4096, 998);
        let (mut rx, mut out) = (DataReceiver::new(limits), Vec::new());
        let line = "x".repeat(70) + "\r\n";
        for _ in 0..10_000 {
            assert_eq!(rx.feed(line.as_bytes(), &mut out), (line.len(), None));
        }
        assert_eq!(
            rx.feed(b".\r\nQUIT", &mut out),
            (3, Some(BodyOutcome::TooBig))
        );
        assert_eq!((out.len(), rx.received()), (4096, 720_000));
    }

    #[test]
    fn bdat_chunks() {
        use BodyOutcome::*;
        let limits = lim(16, 10);
        // (chunks, outcome): CR/LF pairs split across chunks are still line endings.
        let cases: &[(&[&str], BodyOutcome)] = &[
            (&["abc\r", "\ndef\r\n"], Complete),
            (&["", "abc\r\n", ""], Complete),
            (&["abc\r"], BareLineEnding),
            (&["abc\r", "def"], BareLineEnding),
            (&["abc\n"], BareLineEnding),
            (&["1234567890\r", "\n"], Complete),
            (&["12345678901\r\n"], LineTooLong),
            (&["0123456\r\n01234\r\n"], Complete),
            (&["0123456\r\n012345\r\n"], TooBig),
        ];
        for (chunks, want) in cases {
            let whole = chunks.concat();
            for fragments in fragmentations(whole.as_bytes()) {
                let (mut rx, mut out) = (BdatReceiver::new(limits), Vec::new());
                fragments.iter().for_each(|f| rx.feed(f, &mut out));
                assert_eq!(rx.outcome(), *want, "{fragments:?}");
                assert_eq!(&out[..], &whole.as_bytes()[..out.len()]);
                assert!(out.len() <= 16 && rx.received() == whole.len() as u64);
            }
        }
    }

    #[test]
    fn replies() {
        assert_eq!(BodyOutcome::Complete.reply(), None);
        let codes = [
            (BodyOutcome::TooBig, 552, "5.3.4"),
            (BodyOutcome::LineTooLong, 552, "5.3.4"),
            (BodyOutcome::BareLineEnding, 550, "5.5.2"),
        ];
        for (outcome, code, status) in codes {
            let r = outcome.reply().unwrap();
            assert_eq!((r.code, r.status), (code, Some(status)));
        }
    }
}
