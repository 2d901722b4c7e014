//! Fuzzes what the outbound client reads from a remote server: a stream of reply lines
//! framed by a `LineBuffer` of `MAX_REPLY_LINE` and assembled by a `ReplyParser`, as
//! `delivery::client::wire` does, then read as an EHLO reply (`Extensions::parse`) and
//! turned into a recipient's outcome (`reply_outcome`). The input is mapped onto tokens
//! of replies (codes, separators, line ends, enhanced status codes, EHLO keywords) with
//! one slot for a raw byte, so that the fuzzer gets past the reply code.
//!
//! Invariants checked:
//! - nothing panics, and the stream gives the same replies and the same first error
//!   whole and cut in two at any point (the wire reads in chunks of any size);
//! - every reply has a code of the RFC 5321 4.2 grammar (2-5, 0-5, 0-9), at most
//!   `MAX_REPLY_LINES` lines, and text free of control characters;
//! - `one_line()` is one line starting with the code; an enhanced status code, when
//!   found, has the reply's class; the outcome follows the code's class;
//! - writing a parsed reply out and parsing it again gives the same reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::delivery::Outcome;
use sluice::delivery::client::{Extensions, reply_outcome};
use sluice::smtp::line::{Line, LineBuffer};
use sluice::smtp::reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, Reply, ReplyError, ReplyParser};

const TOKENS: [&[u8]; 30] = [
    b"250",
    b"220",
    b"334",
    b"354",
    b"421",
    b"451",
    b"550",
    b"554",
    b"-",
    b" ",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"2.0.0 ",
    b"4.7.1 ",
    b"5.1.1 ",
    b"5.1",
    b"SIZE ",
    b"10485760",
    b"AUTH ",
    b"AUTH=",
    b"PLAIN LOGIN",
    b"STARTTLS",
    b"8BITMIME",
    b"SMTPUTF8",
    b"\t",
    b"\xc3\xa9",
    b"\xff",
    b"x",
];

/// What the client makes of one stream: the replies, then the error that broke the
/// wire, if any (a line too long, or a malformed reply).
#[derive(Debug, PartialEq)]
enum Read {
    Reply(Reply),
    LineTooLong,
    Malformed(ReplyError),
}

/// Feeds `parts` in turn, taking lines after each, until the first error.
fn read(parts: &[&[u8]]) -> Vec<Read> {
    let mut lines = LineBuffer::new(MAX_REPLY_LINE);
    let mut parser = ReplyParser::new();
    let mut out = Vec::new();
    for part in parts {
        lines.push(part);
        while let Some(line) = lines.next_line() {
            let Line::Complete(line) = line else {
                out.push(Read::LineTooLong);
                return out;
            };
            match parser.push_line(&line) {
                Ok(Some(reply)) => out.push(Read::Reply(reply)),
                Ok(None) => {}
                Err(e) => {
                    out.push(Read::Malformed(e));
                    return out;
                }
            }
        }
    }
    out
}

fn check(reply: &Reply) {
    let digits = reply.code.to_string().into_bytes();
    assert!(
        matches!(digits[..], [b'2'..=b'5', b'0'..=b'5', b'0'..=b'9']),
        "code {}",
        reply.code
    );
    assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
    for line in &reply.lines {
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
    let one = reply.one_line();
    assert!(one.starts_with(&reply.code.to_string()), "{one:?}");
    assert!(!one.contains(['\r', '\n']), "{one:?}");
    let class = reply.code / 100;
    if let Some(status) = reply.enhanced_status() {
        assert!(
            status.starts_with(&class.to_string()),
            "{status} in {one:?}"
        );
    }
    let _ = Extensions::parse(reply);
    let outcome = reply_outcome(reply, None);
    match (class, &outcome) {
        (2, Outcome::Delivered { .. }) | (3 | 4, Outcome::Deferred { .. }) => {}
        (5, Outcome::Failed { status, .. }) => assert!(status.starts_with('5'), "{status}"),
        _ => panic!("{one:?} became {outcome:?}"),
    }

    // Written out and read back, the reply is the same, when its lines still fit.
    let bytes = reply.to_bytes();
    if bytes
        .split(|&b| b == b'\n')
        .all(|l| l.len() < MAX_REPLY_LINE)
    {
        match read(&[&bytes]).as_slice() {
            [Read::Reply(again)] => assert_eq!(again, reply),
            other => panic!("{reply:?} read back as {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut stream = Vec::with_capacity(rest.len() * 4);
    let mut bytes = rest.iter();
    while let Some(&b) = bytes.next() {
        match TOKENS.get(b as usize % (TOKENS.len() + 1)) {
            Some(token) => stream.extend_from_slice(token),
            // The last slot: the next input byte as it is.
            None => stream.extend(bytes.next()),
        }
    }
    let whole = read(&[&stream]);
    for item in &whole {
        if let Read::Reply(reply) = item {
            check(reply);
        }
    }
    let cut = (cut as usize * stream.len() / 255).min(stream.len());
    let (a, b) = stream.split_at(cut);
    assert_eq!(read(&[a, b]), whole, "cut at {cut}");
});
