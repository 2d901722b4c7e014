//! Fuzzes DATA and BDAT framing. The input, mapped onto the bytes that matter for
//! framing (CR, LF, dot, a letter, a space), is fed whole and in two fragments.
//!
//! Invariants checked, from the doc comments in `src/smtp/data.rs`:
//! - whole and fragmented feeding agree on content, bytes consumed and outcome;
//! - `out` never exceeds max_size, and holds the first max_size octets of the content;
//! - DATA consumes everything until `<CRLF>.<CRLF>` and nothing after it, and its
//!   content and outcome match a reference model written from RFC 5321 4.5.2 and the
//!   module's rules (only CRLF ends a line, any bare CR/LF refuses the message, the
//!   stuffing dot counts toward the line length, TooBig > BareLineEnding > LineTooLong);
//! - BDAT takes content as is, counts every octet, and matches the same model;
//!   `outcome()` after the first fragment is the final one unless a CR ended that
//!   fragment and the next starts with LF, or a later fragment breaks a graver limit;
//! - in `normalize` mode (the model above is `reject` mode's), DATA ends at exactly the
//!   same octet, whole and fragmented feeding agree, and complete content has no bare
//!   LF or CR: only `<CRLF>.<CRLF>` ends the data, whatever the line endings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::data::{BareLineEndings, BdatReceiver, BodyLimits, BodyOutcome, DataReceiver};

const ALPHABET: [u8; 8] = [b'\r', b'\n', b'.', b'a', b'\r', b'\n', b'.', b' '];

/// Whether `raw` has a CR not followed by LF or an LF not preceded by CR.
fn has_bare(raw: &[u8]) -> bool {
    raw.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        _ => false,
    })
}

/// The verdict on raw content octets (for DATA, as on the wire: before unstuffing)
/// whose content, after unstuffing, is `size` octets.
fn model_outcome(raw: &[u8], size: usize, limits: BodyLimits) -> BodyOutcome {
    let bare = has_bare(raw);
    // Lines end at any LF; a CR right before the LF is not an octet of the line.
    let too_long = raw.split(|&b| b == b'\n').any(|line| {
        let len = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
        len > limits.max_line
    });
    if size as u64 > limits.max_size {
        BodyOutcome::TooBig
    } else if bare {
        BodyOutcome::BareLineEnding
    } else if too_long {
        BodyOutcome::LineTooLong
    } else {
        BodyOutcome::Complete
    }
}

/// The DATA stream split at each CRLF: lines, and whether a CRLF follows each.
fn crlf_lines(input: &[u8]) -> Vec<(&[u8], bool)> {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push((&rest[..i], true));
        rest = &rest[i + 2..];
    }
    lines.push((rest, false));
    lines
}

/// The model of DATA: (consumed, content of the complete lines, outcome if ended).
fn model_data(input: &[u8], limits: BodyLimits) -> (usize, Vec<u8>, Option<BodyOutcome>) {
    let mut consumed = 0;
    let mut content = Vec::new();
    for (line, crlf) in crlf_lines(input) {
        if !crlf {
            // The unfinished last line: consumed, but its content is not settled yet.
            return (input.len(), content, None);
        }
        if line == b"." {
            let outcome = model_outcome(&input[..consumed], content.len(), limits);
            return (consumed + 3, content, Some(outcome));
        }
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        content.extend_from_slice(b"\r\n");
        consumed += line.len() + 2;
    }
    unreachable!("crlf_lines ends with an unfinished line")
}

fn capped(content: &[u8], limits: BodyLimits) -> &[u8] {
    &content[..content.len().min(limits.max_size as usize)]
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let input: Vec<u8> = rest
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()])
        .collect();
    let limits = BodyLimits {
        max_size: 64,
        max_line: 16,
        bare_line_endings: BareLineEndings::Reject,
    };
    let cut = (split as usize).min(input.len());

    // DATA, whole.
    let mut whole = Vec::new();
    let mut receiver = DataReceiver::new(limits);
    let (n_whole, end_whole) = receiver.feed(&input, &mut whole);
    assert!(n_whole <= input.len());
    assert!(
        end_whole.is_some() || n_whole == input.len(),
        "stopped early"
    );
    assert!(whole.len() as u64 <= limits.max_size);
    assert_eq!(whole.len() as u64, receiver.received().min(limits.max_size));
    // Once done, further calls consume nothing and repeat the outcome.
    if end_whole.is_some() {
        let mut more = Vec::new();
        assert_eq!(receiver.feed(&input[n_whole..], &mut more), (0, end_whole));
        assert!(more.is_empty());
    }

    let (n_model, content, end_model) = model_data(&input, limits);
    assert_eq!(n_whole, n_model, "DATA ends elsewhere than the model");
    if has_bare(&input[..n_whole]) {
        // Refused in this mode whatever it holds. Where lines start after a bare LF is
        // the receiver's business (a dot there is unstuffed, as normalize mode needs),
        // so the size, and with it TooBig before BareLineEnding, may differ.
        assert_eq!(
            end_whole.is_some(),
            end_model.is_some(),
            "DATA differs from the model"
        );
        assert!(
            end_whole
                .is_none_or(|o| matches!(o, BodyOutcome::TooBig | BodyOutcome::BareLineEnding)),
            "DATA with a bare line ending not refused: {end_whole:?}"
        );
    } else {
        assert_eq!(end_whole, end_model, "DATA differs from the model");
        if end_whole.is_some() {
            assert_eq!(
                whole,
                capped(&content, limits),
                "DATA content differs from the model"
            );
            assert_eq!(receiver.received(), content.len() as u64);
        } else {
            assert!(
                whole.starts_with(capped(&content, limits)),
                "DATA content differs from the model"
            );
        }
    }

    // DATA, in two fragments.
    let mut parts = Vec::new();
    let mut receiver = DataReceiver::new(limits);
    let (n1, end1) = receiver.feed(&input[..cut], &mut parts);
    assert!(end1.is_some() || n1 == cut, "stopped early");
    let (n_parts, end_parts) = if end1.is_some() {
        (n1, end1)
    } else {
        let (n2, end2) = receiver.feed(&input[cut..], &mut parts);
        (n1 + n2, end2)
    };
    assert_eq!(
        (n_whole, end_whole),
        (n_parts, end_parts),
        "fragmented DATA differs"
    );
    assert_eq!(whole, parts, "fragmented DATA content differs");

    // DATA in normalize mode: the same end of data, and clean CRLF content.
    let normalize = BodyLimits {
        bare_line_endings: BareLineEndings::Normalize,
        ..limits
    };
    let mut norm_whole = Vec::new();
    let (n_norm, end_norm) = DataReceiver::new(normalize).feed(&input, &mut norm_whole);
    assert_eq!(n_norm, n_whole, "normalize mode ends DATA elsewhere");
    assert_eq!(
        end_norm.is_some(),
        end_whole.is_some(),
        "normalize mode ends DATA elsewhere"
    );
    if end_norm == Some(BodyOutcome::Complete) {
        assert!(
            !has_bare(&norm_whole),
            "normalized content with a bare line ending"
        );
    }
    let mut norm_parts = Vec::new();
    let mut receiver = DataReceiver::new(normalize);
    let (n1, end1) = receiver.feed(&input[..cut], &mut norm_parts);
    let (n_np, end_np) = if end1.is_some() {
        (n1, end1)
    } else {
        let (n2, end2) = receiver.feed(&input[cut..], &mut norm_parts);
        (n1 + n2, end2)
    };
    assert_eq!(
        (n_norm, end_norm),
        (n_np, end_np),
        "fragmented normalize DATA differs"
    );
    assert_eq!(
        norm_whole, norm_parts,
        "fragmented normalize DATA content differs"
    );

    // BDAT: the content is taken as is; every octet counts.
    let bdat_model = model_outcome(&input, input.len(), limits);
    let mut bdat_whole = BdatReceiver::new(limits);
    let mut out_whole = Vec::new();
    bdat_whole.feed(&input, &mut out_whole);
    assert_eq!(
        bdat_whole.outcome(),
        bdat_model,
        "BDAT differs from the model"
    );
    assert_eq!(out_whole, capped(&input, limits));
    assert_eq!(bdat_whole.received(), input.len() as u64);

    let mut bdat = BdatReceiver::new(limits);
    let mut out = Vec::new();
    bdat.feed(&input[..cut], &mut out);
    let early = bdat.outcome();
    assert_eq!(
        early,
        model_outcome(&input[..cut], cut, limits),
        "early BDAT outcome"
    );
    bdat.feed(&input[cut..], &mut out);
    assert_eq!(bdat.outcome(), bdat_model, "fragmented BDAT differs");
    assert_eq!(out, out_whole, "fragmented BDAT content differs");

    // A refusal seen early stands unless the CR it judged bare met its LF.
    let rank = |o: BodyOutcome| match o {
        BodyOutcome::Complete => 0,
        BodyOutcome::LineTooLong => 1,
        BodyOutcome::BareLineEnding => 2,
        BodyOutcome::TooBig => 3,
    };
    let crlf_across = input[..cut].ends_with(b"\r") && input[cut..].starts_with(b"\n");
    if !crlf_across {
        assert!(
            rank(bdat_model) >= rank(early),
            "{early:?} became {bdat_model:?}"
        );
    }
});
