//! Table tests of the PROXY header parser: every input is fed whole, byte by byte, in
//! every fixed step and at every split point, and all must give the same answer and
//! end the header at the same byte.

use super::*;
use crate::smtp::line::tests::fragmentations;

/// What feeding a whole stream gives: the header and the stream offset where it ends,
/// the refusal, or (input exhausted) how many bytes were taken.
#[derive(Debug, PartialEq)]
enum Got {
    Done(ProxyHeader, usize),
    Invalid(Invalid),
    NeedMore(usize),
}

fn feed_all(fragments: &[&[u8]]) -> Got {
    let mut parser = HeaderParser::new();
    let mut offset = 0;
    for fragment in fragments {
        let room = parser.room();
        match parser.feed(fragment) {
            Parse::NeedMore => {
                assert!(fragment.len() <= room, "NeedMore after more than its room");
                offset += fragment.len();
            }
            Parse::Done { header, consumed } => {
                assert!(consumed <= fragment.len() && consumed > 0);
                return Got::Done(header, offset + consumed);
            }
            Parse::Invalid(why) => return Got::Invalid(why),
        }
        assert!(parser.buf.len() <= MAX_HEADER);
    }
    Got::NeedMore(offset)
}

fn run(input: &[u8]) -> Got {
    let mut results = fragmentations(input)
        .into_iter()
        .map(|fragments| feed_all(&fragments));
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

fn tcp(version: Version, source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader {
        version,
        endpoints: Endpoints::Tcp {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        },
    }
}

fn local(version: Version) -> ProxyHeader {
    ProxyHeader {
        version,
        endpoints: Endpoints::Local,
    }
}

/// A v2 header from its parts; `len` is the length field as sent.
fn v2(ver_cmd: u8, family: u8, len: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const IPV4_PAYLOAD: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25];

#[test]
fn v1_headers_and_what_follows_them() {
    use Version::V1;
    let ehlo = "EHLO client.test\r\n";
    let worst = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        ["ffff"; 8].join(":")
    );
    assert_eq!(worst.len(), V1_MAX);
    let cases: Vec<(String, Got)> = vec![
        (
            format!("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n{ehlo}"),
            Got::Done(tcp(V1, "192.0.2.1:56324", "198.51.100.2:25"), 44),
        ),
        (
            "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n".into(),
            Got::Done(tcp(V1, "[2001:db8::1]:65535", "[2001:db8::2]:0"), 44),
        ),
        (
            "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n".into(),
            Got::Done(tcp(V1, "[::ffff:192.0.2.1]:1", "[::1]:2"), 37),
        ),
        (format!("PROXY UNKNOWN\r\n{ehlo}"), Got::Done(local(V1), 15)),
        (
            "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".into(),
            Got::Done(local(V1), 35),
        ),
        (worst.clone(), Got::Done(local(V1), V1_MAX)),
        // Incomplete: everything so far is taken, nothing decided.
        (String::new(), Got::NeedMore(0)),
        ("PROX".into(), Got::NeedMore(4)),
        ("PROXY TCP4 192.0.2.1 198.51.1".into(), Got::NeedMore(29)),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r".into(), Got::NeedMore(31)),
    ];
    for (input, want) in cases {
        assert_eq!(run(input.as_bytes()), want, "{input:?}");
    }
}

#[test]
fn v1_malformed_headers_are_refused() {
    let syntax = [
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
        "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN a\rb\r\n",
        "PROXY \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
    ];
    for input in syntax {
        assert_eq!(
            run(input.as_bytes()),
            Got::Invalid(Invalid::V1Syntax),
            "{input:?}"
        );
    }
    for input in [
        "EHLO client.test\r\n",
        "proxy TCP4",
        "PROXYTCP4",
        "\x16\x03\x01",
    ] {
        assert_eq!(
            run(input.as_bytes()),
            Got::Invalid(Invalid::NotProxy),
            "{input:?}"
        );
    }
    // No CRLF within 107 bytes: refused at the 107th, not after more.
    let long = format!("PROXY UNKNOWN {}", "a".repeat(200));
    assert_eq!(run(long.as_bytes()), Got::Invalid(Invalid::V1TooLong));
    assert_eq!(
        run(&long.as_bytes()[..V1_MAX - 1]),
        Got::NeedMore(V1_MAX - 1)
    );
    let worst = format!(
        "PROXY UNKNOWN {0} {0} 65535 655351\r\n",
        ["ffff"; 8].join(":")
    );
    assert_eq!(run(worst.as_bytes()), Got::Invalid(Invalid::V1TooLong));
}

#[test]
fn v2_headers_and_what_follows_them() {
    use Version::V2;
    let ipv6: Vec<u8> = [
        "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
        "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
    ]
    .concat()
    .into_iter()
    .chain([0x01, 0xbb, 0x02, 0x4b])
    .collect();
    let with = |mut header: Vec<u8>, tail: &[u8]| {
        header.extend_from_slice(tail);
        header
    };
    // Two TLVs: an AWS VPC endpoint id (0xEA) and a NOOP (0x04).
    let tlvs = [&[0xea, 0, 5, 1][..], b"vpce", &[0x04, 0, 2, 0, 0]].concat();
    let ipv4_tlvs = [&IPV4_PAYLOAD[..], &tlvs].concat();
    let ipv4 = tcp(V2, "192.0.2.1:56324", "198.51.100.2:25");
    let cases: Vec<(Vec<u8>, Got)> = vec![
        (
            with(v2(0x21, 0x11, 12, &IPV4_PAYLOAD), b"EHLO client.test\r\n"),
            Got::Done(ipv4, 28),
        ),
        (
            v2(0x21, 0x21, 36, &ipv6),
            Got::Done(tcp(V2, "[2001:db8::1]:443", "[2001:db8::2]:587"), 52),
        ),
        (
            with(v2(0x21, 0x11, 26, &ipv4_tlvs), b"\x16\x03\x01"),
            Got::Done(ipv4, 42),
        ),
        (v2(0x20, 0x00, 0, b"EHLO"), Got::Done(local(V2), 16)),
        // LOCAL ignores the family and whatever addresses it carries.
        (
            with(v2(0x20, 0x11, 12, &IPV4_PAYLOAD), b"x"),
            Got::Done(local(V2), 28),
        ),
        (v2(0x20, 0x77, 0, b""), Got::Done(local(V2), 16)),
        (v2(0x21, 0x00, 4, &[1, 2, 3, 4]), Got::Done(local(V2), 20)),
        (
            v2(0x21, 0x11, 1024, &[&IPV4_PAYLOAD[..], &[0; 1012]].concat()),
            Got::Done(ipv4, MAX_HEADER),
        ),
        // Incomplete.
        (V2_SIGNATURE[..5].to_vec(), Got::NeedMore(5)),
        (v2(0x21, 0x11, 12, &IPV4_PAYLOAD[..5]), Got::NeedMore(21)),
        (
            v2(0x21, 0x11, 1024, &IPV4_PAYLOAD),
            Got::NeedMore(16 + IPV4_PAYLOAD.len()),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(run(&input), want, "{input:?}");
    }
}

#[test]
fn v2_refusals_come_as_soon_as_the_fixed_part_shows_them() {
    let cases: Vec<(Vec<u8>, Invalid)> = vec![
        // Decided on 16 bytes, without waiting for the announced length.
        (v2(0x21, 0x11, 1025, b""), Invalid::V2TooLong),
        (v2(0x21, 0x11, 0xffff, b""), Invalid::V2TooLong),
        (v2(0x11, 0x11, 12, &IPV4_PAYLOAD), Invalid::V2Version),
        (v2(0x22, 0x11, 12, &IPV4_PAYLOAD), Invalid::V2Command),
        (v2(0x21, 0x12, 12, &IPV4_PAYLOAD), Invalid::V2Family),
        (v2(0x21, 0x22, 36, &[0; 36]), Invalid::V2Family),
        (v2(0x21, 0x31, 216, &[0; 216]), Invalid::V2Family),
        (v2(0x21, 0x01, 0, b""), Invalid::V2Family),
        (v2(0x21, 0x11, 11, &IPV4_PAYLOAD), Invalid::V2Short),
        (v2(0x21, 0x21, 35, &[0; 36]), Invalid::V2Short),
        (b"\r\n\r\n\0\r\nQUIT\r".to_vec(), Invalid::NotProxy),
        (b"\r\nEHLO".to_vec(), Invalid::NotProxy),
    ];
    for (input, want) in cases {
        assert_eq!(run(&input), Got::Invalid(want), "{input:?}");
    }
}

#[test]
fn encoded_headers_parse_back_to_themselves() {
    let headers = [
        tcp(Version::V1, "192.0.2.1:1", "198.51.100.2:25"),
        tcp(Version::V1, "[2001:db8::1]:65535", "[::1]:0"),
        tcp(Version::V2, "192.0.2.1:56324", "198.51.100.2:465"),
        tcp(Version::V2, "[2001:db8::7]:1", "[2001:db8::8]:587"),
        local(Version::V1),
        local(Version::V2),
    ];
    for header in headers {
        let bytes = header.encode();
        assert_eq!(
            parse(&bytes),
            Parse::Done {
                header,
                consumed: bytes.len()
            },
            "{header:?}"
        );
    }
    // Mixed families are written as IPv6 with the IPv4 address mapped.
    let mixed = tcp(Version::V1, "192.0.2.1:1", "[2001:db8::1]:2").encode();
    assert_eq!(mixed, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n");
}
