//! Which addresses a worker may connect to for MX delivery. DNS is the recipient
//! domain's to write: an MX or A record pointing at 127.0.0.1, 10.0.0.5 or the relay's
//! own address would otherwise make the relay loop to itself or reach into the network
//! it runs in (the admin port, the NATS server, a cloud metadata service). Smarthost
//! routes and local deliveries name their hosts in the policy and are not checked here.
//!
//! Always refused: the relay's own listening, interface and host name addresses (a loop),
//! unspecified, multicast and broadcast addresses (no host). Refused unless the
//! configuration allows private destinations: loopback, link-local, RFC 1918, ULA
//! (fc00::/7) and CGNAT (100.64.0.0/10).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether MX hosts at loopback and private addresses may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateDestinations {
    #[default]
    Refuse,
    /// For tests and local experiments (`delivery.allowPrivateDestinations`).
    Allow,
}

/// Why an address is not connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// One of the relay's own addresses: the mail would loop.
    Own,
    Unspecified,
    Multicast,
    Loopback,
    LinkLocal,
    /// RFC 1918, ULA or CGNAT.
    Private,
}

impl Refusal {
    /// A loop is RFC 3463 X.4.6; any other refusal means no usable route, X.4.4.
    pub fn is_loop(self) -> bool {
        self == Refusal::Own
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Own => "this relay's own address",
            Refusal::Unspecified => "an unspecified address",
            Refusal::Multicast => "a multicast or broadcast address",
            Refusal::Loopback => "a loopback address",
            Refusal::LinkLocal => "a link-local address",
            Refusal::Private => "a private address",
        })
    }
}

/// The rules, with what the worker knows of its own addresses.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    pub private: PrivateDestinations,
    /// The listeners' bound addresses; an unspecified IP stands for every local one.
    pub listeners: Vec<SocketAddr>,
    /// The host's interface addresses, as far as they are known ([`interface_addresses`]).
    pub interfaces: Vec<IpAddr>,
}

impl AddressGuard {
    /// `Ok` when `addr` may be connected to; `own_ips` are the addresses the relay's host
    /// name resolves to now.
    pub fn check(&self, addr: SocketAddr, own_ips: &[IpAddr]) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        let class = classify(ip);
        if self.is_listener(addr, ip, class) {
            return Err(Refusal::Own);
        }
        match class {
            Some(r @ (Refusal::Unspecified | Refusal::Multicast)) => return Err(r),
            Some(r) if self.private == PrivateDestinations::Refuse => return Err(r),
            _ => {}
        }
        // With private destinations allowed, a test relay and its sinks share 127.0.0.1
        // and its host name may resolve there: only the listeners themselves are a loop.
        let private_allowed = class.is_some() && self.private == PrivateDestinations::Allow;
        let own = own_ips.iter().chain(&self.interfaces);
        if !private_allowed && own.into_iter().any(|own| own.to_canonical() == ip) {
            return Err(Refusal::Own);
        }
        Ok(())
    }

    fn is_listener(&self, addr: SocketAddr, ip: IpAddr, class: Option<Refusal>) -> bool {
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip().to_canonical() == ip
                    || (l.ip().is_unspecified() && class == Some(Refusal::Loopback)))
        })
    }
}

/// The addresses of this host's interfaces, from Linux's /proc (no `unsafe` needed for
/// getifaddrs); empty where /proc does not have them. Read once at start-up: an address
/// added later is still caught by the other rules if it is private, and by the host
/// name's addresses if it is public and published.
pub fn interface_addresses() -> Vec<IpAddr> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut addrs = local_ipv4(&read("/proc/net/fib_trie"));
    addrs.extend(local_ipv6(&read("/proc/net/if_inet6")));
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The addresses of `fib_trie` entries marked `/32 host LOCAL`: the host's own IPv4.
fn local_ipv4(fib_trie: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(ip) = last
        {
            found.push(IpAddr::V4(ip));
        }
    }
    found
}

/// The first column of `if_inet6`: each address as 32 hex digits.
fn local_ipv6(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
        .collect()
}

/// The special class of an address, `None` for an ordinary public one.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some(Refusal::Unspecified)
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some(Refusal::Multicast)
    } else if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    } else if ip.is_private() || (a == 100 && (b & 0xc0) == 64) {
        Some(Refusal::Private)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some(Refusal::Unspecified)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if (first & 0xffc0) == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if (first & 0xfe00) == 0xfc00 {
        Some(Refusal::Private)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_classified() {
        let cases = [
            ("8.8.8.8", None),
            ("192.0.2.1", None),
            ("2001:db8::1", None),
            ("0.0.0.0", Some(Refusal::Unspecified)),
            ("0.1.2.3", Some(Refusal::Unspecified)),
            ("::", Some(Refusal::Unspecified)),
            ("224.0.0.1", Some(Refusal::Multicast)),
            ("255.255.255.255", Some(Refusal::Multicast)),
            ("ff02::1", Some(Refusal::Multicast)),
            ("127.0.0.1", Some(Refusal::Loopback)),
            ("127.9.9.9", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("::ffff:127.0.0.1", Some(Refusal::Loopback)),
            ("169.254.169.254", Some(Refusal::LinkLocal)),
            ("fe80::1", Some(Refusal::LinkLocal)),
            ("10.1.2.3", Some(Refusal::Private)),
            ("172.16.0.1", Some(Refusal::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Refusal::Private)),
            ("100.64.0.1", Some(Refusal::Private)),
            ("100.127.255.255", Some(Refusal::Private)),
            ("100.128.0.1", None),
            ("fd00::1", Some(Refusal::Private)),
            ("fc00::1", Some(Refusal::Private)),
            ("::ffff:10.0.0.1", Some(Refusal::Private)),
        ];
        for (ip, class) in cases {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn private_destinations_are_refused_unless_allowed() {
        let refuse = AddressGuard::default();
        assert_eq!(
            refuse.check(sock("127.0.0.1:25"), &[]),
            Err(Refusal::Loopback)
        );
        assert_eq!(
            refuse.check(sock("10.0.0.5:25"), &[]),
            Err(Refusal::Private)
        );
        assert_eq!(refuse.check(sock("192.0.2.1:25"), &[]), Ok(()));
        let allow = AddressGuard {
            private: PrivateDestinations::Allow,
            ..Default::default()
        };
        assert_eq!(allow.check(sock("127.0.0.1:25"), &[]), Ok(()));
        assert_eq!(allow.check(sock("10.0.0.5:25"), &[]), Ok(()));
        // No host is ever behind these.
        assert_eq!(
            allow.check(sock("0.0.0.0:25"), &[]),
            Err(Refusal::Unspecified)
        );
        assert_eq!(
            allow.check(sock("224.0.0.1:25"), &[]),
            Err(Refusal::Multicast)
        );
    }

    #[test]
    fn interface_addresses_come_from_proc() {
        let fib_trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n           |-- 127.0.0.1\n              /32 host LOCAL\n           |-- 198.51.100.0\n              /24 link UNICAST\n           |-- 198.51.100.7\n              /32 host LOCAL\n        |-- 198.51.100.255\n           /32 link BROADCAST\n";
        let v4: Vec<IpAddr> = ["127.0.0.1", "198.51.100.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(local_ipv4(fib_trie), v4);
        let if_inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n20010db8000000000000000000000025 04 40 00 82     eth0\n";
        let v6: Vec<IpAddr> = ["::1", "2001:db8::25"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(local_ipv6(if_inet6), v6);
        let public = AddressGuard {
            interfaces: vec!["198.51.100.7".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            public.check(sock("198.51.100.7:25"), &[]),
            Err(Refusal::Own)
        );
        assert_eq!(public.check(sock("198.51.100.8:25"), &[]), Ok(()));
    }

    #[test]
    fn own_addresses_are_a_loop_even_when_private_ones_are_allowed() {
        let guard = AddressGuard {
            private: PrivateDestinations::Allow,
            listeners: vec![sock("127.0.0.1:2525"), sock("0.0.0.0:25")],
            interfaces: Vec::new(),
        };
        assert_eq!(guard.check(sock("127.0.0.1:2525"), &[]), Err(Refusal::Own));
        assert_eq!(guard.check(sock("127.0.0.2:25"), &[]), Err(Refusal::Own));
        assert_eq!(guard.check(sock("127.0.0.1:2526"), &[]), Ok(()));
        let own = ["192.0.2.25".parse().unwrap()];
        assert_eq!(guard.check(sock("192.0.2.25:25"), &own), Err(Refusal::Own));
        assert_eq!(
            AddressGuard::default().check(sock("192.0.2.25:25"), &own),
            Err(Refusal::Own)
        );
        assert_eq!(guard.check(sock("192.0.2.26:25"), &own), Ok(()));
        assert!(Refusal::Own.is_loop() && !Refusal::Private.is_loop());
    }
}
