//! Command line framing: splits the bytes received outside DATA/BDAT into command lines
//! (RFC 5321 2.3.8, 4.5.3.1.4), bounding what an overlong line can make us hold.

use super::reply::Reply;

/// One framed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its CRLF (or bare LF).
    Complete(Vec<u8>),
    /// The line exceeded the limit; its bytes were discarded up to and including its LF.
    TooLong,
}

/// The reply to a [`Line::TooLong`] (RFC 5321 4.5.3.1.10 suggests "500 Line too long").
pub fn line_too_long_reply() -> Reply {
    Reply::new(500, "5.5.2", "Error: line too long")
}

/// Accumulates received bytes and hands out command lines.
///
/// Splitting happens lazily in [`LineBuffer::next_line`], never in `push`, so that bytes
/// after a DATA, BDAT or STARTTLS command stay exactly as received for
/// [`LineBuffer::take_remaining`]. The buffer therefore holds at most `max_line` bytes of
/// an unfinished line plus whatever the latest `push` added that `next_line` has not yet
/// consumed; the rest of an overlong line is dropped as it arrives.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes before this were handed out; they are dropped on the next push, so that
    /// taking many pipelined lines from one read does not shift the buffer each time.
    start: usize,
    max_line: usize,
    /// True after an overlong line was reported and before its LF was seen.
    discarding: bool,
}

impl LineBuffer {
    /// `max_line` counts octets including the CRLF (RFC 5321 4.5.3.1.4 says 512).
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            max_line,
            discarding: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start.min(self.buf.len()));
        self.start = 0;
        if !self.discarding {
            self.buf.extend_from_slice(bytes);
            return;
        }
        // The overlong line's bytes never need to be kept, so drop them before buffering.
        if let Some(lf) = bytes.iter().position(|&b| b == b'\n') {
            self.discarding = false;
            self.buf
                .extend_from_slice(bytes.get(lf + 1..).unwrap_or_default());
        }
    }

    /// The next complete line, `Line::TooLong` once per overlong line, or `None` when
    /// the buffered bytes do not yet hold a whole line.
    pub fn next_line(&mut self) -> Option<Line> {
        if self.discarding && !self.discard_through_lf() {
            return None;
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match self.find_lf(self.max_line) {
            Some(lf) => {
                let mut line = pending.get(..lf).unwrap_or_default();
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                let line = line.to_vec();
                self.start += lf + 1;
                Some(Line::Complete(line))
            }
            // No LF within max_line octets: the line is already at least one too long.
            None if pending.len() >= self.max_line => {
                self.discarding = true;
                self.discard_through_lf();
                Some(Line::TooLong)
            }
            None => None,
        }
    }

    /// Drops the rest of an overlong line; false if its LF has not arrived yet.
    fn discard_through_lf(&mut self) -> bool {
        match self.find_lf(usize::MAX) {
            Some(lf) => {
                self.start += lf + 1;
                self.discarding = false;
                true
            }
            None => {
                self.clear();
                false
            }
        }
    }

    /// The position of the first LF among the first `within` pending bytes.
    fn find_lf(&self, within: usize) -> Option<usize> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        pending.iter().take(within).position(|&b| b == b'\n')
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Hands over the bytes not yet returned as lines (DATA/BDAT content, or the bytes
    /// that followed STARTTLS, which must not be executed after the handshake).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        if self.discarding {
            self.discarding = false;
            self.clear();
        }
        let mut rest = std::mem::take(&mut self.buf);
        rest.drain(..self.start.min(rest.len()));
        self.start = 0;
        rest
    }

    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Changes the limit, e.g. for the longer lines of an AUTH exchange (RFC 4954 4).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ways to cut `input` into fragments: whole, every fixed step (byte by byte
    /// included) and, for short inputs, every single split point.
    pub(crate) fn fragmentations(input: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut all: Vec<Vec<&[u8]>> = vec![vec![input]];
        for step in 1..input.len() {
            all.push(input.chunks(step).collect());
        }
        if input.len() <= 256 {
            for k in 1..input.len() {
                let (a, b) = input.split_at(k);
                all.push(vec![a, b]);
            }
        }
        all
    }

    /// Feeds `fragments`, draining lines after each push the way the ingress does, and
    /// checks the bound on what is held.
    fn run(max: usize, fragments: &[&[u8]]) -> (Vec<Line>, Vec<u8>) {
        let mut lb = LineBuffer::new(max);
        let mut lines = Vec::new();
        for chunk in fragments {
            lb.push(chunk);
            while let Some(line) = lb.next_line() {
                lines.push(line);
            }
            assert!(lb.buffered() < max.max(1), "held {} bytes", lb.buffered());
        }
        (lines, lb.take_remaining())
    }

    fn c(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn framing_table_every_split_and_ending() {
        // (max_line, input with "\n" standing for either line ending, lines, remaining)
        let cases: Vec<(usize, &str, Vec<Line>, &str)> = vec![
            (16, "NOOP\n", vec![c("NOOP")], ""),
            (16, "NOOP\nQUIT\nDA", vec![c("NOOP"), c("QUIT")], "DA"),
            (16, "\n\n", vec![c(""), c("")], ""),
            (16, "", vec![], ""),
            (
                8,
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nNOOP\n",
                vec![Line::TooLong, c("NOOP")],
                "",
            ),
            (8, "aaaaaaaaaaaaaaaaaaaaaaaaa", vec![Line::TooLong], ""),
            (
                8,
                "a\nbbbbbbbbbbbbb\nc\ndddddddddd\n",
                vec![c("a"), Line::TooLong, c("c"), Line::TooLong],
                "",
            ),
        ];
        for (max, template, want, rest) in &cases {
            for ending in ["\r\n", "\n"] {
                let input = template.replace('\n', ending);
                check_every_split(*max, input.as_bytes(), want, rest.as_bytes());
            }
        }
    }

    #[test]
    fn limit_counts_the_line_ending() {
        let a14 = "aaaaaaaaaaaaaa";
        let cases: Vec<(String, Vec<Line>)> = vec![
            (format!("{a14}\r\nX\r\n"), vec![c(a14), c("X")]),
            (format!("{a14}a\r\nX\r\n"), vec![Line::TooLong, c("X")]),
            (format!("{a14}a\nX\n"), vec![c(&format!("{a14}a")), c("X")]),
            (format!("{a14}aa\nX\n"), vec![Line::TooLong, c("X")]),
        ];
        for (input, want) in &cases {
            check_every_split(16, input.as_bytes(), want, b"");
        }
    }

    fn check_every_split(max: usize, input: &[u8], want: &[Line], rest: &[u8]) {
        for fragments in fragmentations(input) {
            let (lines, remaining) = run(max, &fragments);
            assert_eq!(lines, want, "{fragments:?}");
            assert_eq!(remaining, rest, "{fragments:?}");
        }
    }

    #[test]
    fn only_the_final_cr_is_stripped() {
        let (lines, _) = run(16, &[b"a\rb\r\r\n"]);
        assert_eq!(lines, vec![c("a\rb\r")]);
    }

    #[test]
    fn remaining_bytes_after_a_command_are_untouched() {
        let mut lb = LineBuffer::new(16);
        lb.push(b"BDAT 30\r\n0123456789012345678901234567\r\n");
        assert_eq!(lb.next_line(), Some(c("BDAT 30")));
        assert_eq!(lb.take_remaining(), b"0123456789012345678901234567\r\n");
        assert_eq!(lb.buffered(), 0);
    }

    #[test]
    fn endless_line_keeps_memory_bounded() {
        let mut lb = LineBuffer::new(512);
        let junk = vec![b'x'; 4096];
        let mut too_long = 0;
        for _ in 0..1000 {
            lb.push(&junk);
            while let Some(line) = lb.next_line() {
                assert_eq!(line, Line::TooLong);
                too_long += 1;
            }
            assert_eq!(lb.buffered(), 0);
        }
        assert_eq!(too_long, 1);
        lb.push(b"tail\r\nQUIT\r\n");
        assert_eq!(lb.next_line(), Some(c("QUIT")));
    }

    #[test]
    fn raising_the_limit_admits_longer_lines() {
        let mut lb = LineBuffer::new(8);
        lb.set_max_line(64);
        lb.push(b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n");
        assert_eq!(lb.next_line(), Some(c("AUTH PLAIN AGJvYgBzZWNyZXQ=")));
    }
}
