//! Message content framing for DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030):
//! dot-unstuffing, the end-of-data indication, the size and line-length limits, line
//! endings, and the SMTP smuggling defence.
//!
//! Smuggling (SEC Consult, Dec 2023; CVE-2023-51764/51765/51766) works when two servers
//! disagree on where the content ends, e.g. one ends it at `<LF>.<LF>` and the next only
//! at `<CRLF>.<CRLF>`. Here only `<CRLF>.<CRLF>` ends DATA, in every mode: the CRLF that
//! ends the last content line and the one after the dot must both be real CRLFs. So
//! `<LF>.<CRLF>`, `<CRLF>.<LF>`, `<LF>.<LF>` and anything with a bare CR end nothing,
//! and the stream is always followed to the real terminator.
//!
//! What is stored never holds a bare line ending either, so no server further on can
//! read an end of data in it that we did not: [`BareLineEndings::Reject`] refuses the
//! message (Postfix's `smtpd_forbid_bare_newline = reject`), and
//! [`BareLineEndings::Normalize`] (the default, like Postfix's `normalize`) takes a line
//! ending in a bare LF as if it ended in CRLF and stores CRLF. A line start after a bare
//! LF is a line start for dot-unstuffing (the sloppy clients that send LF, such as
//! Python's `smtplib.sendmail` with bytes, do stuff their dots there), but a `.` line
//! that touches a bare LF on either side is not the end-of-data indication: its dot is
//! removed as stuffing and an empty line is stored. A lone `.` line can still be stored
//! (it arrived as `..`); the outbound client stuffs every line that starts with a dot
//! (`delivery::client::data::dot_stuff`).
//!
//! A bare CR is refused in both modes: no client that matters ends lines with CR alone,
//! and turning it into CRLF would rewrite content that some servers (Cisco's "clean"
//! mode among them) read as a line break, which is where `<CR>.<CR>` smuggling lives.

use super::reply::Reply;

/// What the receiver does with a line ending in a bare LF (RFC 5321 2.3.8 forbids it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// The line is taken as if it ended in CRLF, and stored with CRLF.
    #[default]
    Normalize,
    /// The whole message is refused with `550 5.5.2`.
    Reject,
}

/// Limits and line-ending handling applied while receiving content.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Octets of content (after dot-unstuffing, line endings included).
    pub max_size: u64,
    /// Octets of one line without its CRLF. RFC 5321 4.5.3.1.6 says 998; this is the
    /// configurable upper bound. For DATA the stuffing dot counts: it is on the wire.
    pub max_line: usize,
    pub bare_line_endings: BareLineEndings,
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

/// Where [`Content::scan`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At the end of the input, inside a line.
    InLine,
    /// After a CR, to be judged by the next octet.
    Cr,
    /// After a bare LF, which ended the line.
    BareLf,
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

    /// Ends a line with CRLF.
    fn end_line(&mut self, out: &mut Vec<u8>) {
        self.append(b"\r\n", out);
        self.line_len = 0;
    }

    /// Ends a line that ended in a bare LF, as the mode says.
    fn bare_lf(&mut self, out: &mut Vec<u8>) {
        match self.limits.bare_line_endings {
            BareLineEndings::Normalize => self.end_line(out),
            BareLineEndings::Reject => {
                self.bare = true;
                self.append(b"\n", out);
                self.line_len = 0;
            }
        }
    }

    /// Takes text up to and including the next CR or LF. A CR is appended at once but
    /// judged by [`Content::after_cr`] once the next octet is known. Returns the octets
    /// consumed and where it stopped.
    fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Stop) {
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
                (n + 1, Stop::Cr)
            }
            Some(_) => {
                self.bare_lf(out);
                (n + 1, Stop::BareLf)
            }
            None => (n, Stop::InLine),
        }
    }

    /// Settles a CR already appended: followed by LF it ends the line, otherwise it was
    /// bare (refused in every mode).
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

/// How the line before the current one ended: only after a CRLF may a `.` line be the
/// end-of-data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Crlf,
    BareLf,
}

/// Where the DATA receiver stands between two octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (DATA starts after the command's CRLF).
    LineStart(After),
    /// `.` at a line start: stuffing, or the start of the end-of-data indication.
    Dot(After),
    /// `.<CR>` at a line start: the end of data if LF follows and the line before
    /// ended in CRLF.
    DotCr(After),
    /// Inside a line.
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
            state: State::LineStart(After::Crlf),
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
            (State::LineStart(after), Some(b'.')) => {
                self.content.line_octets(1);
                (State::Dot(after), 1)
            }
            (State::Dot(after), Some(b'\r')) => (State::DotCr(after), 1),
            (State::DotCr(After::Crlf), Some(b'\n')) => (State::Done, 1),
            // `<LF>.<CRLF>`: a line of one stuffing dot, not the end of data.
            (State::DotCr(After::BareLf), Some(b'\n')) => {
                self.content.end_line(out);
                (State::LineStart(After::Crlf), 1)
            }
            // `.<CR>x`: the dot was stuffing and the CR is bare.
            (State::DotCr(_), _) => {
                self.content.append(b"\r", out);
                self.content.after_cr(false, out);
                (State::InLine, 0)
            }
            (State::Cr, Some(b'\n')) => {
                self.content.after_cr(true, out);
                (State::LineStart(After::Crlf), 1)
            }
            (State::Cr, _) => {
                self.content.after_cr(false, out);
                (State::InLine, 0)
            }
            (State::InLine, _) => match self.content.scan(rest, out) {
                (n, Stop::InLine) => (State::InLine, n),
                (n, Stop::Cr) => (State::Cr, n),
                (n, Stop::BareLf) => (State::LineStart(After::BareLf), n),
            },
            // Any other octet after a line-start dot: the dot was stuffing (`<CRLF>.<LF>`
            // included, which scanning then ends as a line of its own).
            (State::LineStart(_) | State::Dot(_), _) => (State::InLine, 0),
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

/// Receives the chunks of one BDAT transaction. There is no dot-stuffing and no
/// terminator; line endings are handled as for DATA, so what is stored is the same.
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
            let (n, stop) = self.content.scan(rest, out);
            self.pending_cr = stop == Stop::Cr;
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

    use BareLineEndings::{Normalize, Reject};

    fn lim(max_size: u64, max_line: usize) -> BodyLimits {
        lim_in(max_size, max_line, Reject)
    }

    fn lim_in(max_size: u64, max_line: usize, mode: BareLineEndings) -> BodyLimits {
        BodyLimits {
            max_size,
            max_line,
            bare_line_endings: mode,
        }
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

    /// What one input gives in one mode: (content, outcome).
    type Want = (String, Option<BodyOutcome>);

    #[test]
    fn data_table() {
        use BodyOutcome::*;
        let (l19, l20, l21) = ("a".repeat(19), "a".repeat(20), "a".repeat(21));
        let same = |c: &str, o| -> (Want, Want) { ((c.into(), o), (c.into(), o)) };
        let both = |n: &str, no, r: &str, ro| -> (Want, Want) { ((n.into(), no), (r.into(), ro)) };
        // (input, (normalize, reject), unconsumed)
        #[rustfmt::skip]
        let cases: Vec<(String, (Want, Want), &str)> = vec![
            (".\r\n".into(), same("", Some(Complete)), ""),
            (".\r\nQUIT\r\n".into(), same("", Some(Complete)), "QUIT\r\n"),
            ("\r\n.\r\n".into(), same("\r\n", Some(Complete)), ""),
            ("S: a\r\n\r\nbody\r\n.\r\nMAIL".into(), same("S: a\r\n\r\nbody\r\n", Some(Complete)), "MAIL"),
            ("..a\r\n..\r\n. b\r\na.\r\n.\r\n".into(), same(".a\r\n.\r\n b\r\na.\r\n", Some(Complete)), ""),
            ("a\r\n.\r".into(), same("a\r\n", None), ""),
            ("a\r\n.".into(), same("a\r\n", None), ""),
            ("a\r\n".into(), same("a\r\n", None), ""),
            (format!("{l20}\r\n.\r\n"), same(&format!("{l20}\r\n"), Some(Complete)), ""),
            (format!("{l21}\r\n.\r\n"), same(&format!("{l21}\r\n"), Some(LineTooLong)), ""),
            // The stuffing dot is on the wire and counts.
            (format!(".{l19}\r\n.\r\n"), same(&format!("{l19}\r\n"), Some(Complete)), ""),
            (format!(".{l20}\r\n.\r\n"), same(&format!("{l20}\r\n"), Some(LineTooLong)), ""),
            // A bare CR is refused in both modes.
            ("a\rb\r\n.\r\n".into(), same("a\rb\r\n", Some(BareLineEnding)), ""),
            (".\r.\r\n.\r\n".into(), same("\r.\r\n", Some(BareLineEnding)), ""),
            ("a\r\r\n.\r\n".into(), same("a\r\r\n", Some(BareLineEnding)), ""),
            // A bare LF ends a line: CRLF in normalize mode, refused in reject mode.
            ("a\nb\r\n.\r\n".into(), both("a\r\nb\r\n", Some(Complete), "a\nb\r\n", Some(BareLineEnding)), ""),
            ("a\nb\n\r\n.\r\n".into(), both("a\r\nb\r\n\r\n", Some(Complete), "a\nb\n\r\n", Some(BareLineEnding)), ""),
            // After a bare LF a leading dot is stuffing (smtplib stuffs there)…
            ("a\n..b\n\r\n.\r\n".into(), both("a\r\n.b\r\n\r\n", Some(Complete), "a\n.b\n\r\n", Some(BareLineEnding)), ""),
            // …but a `.` line touching a bare LF ends nothing: an empty line is stored.
            (".\n.\r\n".into(), both("\r\n\r\n", None, "\n\r\n", None), ""),
            ("a\n.\r\n".into(), both("a\r\n\r\n", None, "a\n\r\n", None), ""),
            ("a\r\n.\nb\r\n".into(), both("a\r\n\r\nb\r\n", None, "a\r\n\nb\r\n", None), ""),
            ("a\n.\nb\r\n".into(), both("a\r\n\r\nb\r\n", None, "a\n\nb\r\n", None), ""),
            (".\n.\r\n.\r\n".into(), both("\r\n\r\n", Some(Complete), "\n\r\n", Some(BareLineEnding)), ""),
            ("a\r\n.\n.\r\nQUIT\r\n".into(), both("a\r\n\r\n\r\nQUIT\r\n", None, "a\r\n\n\r\nQUIT\r\n", None), ""),
            // Line length counts without the line ending, whichever it was.
            (format!("{l20}\n.\r\n"), both(&format!("{l20}\r\n\r\n"), None, &format!("{l20}\n\r\n"), None), ""),
            (format!("{l21}\n\r\n.\r\n"), both(&format!("{l21}\r\n\r\n"), Some(LineTooLong), &format!("{l21}\n\r\n"), Some(BareLineEnding)), ""),
        ];
        for (input, (normalize, reject), rest) in &cases {
            for (mode, (content, outcome)) in [(Normalize, normalize), (Reject, reject)] {
                let (out, got, unconsumed) = data(lim_in(64, 20, mode), input.as_bytes());
                let got = (out.as_slice(), got, unconsumed.as_slice());
                assert_eq!(
                    got,
                    (content.as_bytes(), *outcome, rest.as_bytes()),
                    "{mode:?} {input:?}"
                );
            }
        }
    }

    /// True when every CR in `content` is followed by LF and every LF follows a CR.
    fn crlf_only(content: &[u8]) -> bool {
        content.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => content.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && content.get(i - 1) == Some(&b'\r'),
            _ => true,
        })
    }

    /// Every input of up to 7 octets over `. \r \n a`, then a real terminator: in both
    /// modes the end of data is exactly the first `<CRLF>.<CRLF>` of the wire (counting
    /// the CRLF of the DATA command), and whatever normalize mode accepts is CRLF only.
    #[test]
    fn end_of_data_is_the_first_crlf_dot_crlf_in_both_modes() {
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        let limits = [lim_in(1024, 998, Normalize), lim_in(1024, 998, Reject)];
        for len in 0..=7u32 {
            for code in 0..4usize.pow(len) {
                let mut input: Vec<u8> = (0..len)
                    .map(|i| alphabet[code / 4usize.pow(i) % 4])
                    .collect();
                input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
                let wire = [b"\r\n".as_slice(), &input].concat();
                let end = wire.windows(5).position(|w| w == b"\r\n.\r\n").unwrap() + 3;
                for limits in limits {
                    let (mut rx, mut out) = (DataReceiver::new(limits), Vec::new());
                    let (n, outcome) = rx.feed(&input, &mut out);
                    let input = String::from_utf8_lossy(&input);
                    assert_eq!(n, end, "{input:?} {limits:?}");
                    let outcome = outcome.unwrap();
                    if limits.bare_line_endings == Normalize && outcome == BodyOutcome::Complete {
                        assert!(crlf_only(&out), "{input:?}");
                    }
                }
            }
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
        for mode in [Normalize, Reject] {
            for fake in fakes.into_iter().chain(more) {
                let smuggled = "MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\nevil\r\n";
                let input = format!("Subject: x\r\n\r\nhello{fake}{smuggled}\r\n.\r\nQUIT\r\n");
                let (out, outcome, rest) = data(lim_in(1024, 998, mode), input.as_bytes());
                // Only LF-only fakes are taken, and only in normalize mode: as lines.
                let taken = mode == Normalize && !fake.replace("\r\n", "").contains('\r');
                let want = match taken {
                    true => BodyOutcome::Complete,
                    false => BodyOutcome::BareLineEnding,
                };
                assert_eq!(outcome, Some(want), "{mode:?} {fake:?}");
                assert_eq!(rest, b"QUIT\r\n", "{mode:?} {fake:?}");
                assert!(!taken || crlf_only(&out), "{fake:?}: stored with CRLF only");
                let out = String::from_utf8(out).unwrap();
                assert!(
                    out.contains(smuggled),
                    "{mode:?} {fake:?}: smuggled commands kept as content"
                );
                assert!(!out.contains("\n.\r\n"), "{mode:?} {fake:?}: {out:?}");
            }
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

    /// In normalize mode BDAT content is stored with CRLF line endings too, so that a
    /// message relayed on by DATA reads the same at every hop; a bare CR is refused.
    #[test]
    fn bdat_chunks_normalized() {
        use BodyOutcome::*;
        let limits = lim_in(32, 10, Normalize);
        // (chunks, outcome, content)
        let cases: &[(&[&str], BodyOutcome, &str)] = &[
            (&["abc\n"], Complete, "abc\r\n"),
            (&["a\nb\r", "\nc\n"], Complete, "a\r\nb\r\nc\r\n"),
            (
                &["hello\n.\n", "MAIL\n"],
                Complete,
                "hello\r\n.\r\nMAIL\r\n",
            ),
            (&["abc\r"], BareLineEnding, "abc\r"),
            (&["a\rb\n"], BareLineEnding, "a\rb\r\n"),
            (&["1234567890\n"], Complete, "1234567890\r\n"),
            (&["12345678901\n"], LineTooLong, "12345678901\r\n"),
            (
                &["0123456789\n0123456789\n", "0123456789\n"],
                TooBig,
                "0123456789\r\n0123456789\r\n01234567",
            ),
        ];
        for (chunks, want, content) in cases {
            let whole = chunks.concat();
            for fragments in fragmentations(whole.as_bytes()) {
                let (mut rx, mut out) = (BdatReceiver::new(limits), Vec::new());
                fragments.iter().for_each(|f| rx.feed(f, &mut out));
                assert_eq!(rx.outcome(), *want, "{fragments:?}");
                assert_eq!(String::from_utf8_lossy(&out), *content, "{fragments:?}");
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
