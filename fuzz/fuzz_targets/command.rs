//! Fuzzes command line framing and parsing. The first byte picks a verb so that the
//! fuzzer spends its time past the verb, in paths and parameters, and also where the
//! line is cut in two when it is fed to a `LineBuffer` as a stream.
//!
//! Invariants checked:
//! - `parse_command` never panics, and every refusal is a 5xx reply with a 5.x.x code;
//! - the verb is case-insensitive and trailing spaces are ignored (its doc comment);
//! - `LineBuffer` hands out exactly the lines of a simple model (split at LF, strip one
//!   CR, `TooLong` when the line with its LF exceeds the limit), whatever the cut,
//!   holds less than the limit after the lines are drained, and keeps nothing once the
//!   input ended in CRLF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::command::parse_command;
use sluice::smtp::line::{Line, LineBuffer};

const PREFIXES: [&[u8]; 12] = [
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"EHLO ",
    b"HELO ",
    b"BDAT ",
    b"AUTH ",
    b"VRFY ",
    b"HELP ",
    b"NOOP ",
    b"MAIL FROM:<a@b.example> ",
    b"RCPT TO:<a@b.example> ",
    b"",
];

/// The line limit of the stream check, CRLF included (RFC 5321 says 512; smaller
/// reaches `TooLong` with shorter inputs).
const MAX_LINE: usize = 256;

fn check_parse(line: &[u8]) {
    let parsed = parse_command(line);
    if let Err(e) = &parsed {
        let reply = e.reply();
        assert!((500..600).contains(&reply.code), "{reply:?}");
        assert!(
            reply.status.is_some_and(|s| s.starts_with("5.")),
            "{reply:?}"
        );
    }

    // The verb is case-insensitive: flipping its case changes nothing.
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut flipped = line.to_vec();
    for b in &mut flipped[..verb_end] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    assert_eq!(
        parse_command(&flipped),
        parsed,
        "verb case changed the result"
    );

    // Trailing spaces are ignored.
    let mut spaced = line.to_vec();
    spaced.extend_from_slice(b"  ");
    assert_eq!(
        parse_command(&spaced),
        parsed,
        "trailing spaces changed the result"
    );
}

/// What `LineBuffer::new(max)` must hand out for `stream`: one item per LF.
fn model_lines(stream: &[u8], max: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = stream;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(lf);
        lines.push(if line.len() < max {
            Line::Complete(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        } else {
            Line::TooLong
        });
        rest = &after[1..];
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let mut line = PREFIXES[*first as usize % PREFIXES.len()].to_vec();
    line.extend_from_slice(rest);
    check_parse(&line);

    // The same bytes as a stream, cut at the first byte's value, the lines drained
    // after each push the way the ingress does.
    let mut stream = line.clone();
    stream.extend_from_slice(b"\r\n");
    let split = (*first as usize).min(stream.len());
    let mut buffer = LineBuffer::new(MAX_LINE);
    let mut lines = Vec::new();
    for part in [&stream[..split], &stream[split..]] {
        buffer.push(part);
        while let Some(item) = buffer.next_line() {
            if let Line::Complete(l) = &item {
                assert!(l.len() < MAX_LINE);
                check_parse(l);
            }
            lines.push(item);
        }
        assert!(
            buffer.buffered() < MAX_LINE,
            "held {} bytes",
            buffer.buffered()
        );
    }
    assert_eq!(lines, model_lines(&stream, MAX_LINE));
    assert_eq!(
        buffer.take_remaining(),
        b"",
        "bytes left after the final CRLF"
    );
});
