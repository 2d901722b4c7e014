//! Fuzzes command line framing and parsing. The first byte picks a verb so that the
//! fuzzer spends its time past the verb, in paths and parameters.
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

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let mut line = PREFIXES[*first as usize % PREFIXES.len()].to_vec();
    line.extend_from_slice(rest);
    if let Err(e) = parse_command(&line) {
        let reply = e.reply();
        assert!((500..600).contains(&reply.code));
    }
    // The same bytes as a stream, split at the first byte's value.
    let mut buffer = LineBuffer::new(256);
    let split = (*first as usize).min(line.len());
    buffer.push(&line[..split]);
    buffer.push(&line[split..]);
    buffer.push(b"\r\n");
    while let Some(item) = buffer.next_line() {
        if let Line::Complete(l) = item {
            assert!(l.len() <= 256);
            let _ = parse_command(&l);
        }
    }
});
