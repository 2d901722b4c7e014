//! Fuzzes the attachment analyser (`sluice::filter::attachments`): `analyse`,
//! `evaluate`, `strip` and `strip_all` on hostile messages.
//!
//! The first input byte picks what the rest is, so that the fuzzer gets past the MIME
//! header and into the zip reader:
//! - 0: the whole message, raw;
//! - 1: the body of a multipart/mixed message (parts, nested boundaries, headers);
//! - 2: a zip archive, attached base64 (the central directory, entries, nesting);
//! - 3: a message/rfc822 part's content, attached base64.
//!
//! Small limits keep each run bounded in time and memory whatever the input.
//!
//! Invariants checked:
//! - no panic escapes `analyse`, and nothing panics outside mail-parser (whose
//!   `debug_assert!`s on malformed MIME fire in this build, with `-a`; `analyse`
//!   catches them and reports the message unparseable);
//! - every range is inside the message and not inverted; a part in an
//!   encoded message has its container's range;
//! - strip and strip_all keep every byte outside the cut ranges: the output is the
//!   input's bytes before the first cut and after the last, and its length is the
//!   input's minus the cuts plus the notices.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use sluice::filter::attachments::strip::notice_part;
use sluice::filter::attachments::{
    ArchiveLimits, Limits, PartRange, Rules, analyse, evaluate, strip, strip_all,
};
use std::sync::Once;

const HEAD: &str = "From: a@b.example\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n";

fn message(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let attached = |headers: &str| {
        let mut m =
            format!("{HEAD}{headers}Content-Transfer-Encoding: base64\r\n\r\n").into_bytes();
        m.extend_from_slice(STANDARD.encode(rest).as_bytes());
        m.extend_from_slice(b"\r\n--b--\r\n");
        m
    };
    match mode % 4 {
        0 => rest.to_vec(),
        1 => [HEAD.as_bytes(), rest].concat(),
        2 => attached("Content-Type: application/zip; name=\"a.zip\"\r\n"),
        _ => attached("Content-Type: message/rfc822\r\n"),
    }
}

/// The cuts `strip` makes: sorted by start, each after the previous one's end.
fn kept(mut ranges: Vec<PartRange>, len: usize) -> Vec<PartRange> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<PartRange> = Vec::new();
    for r in ranges {
        let after = out.last().map_or(0, |l| l.end);
        if r.start >= after && r.end <= len && r.start <= r.end {
            out.push(r);
        }
    }
    out
}

fn check_splice(input: &[u8], output: &[u8], ranges: Vec<PartRange>, notice_len: usize) {
    let cuts = kept(ranges, input.len());
    let (Some(first), Some(last)) = (cuts.first(), cuts.last()) else {
        assert_eq!(output, input, "nothing to cut, yet the message changed");
        return;
    };
    assert_eq!(
        &output[..first.start],
        &input[..first.start],
        "bytes before a cut changed"
    );
    assert!(
        output.ends_with(&input[last.end..]),
        "bytes after a cut changed"
    );
    let removed: usize = cuts.iter().map(|r| r.end - r.start).sum();
    assert_eq!(
        output.len(),
        input.len() - removed + cuts.len() * notice_len
    );
}

/// libfuzzer-sys's panic hook aborts at once, before `analyse` could catch anything;
/// let panics in mail-parser unwind to `analyse` and abort on any other.
fn panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("/mail-parser-"));
            if !in_parser {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    panic_hook();
    let msg = message(data);
    let limits = Limits {
        max_depth: 8,
        max_parts: 64,
        archive: ArchiveLimits {
            max_entries: 64,
            max_total_size: 1 << 20,
            max_decompressed: 1 << 18,
            max_nested_size: 1 << 16,
            max_nesting: 2,
        },
    };
    let analysis = analyse(&msg, &limits);
    for a in &analysis.attachments {
        if let Some(r) = a.range {
            assert!(
                r.start <= r.end && r.end <= msg.len(),
                "range {r:?} outside the message"
            );
        }
    }
    let findings = evaluate(&analysis, &Rules::default());
    // A fixed notice, so that every cut adds the same number of bytes.
    let text = "removed";
    let notice_len = notice_part(text).len();
    let stripped = strip(&msg, &findings, |_| text.to_string());
    check_splice(
        &msg,
        &stripped,
        findings.iter().filter_map(|f| f.range).collect(),
        notice_len,
    );
    let all = strip_all(&msg, &analysis, |_| text.to_string());
    check_splice(
        &msg,
        &all,
        analysis
            .attachments
            .iter()
            .filter_map(|a| a.range)
            .collect(),
        notice_len,
    );
});
