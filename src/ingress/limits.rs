//! Concurrent connection limits, overall, per client IP and per IPv6 prefix: a
//! connection holds a [`ConnectionPermit`] for its lifetime, and is answered 421 4.7.0
//! when none is left.
//!
//! One IPv6 host usually has a whole /64 to itself and can pick a fresh address from it
//! for every connection, so a per-address limit alone does not bound it; connections are
//! also counted per prefix (`limits.ipv6Prefix`, 64 bits by default).
//!
//! Behind a load balancer speaking the PROXY protocol the client is known only once the
//! header is read, so a permit is taken in two steps: [`ConnectionLimits::admit`]
//! counts the connection against the total at once, and
//! [`ConnectionPermit::identify`] then counts it against its client's address, which
//! keeps the balancer itself from being limited as one client.

use crate::telemetry::metrics::ConnectionRefusal;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    ipv6: Ipv6Limit,
    state: Mutex<Counts>,
}

/// How IPv6 clients are grouped.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Limit {
    /// Leading bits that name one client network (0 to 128).
    pub prefix: u8,
    /// Connections at once from one such network.
    pub max_per_prefix: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<Ipv6Addr, usize>,
}

/// The network of an IPv6 client: its address with all but the first `prefix` bits
/// zeroed. `None` for IPv4 (and IPv4-mapped) clients, which are counted per address.
pub fn ipv6_network(ip: IpAddr, prefix: u8) -> Option<Ipv6Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    if v6.to_ipv4_mapped().is_some() {
        return None;
    }
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Some(Ipv6Addr::from(u128::from(v6) & mask))
}

/// Why a connection was refused, as the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxPerIp,
    MaxPerIpv6Prefix,
}

impl Refusal {
    pub fn metric_label(self) -> ConnectionRefusal {
        match self {
            Refusal::MaxConnections => ConnectionRefusal::MaxConnections,
            Refusal::MaxPerIp => ConnectionRefusal::MaxPerIp,
            Refusal::MaxPerIpv6Prefix => ConnectionRefusal::MaxPerIpv6Prefix,
        }
    }
}

/// Released when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    /// Whom the connection is counted for, once known.
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    /// IPv6 networks are /64s limited like one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        let ipv6 = Ipv6Limit {
            prefix: 64,
            max_per_prefix: max_per_ip,
        };
        Self::with_ipv6(max_total, max_per_ip, ipv6)
    }

    pub fn with_ipv6(max_total: usize, max_per_ip: usize, ipv6: Ipv6Limit) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            ipv6,
            state: Mutex::new(Counts::default()),
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        self.admit()?.identify(ip)
    }

    /// Counts a connection whose client is not known yet against the total only.
    pub fn admit(self: &Arc<Self>) -> Result<ConnectionPermit, Refusal> {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::MaxConnections);
        }
        counts.total += 1;
        Ok(ConnectionPermit {
            limits: Arc::clone(self),
            ip: None,
        })
    }

    pub fn active(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl ConnectionPermit {
    /// Counts an admitted connection against its client's address (and IPv6 network);
    /// refused, the permit is dropped and the connection no longer counts at all.
    pub fn identify(mut self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        debug_assert!(self.ip.is_none(), "identified twice");
        let limits = Arc::clone(&self.limits);
        let mut counts = limits.state.lock().unwrap_or_else(|e| e.into_inner());
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_per_ip {
            return Err(Refusal::MaxPerIp);
        }
        let network = ipv6_network(ip, limits.ipv6.prefix);
        if let Some(net) = network {
            if counts.per_prefix.get(&net).copied().unwrap_or(0) >= limits.ipv6.max_per_prefix {
                return Err(Refusal::MaxPerIpv6Prefix);
            }
            *counts.per_prefix.entry(net).or_default() += 1;
        }
        *counts.per_ip.entry(ip).or_default() += 1;
        self.ip = Some(ip);
        Ok(self)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        let Some(ip) = self.ip else {
            return;
        };
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
        if let Some(net) = ipv6_network(ip, self.limits.ipv6.prefix)
            && let Some(n) = counts.per_prefix.get_mut(&net)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_prefix.remove(&net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_total_and_per_ip_and_releases_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let p1 = limits.try_acquire(a).unwrap();
        let _p2 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.try_acquire(a).unwrap_err(), Refusal::MaxPerIp);
        let _p3 = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).unwrap_err(), Refusal::MaxConnections);
        drop(p1);
        let _p4 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.active(), 3);
    }

    #[test]
    fn an_admitted_connection_counts_in_the_total_until_its_client_is_known() {
        let limits = ConnectionLimits::new(3, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limits.admit().unwrap();
        let second = limits.admit().unwrap();
        assert_eq!(limits.active(), 2);
        let first = first.identify(a).unwrap();
        assert_eq!(second.identify(a).unwrap_err(), Refusal::MaxPerIp);
        assert_eq!(limits.active(), 1, "a refused permit is released");
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let _b = limits.admit().unwrap().identify(b).unwrap();
        let _unknown = limits.admit().unwrap();
        assert_eq!(limits.admit().unwrap_err(), Refusal::MaxConnections);
        drop(first);
        let _a = limits.try_acquire(a).unwrap();
        assert_eq!(limits.active(), 3);
    }

    #[test]
    fn ipv6_networks_are_the_leading_prefix_bits() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = |s: &str| Some(s.parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            ipv6_network(ip("2001:db8:1:2:3:4:5:6"), 64),
            net("2001:db8:1:2::")
        );
        assert_eq!(
            ipv6_network(ip("2001:db8:1:2:3:4:5:6"), 48),
            net("2001:db8:1::")
        );
        assert_eq!(
            ipv6_network(ip("2001:db8:1:2ff::1"), 56),
            net("2001:db8:1:200::")
        );
        assert_eq!(ipv6_network(ip("2001:db8::1"), 128), net("2001:db8::1"));
        assert_eq!(ipv6_network(ip("2001:db8::1"), 0), net("::"));
        assert_eq!(ipv6_network(ip("2001:db8::1"), 200), net("2001:db8::1"));
        assert_eq!(ipv6_network(ip("192.0.2.1"), 64), None);
        assert_eq!(ipv6_network(ip("::ffff:192.0.2.1"), 64), None);
    }

    #[test]
    fn one_ipv6_network_is_limited_across_its_addresses() {
        let ipv6 = Ipv6Limit {
            prefix: 64,
            max_per_prefix: 2,
        };
        let limits = ConnectionLimits::with_ipv6(100, 10, ipv6);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = limits.try_acquire(ip("2001:db8:0:1::1")).unwrap();
        let _second = limits.try_acquire(ip("2001:db8:0:1::2")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("2001:db8:0:1:ffff::3")).unwrap_err(),
            Refusal::MaxPerIpv6Prefix
        );
        // Another /64, and IPv4, are counted apart.
        let _other = limits.try_acquire(ip("2001:db8:0:2::1")).unwrap();
        let _v4 = limits.try_acquire(ip("192.0.2.1")).unwrap();
        drop(first);
        let _again = limits.try_acquire(ip("2001:db8:0:1::3")).unwrap();
        assert_eq!(limits.active(), 4);
        assert_eq!(
            limits.try_acquire(ip("2001:db8:0:1::4")).unwrap_err(),
            Refusal::MaxPerIpv6Prefix
        );
    }
}
