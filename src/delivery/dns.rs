//! DNS lookups for delivery: the [`Resolver`] trait the MX logic is written against, and
//! [`SystemResolver`], its implementation on hickory-resolver.
//!
//! The trait is deliberately small (MX, and addresses of a host) so that tests can answer
//! from a table and the MX rules in `mx.rs` stay free of DNS plumbing.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// Why a lookup gave no answer. The distinction matters: a name that does not exist is
/// a permanent failure, a server that did not answer is a reason to retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist. Also returned for a name that cannot be
    /// written in DNS at all (an empty label, an over-long name), which cannot exist either.
    #[error("the name does not exist")]
    NotFound,
    /// The name exists but has no record of the type asked for.
    #[error("the name has no records of that type")]
    NoRecords,
    /// A timeout, SERVFAIL, REFUSED or network error: try again later.
    #[error("DNS lookup failed: {0}")]
    Temporary(String),
}

/// Building a [`SystemResolver`] failed (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("reading the system DNS configuration (/etc/resolv.conf): {0}")]
    SystemConfig(String),
    #[error("building the DNS resolver: {0}")]
    Build(String),
}

/// The lookups delivery needs. Implementations must not panic on any DNS input.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// The MX records of `domain` as `(preference, exchange)`, the exchange without its
    /// trailing dot (`"."`'s exchange, the null MX, is the empty string). `Ok(empty)`
    /// when the name exists but has no MX; `Err(NotFound)` for NXDOMAIN.
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError>;

    /// The A and AAAA addresses of `host`. `Err(NoRecords)` when it has neither.
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// hickory-resolver, configured from `/etc/resolv.conf` or with explicit name servers.
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct SystemResolver {
    inner: TokioResolver,
}

impl SystemResolver {
    /// The name servers and options of `/etc/resolv.conf` (in Kubernetes: the cluster DNS).
    pub fn from_system_conf() -> Result<SystemResolver, DnsSetupError> {
        let builder = TokioResolver::builder_tokio()
            .map_err(|e| DnsSetupError::SystemConfig(e.to_string()))?;
        let inner = builder
            .build()
            .map_err(|e| DnsSetupError::Build(e.to_string()))?;
        Ok(SystemResolver { inner })
    }

    /// One explicit recursive name server, over UDP with TCP for truncated answers: for a
    /// resolver that is not the system's (a local unbound, say) and for tests.
    pub fn with_nameserver(addr: SocketAddr) -> Result<SystemResolver, DnsSetupError> {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut c| {
                c.port = addr.port();
                c
            })
            .collect();
        let server = NameServerConfig::new(addr.ip(), true, connections);
        let config = ResolverConfig::from_parts(None, vec![], vec![server]);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .map_err(|e| DnsSetupError::Build(e.to_string()))?;
        Ok(SystemResolver { inner })
    }

    /// The configured name server, or the system's (`delivery.nameserver` in the config).
    pub fn configured(nameserver: Option<SocketAddr>) -> Result<SystemResolver, DnsSetupError> {
        match nameserver {
            Some(addr) => SystemResolver::with_nameserver(addr),
            None => SystemResolver::from_system_conf(),
        }
    }

    /// The hickory resolver underneath, sharing this one's cache: for mail-auth's SPF,
    /// DKIM and DMARC lookups, which are written against it.
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    /// Looks up one record type; the answers of that type only, or the classified error.
    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, DnsError> {
        let name = absolute_name(name)?;
        match self.inner.lookup(name, rtype).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect()),
            Err(e) => Err(classify(&e)),
        }
    }
}

#[async_trait]
impl Resolver for SystemResolver {
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let records = match self.lookup(domain, RecordType::MX).await {
            Err(DnsError::NoRecords) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(records
            .into_iter()
            .filter_map(|data| match data {
                RData::MX(mx) => Some((mx.preference, host_name(&mx.exchange))),
                _ => None,
            })
            .collect())
    }

    /// AAAA first, then A, in the order the server gave them. An address in text form
    /// (a smarthost configured as `10.9.8.7`) is returned as is, without a lookup.
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let (v6, v4) = tokio::join!(
            self.lookup(host, RecordType::AAAA),
            self.lookup(host, RecordType::A)
        );
        merge_families(v6, v4)
    }
}

/// Combines the AAAA and A answers. Any address is enough to try the host: a family that
/// failed temporarily while the other answered does not hold delivery up. With no
/// address at all, a temporary failure wins (it might have held the only address), then
/// NXDOMAIN.
fn merge_families(
    v6: Result<Vec<RData>, DnsError>,
    v4: Result<Vec<RData>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for result in [v6, v4] {
        match result {
            Ok(records) => addrs.extend(records.into_iter().filter_map(|d| match d {
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })),
            Err(e) => errors.push(e),
        }
    }
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    let temporary = errors.iter().find(|e| matches!(e, DnsError::Temporary(_)));
    match temporary {
        Some(e) => Err(e.clone()),
        None if errors.contains(&DnsError::NotFound) => Err(DnsError::NotFound),
        None => Err(DnsError::NoRecords),
    }
}

/// The name as an absolute (fully qualified) DNS name, so that the resolver never tries
/// the search domains of resolv.conf: a recipient domain is always absolute. UTF-8
/// (SMTPUTF8) domains are converted to their A-label form.
fn absolute_name(name: &str) -> Result<Name, DnsError> {
    let mut parsed = Name::from_utf8(name).map_err(|_| DnsError::NotFound)?;
    if parsed.num_labels() == 0 {
        return Err(DnsError::NotFound);
    }
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A host name from DNS as the rest of delivery uses it: ASCII, lower case, no final dot.
fn host_name(name: &Name) -> String {
    let text = name.to_ascii().to_ascii_lowercase();
    text.strip_suffix('.').unwrap_or(&text).to_string()
}

fn classify(error: &NetError) -> DnsError {
    if error.is_nx_domain() {
        DnsError::NotFound
    } else if error.is_no_records_found() {
        DnsError::NoRecords
    } else {
        DnsError::Temporary(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> RData {
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
    }

    fn v6() -> RData {
        RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
    }

    #[test]
    fn families_merge_ipv6_first_and_failures_rank() {
        let both = merge_families(Ok(vec![v6()]), Ok(vec![v4()])).unwrap();
        assert_eq!(
            both,
            [
                "::1".parse::<IpAddr>().unwrap(),
                "192.0.2.1".parse().unwrap()
            ]
        );
        let temp = || Err(DnsError::Temporary("timeout".into()));
        assert_eq!(merge_families(temp(), Ok(vec![v4()])).unwrap().len(), 1);
        assert!(matches!(
            merge_families(temp(), Err(DnsError::NoRecords)),
            Err(DnsError::Temporary(_))
        ));
        assert_eq!(
            merge_families(Err(DnsError::NotFound), Err(DnsError::NotFound)),
            Err(DnsError::NotFound)
        );
        assert_eq!(
            merge_families(Err(DnsError::NoRecords), Ok(vec![])),
            Err(DnsError::NoRecords)
        );
    }

    #[test]
    fn names_are_absolute_and_invalid_ones_do_not_exist() {
        assert!(absolute_name("example.org").unwrap().is_fqdn());
        assert!(
            absolute_name("Bücher.example")
                .unwrap()
                .to_ascii()
                .starts_with("xn--")
        );
        assert_eq!(absolute_name(""), Err(DnsError::NotFound));
        assert_eq!(absolute_name("a..b"), Err(DnsError::NotFound));
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(absolute_name(&long), Err(DnsError::NotFound));
        assert_eq!(
            host_name(&Name::from_ascii("MX1.Example.ORG.").unwrap()),
            "mx1.example.org"
        );
        assert_eq!(host_name(&Name::root()), "");
    }
}
