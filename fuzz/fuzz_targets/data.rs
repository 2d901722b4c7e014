//! Fuzzes DATA and BDAT framing: the input, mapped onto the bytes that matter for
//! framing (CR, LF, dot, letters), is fed whole and in two fragments; both must agree,
//! consume no more than the input, and never produce more than the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::data::{BdatReceiver, BodyLimits, DataReceiver};

const ALPHABET: [u8; 8] = [b'\r', b'\n', b'.', b'a', b'\r', b'\n', b'.', b' '];

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first() else {
        return;
    };
    let input: Vec<u8> = rest.iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()]).collect();
    let limits = BodyLimits { max_size: 64, max_line: 16 };

    let mut whole = Vec::new();
    let (n_whole, end_whole) = DataReceiver::new(limits).feed(&input, &mut whole);
    assert!(n_whole <= input.len());
    assert!(whole.len() as u64 <= limits.max_size);

    let cut = (*split as usize).min(input.len());
    let mut parts = Vec::new();
    let mut receiver = DataReceiver::new(limits);
    let (n1, end1) = receiver.feed(&input[..cut], &mut parts);
    let (n_parts, end_parts) = if end1.is_some() {
        (n1, end1)
    } else {
        let (n2, end2) = receiver.feed(&input[n1..], &mut parts);
        (n1 + n2, end2)
    };
    assert_eq!((n_whole, end_whole), (n_parts, end_parts));
    assert_eq!(whole, parts);

    let mut bdat = BdatReceiver::new(limits);
    let mut out = Vec::new();
    bdat.feed(&input[..cut], &mut out);
    bdat.feed(&input[cut..], &mut out);
    assert!(out.len() as u64 <= limits.max_size);
    let _ = bdat.outcome();
});
