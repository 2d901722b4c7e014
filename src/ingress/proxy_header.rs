//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a
//! load balancer writes before anything else on a connection, naming the client it
//! forwards. This module only parses and writes the header, free of I/O: bytes are fed
//! as they come ([`HeaderParser::feed`]) and the parser never takes a byte past the
//! header's end, so whatever the client sent behind it (pipelined commands, a TLS
//! ClientHello) stays with the caller. Reading it off a socket is [`super::proxy`]'s job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the spec's worst case, two IPv6 addresses).
pub const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
/// What every v2 header starts with; it cannot begin any SMTP command or TLS record.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part. The length field
/// allows 64 KiB; the addresses need 36 bytes at most and balancers add a few small
/// TLVs (AWS's VPC endpoint id, Azure's link id), so 1 KiB is ample and keeps what one
/// connection may make us hold before it is known who it is small.
pub const V2_MAX_PAYLOAD: usize = 1024;
/// The most bytes any acceptable header takes.
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_PAYLOAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Whom the connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// v2 `LOCAL`, v2 `PROXY` over `AF_UNSPEC`, v1 `UNKNOWN`: the balancer's own
    /// connection (a health check) or one it cannot describe; the connection's real
    /// peer address stands.
    Local,
    /// A TCP connection over IPv4 or IPv6, as the balancer accepted it.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: Version,
    pub endpoints: Endpoints,
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("v1 header without CRLF within {V1_MAX} bytes")]
    V1TooLong,
    #[error("malformed v1 header")]
    V1Syntax,
    #[error("v2 header of a version other than 2")]
    V2Version,
    #[error("v2 header with a command other than LOCAL or PROXY")]
    V2Command,
    #[error("v2 header for a family or transport other than TCP over IPv4 or IPv6")]
    V2Family,
    #[error("v2 header announcing more than {V2_MAX_PAYLOAD} bytes of addresses and TLVs")]
    V2TooLong,
    #[error("v2 header too short for the addresses of its family")]
    V2Short,
}

/// What the bytes so far make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Parse {
    /// A header may still follow; every byte fed so far belongs to it.
    NeedMore,
    /// The header ends `consumed` bytes into the input just fed (or into the buffer
    /// given to [`parse`]); what follows is the client's.
    Done {
        header: ProxyHeader,
        consumed: usize,
    },
    Invalid(Invalid),
}

/// Collects a header from fragments of any size; holds at most [`MAX_HEADER`] bytes.
#[derive(Debug, Default)]
pub struct HeaderParser {
    buf: Vec<u8>,
    /// Once the header is complete or refused, the answer for every later feed.
    finished: Option<Parse>,
}

impl HeaderParser {
    pub fn new() -> HeaderParser {
        HeaderParser::default()
    }

    /// How many bytes the parser can still take: no acceptable header is longer, so a
    /// caller reading ahead need never read more than this.
    pub fn room(&self) -> usize {
        MAX_HEADER - self.buf.len()
    }

    /// Takes the next bytes of the stream. `NeedMore` means all of `input` was taken;
    /// `Done { consumed }` counts the bytes of `input` that end the header.
    pub fn feed(&mut self, input: &[u8]) -> Parse {
        if let Some(finished) = self.finished {
            return match finished {
                Parse::Done { header, .. } => Parse::Done {
                    header,
                    consumed: 0,
                },
                other => other,
            };
        }
        let before = self.buf.len();
        // Never NeedMore at MAX_HEADER bytes, so the cut loses nothing.
        let take = input.len().min(self.room());
        self.buf.extend_from_slice(&input[..take]);
        let result = match parse(&self.buf) {
            Parse::NeedMore => return Parse::NeedMore,
            Parse::Done { header, consumed } => Parse::Done {
                header,
                consumed: consumed - before,
            },
            Parse::Invalid(why) => Parse::Invalid(why),
        };
        self.finished = Some(result);
        result
    }
}

/// Parses the start of a stream. Each check looks only at bytes before those of the
/// next, so a refusal never depends on how many bytes have arrived: fragmentation cannot
/// change the answer, only delay it.
pub fn parse(buf: &[u8]) -> Parse {
    match buf.first() {
        None => Parse::NeedMore,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Parse::Invalid(Invalid::NotProxy),
    }
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// ```text
/// header  = "PROXY " ( tcp / unknown ) CRLF          ; 107 octets at most
/// tcp     = ( "TCP4" SP ipv4 SP ipv4 / "TCP6" SP ipv6 SP ipv6 ) SP port SP port
/// unknown = "UNKNOWN" [ SP *( any octet but CR or LF ) ]
/// port    = "0" / %x31-39 0*4DIGIT                    ; 0 to 65535, no leading zero
/// ```
fn parse_v1(buf: &[u8]) -> Parse {
    if !starts_like(buf, V1_PREFIX) {
        return Parse::Invalid(Invalid::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Parse::Invalid(Invalid::V1TooLong)
        } else {
            Parse::NeedMore
        };
    };
    let Some(line) = buf[..lf].strip_suffix(b"\r") else {
        return Parse::Invalid(Invalid::V1Syntax);
    };
    match line.strip_prefix(V1_PREFIX).and_then(v1_endpoints) {
        Some(endpoints) => Parse::Done {
            header: ProxyHeader {
                version: Version::V1,
                endpoints,
            },
            consumed: lf + 1,
        },
        None => Parse::Invalid(Invalid::V1Syntax),
    }
}

/// The words after `PROXY `, CRLF excluded.
fn v1_endpoints(rest: &[u8]) -> Option<Endpoints> {
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        // The spec: the receiver ignores whatever follows UNKNOWN up to the CRLF.
        if rest.contains(&b'\r') {
            return None;
        }
        return Some(Endpoints::Local);
    }
    let text = std::str::from_utf8(rest).ok()?;
    let mut words = text.split(' ');
    let (family, src, dst, sport, dport) = (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
    );
    if words.next().is_some() {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>().ok()?.into(),
            dst.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().ok()?.into(),
            dst.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    Some(Endpoints::Tcp {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    })
}

fn v1_port(word: &str) -> Option<u16> {
    let digits = word.bytes().all(|b| b.is_ascii_digit());
    let canonical = word == "0" || !word.starts_with('0');
    if !digits || !canonical || word.is_empty() || word.len() > 5 {
        return None;
    }
    word.parse().ok()
}

/// ```text
/// signature(12) ver_cmd(1) fam(1) len(2, big-endian) addresses+TLVs(len)
/// ver_cmd: 0x20 LOCAL, 0x21 PROXY; fam: 0x00 AF_UNSPEC, 0x11 TCP/IPv4, 0x21 TCP/IPv6
/// IPv4: src(4) dst(4) sport(2) dport(2); IPv6: src(16) dst(16) sport(2) dport(2)
/// ```
/// TLVs after the addresses are skipped (within `len`): none changes whom the
/// connection is for.
fn parse_v2(buf: &[u8]) -> Parse {
    if !starts_like(buf, &V2_SIGNATURE) {
        return Parse::Invalid(Invalid::NotProxy);
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Parse::NeedMore;
    };
    if ver_cmd >> 4 != 2 {
        return Parse::Invalid(Invalid::V2Version);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parse::Invalid(Invalid::V2Command),
    };
    let Some(&family) = buf.get(13) else {
        return Parse::NeedMore;
    };
    // LOCAL: the spec says the family is to be ignored, as are the addresses.
    let needed = match (local, family) {
        (true, _) | (false, 0x00) => 0,
        (false, 0x11) => 12,
        (false, 0x21) => 36,
        _ => return Parse::Invalid(Invalid::V2Family),
    };
    let Some(len) = buf.get(14..16) else {
        return Parse::NeedMore;
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > V2_MAX_PAYLOAD {
        return Parse::Invalid(Invalid::V2TooLong);
    }
    if len < needed {
        return Parse::Invalid(Invalid::V2Short);
    }
    let Some(payload) = buf.get(V2_FIXED..V2_FIXED + len) else {
        return Parse::NeedMore;
    };
    let endpoints = match needed {
        0 => Endpoints::Local,
        12 => v2_tcp(payload, 4),
        _ => v2_tcp(payload, 16),
    };
    Parse::Done {
        header: ProxyHeader {
            version: Version::V2,
            endpoints,
        },
        consumed: V2_FIXED + len,
    }
}

/// The addresses and ports of a v2 payload whose length was checked.
fn v2_tcp(payload: &[u8], width: usize) -> Endpoints {
    let ip = |bytes: &[u8]| -> IpAddr {
        match width {
            4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()),
            _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()),
        }
    };
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    Endpoints::Tcp {
        source: SocketAddr::new(ip(&payload[..width]), port(2 * width)),
        destination: SocketAddr::new(ip(&payload[width..2 * width]), port(2 * width + 2)),
    }
}

impl ProxyHeader {
    /// The client's address, when the header names one.
    pub fn client(&self) -> Option<SocketAddr> {
        match self.endpoints {
            Endpoints::Local => None,
            Endpoints::Tcp { source, .. } => Some(source),
        }
    }

    /// The header as a balancer would send it, v2 without TLVs. Endpoints of mixed
    /// families (which no parsed header has) are written as IPv6, the IPv4 one mapped.
    pub fn encode(&self) -> Vec<u8> {
        let addresses = match self.endpoints {
            Endpoints::Local => None,
            Endpoints::Tcp {
                source,
                destination,
            } => Some(match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
                (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
            })
            .map(|(s, d)| (s, d, source.port(), destination.port())),
        };
        match self.version {
            Version::V1 => encode_v1(addresses),
            Version::V2 => encode_v2(addresses),
        }
    }
}

type Addresses = Option<(IpAddr, IpAddr, u16, u16)>;

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn encode_v1(addresses: Addresses) -> Vec<u8> {
    let line = match addresses {
        None => "PROXY UNKNOWN\r\n".to_string(),
        Some((s, d, sp, dp)) => {
            let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {s} {d} {sp} {dp}\r\n")
        }
    };
    line.into_bytes()
}

fn encode_v2(addresses: Addresses) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut payload = Vec::new();
    let (command, family) = match addresses {
        None => (0x20, 0x00),
        Some((s, d, sp, dp)) => {
            let family = match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    payload.extend_from_slice(&s.octets());
                    payload.extend_from_slice(&d.octets());
                    0x11
                }
                (s, d) => {
                    payload.extend_from_slice(&to_v6(s).octets());
                    payload.extend_from_slice(&to_v6(d).octets());
                    0x21
                }
            };
            payload.extend_from_slice(&sp.to_be_bytes());
            payload.extend_from_slice(&dp.to_be_bytes());
            (0x21, family)
        }
    };
    out.extend_from_slice(&[command, family]);
    // At most 36 bytes: always fits the u16.
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
#[path = "proxy_header_tests.rs"]
mod tests;
