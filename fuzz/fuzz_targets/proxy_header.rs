//! Fuzzes the PROXY protocol header parser (`sluice::ingress::proxy_header`), which reads
//! the first bytes of every connection on a `proxyProtocol` listener. The input is
//! mapped onto tokens of v1 and v2 headers (keywords, addresses, ports, the v2 signature
//! and its command, family and length bytes), with one slot for a raw byte, so that the
//! fuzzer gets past the signature.
//!
//! Invariants checked:
//! - nothing panics; the stateless `parse` and the `HeaderParser` fed the whole stream
//!   agree, and so do feeding it cut in two at any point and byte by byte;
//! - `consumed` is within the input, at most `MAX_HEADER`, and the parser never holds
//!   more than that: `NeedMore` never comes once `MAX_HEADER` bytes are in, and with it
//!   every byte fed was taken;
//! - a header's end does not depend on what follows: the header's own bytes alone parse
//!   to the same header;
//! - a parsed header written out again (`encode`, same version) parses back to itself;
//!   v1 TCP endpoints are of one family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::ingress::proxy_header::{
    Endpoints, HeaderParser, MAX_HEADER, Parse, V2_SIGNATURE, Version, parse,
};

const TOKENS: [&[u8]; 34] = [
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b" ",
    b"\r\n",
    b"\r",
    b"\n",
    b"192.0.2.1",
    b"10.9.8.7",
    b"2001:db8::1",
    b"::ffff:192.0.2.1",
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    b"0",
    b"25",
    b"65535",
    b"65536",
    b"01",
    b".",
    b":",
    &V2_SIGNATURE,
    &V2_SIGNATURE,
    b"\x20",
    b"\x21",
    b"\x00",
    b"\x11",
    b"\x12",
    b"\x00\x0c",
    b"\x00\x24",
    b"\x04\x00",
    b"\x04\x01",
    b"\xc0\x00\x02\x01",
    b"EHLO client.test\r\n",
    b"\x16\x03\x01",
];

/// Feeds `parts` in turn until the parser decides; the answer with `consumed` counted
/// from the start of the stream, or `NeedMore` when the parts ran out.
fn feed(parts: &[&[u8]]) -> Parse {
    let mut parser = HeaderParser::new();
    let mut offset = 0;
    for part in parts {
        let room = parser.room();
        match parser.feed(part) {
            Parse::NeedMore => {
                assert!(part.len() <= room, "NeedMore past the parser's room");
                offset += part.len();
                assert!(offset < MAX_HEADER, "NeedMore at {offset} bytes");
            }
            Parse::Done { header, consumed } => {
                assert!(consumed <= part.len() && consumed <= room);
                return Parse::Done {
                    header,
                    consumed: offset + consumed,
                };
            }
            invalid => return invalid,
        }
    }
    Parse::NeedMore
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

    let whole = feed(&[&stream]);
    assert_eq!(parse(&stream), whole, "parse and feed disagree");
    let cut = (cut as usize * stream.len() / 255).min(stream.len());
    let (a, b) = stream.split_at(cut);
    assert_eq!(feed(&[a, b]), whole, "cut at {cut}");
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(feed(&bytewise), whole, "byte by byte");

    if let Parse::Done { header, consumed } = whole {
        assert!(consumed > 0 && consumed <= stream.len().min(MAX_HEADER));
        assert_eq!(
            parse(&stream[..consumed]),
            whole,
            "the header alone parses differently"
        );
        if let (
            Version::V1,
            Endpoints::Tcp {
                source,
                destination,
            },
        ) = (header.version, header.endpoints)
        {
            assert_eq!(source.is_ipv4(), destination.is_ipv4(), "{header:?}");
        }
        let again = header.encode();
        assert_eq!(
            parse(&again),
            Parse::Done {
                header,
                consumed: again.len()
            },
            "re-encoded as {:?}",
            String::from_utf8_lossy(&again)
        );
    }
});
