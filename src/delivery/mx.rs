//! MX resolution: the ordered list of hosts (with their addresses) to try for a
//! recipient domain that has no local delivery and no smarthost route.
//!
//! The rules, from RFC 5321 5.1 and RFC 7505:
//! - MX records sorted by preference, lowest first; equal preferences in random order,
//!   so that load spreads over a domain's equal MX hosts.
//! - No MX record: the domain's own A/AAAA is the one host (the implicit MX).
//! - A null MX (an MX whose exchange is `.`): the domain accepts no mail at all.
//! - If one of our own names is an MX host, only hosts strictly better than it may be
//!   used, else mail would loop back to us.
//! - Hosts with no address are skipped; DNS failures are temporary.

use std::net::IpAddr;

use rand::seq::SliceRandom;

use super::dns::{DnsError, Resolver};
use super::outcome::Outcome;
use super::route::normalize_domain;

/// At most this many MX hosts are resolved and returned (after ordering): a domain could
/// publish hundreds, and each costs lookups. Postfix stops at five addresses by default.
pub const MAX_MX_HOSTS: usize = 10;

/// One host to try. `addrs` holds its IPv6 addresses first, then its IPv4 ones, each in
/// the order the resolver gave; the caller tries them in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lower case, without the trailing dot: the name to verify the TLS certificate for.
    /// For the implicit MX it is the domain itself; for an address literal, the literal.
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

/// Why a domain has no host to try. `to_outcome` turns each into the recipient's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// NXDOMAIN for the domain, or a malformed address literal.
    #[error("domain {domain} does not exist")]
    NoSuchDomain { domain: String },
    /// RFC 7505: the domain publishes that it accepts no mail.
    #[error("domain {domain} accepts no mail (null MX)")]
    NullMx { domain: String },
    /// One of our own names is among the best MX hosts.
    #[error("mail for {domain} loops back to this relay (MX host {host})")]
    Loop { domain: String, host: String },
    /// No MX host (or, for the implicit MX, the domain) has an address.
    #[error("no MX host of {domain} has an address")]
    NoAddresses { domain: String },
    /// The recipient was `<Postmaster>` and the policy has no local domain to deliver it to.
    #[error("no local domain to deliver <Postmaster> to")]
    NoDomain,
    /// Every address of the MX hosts is one a worker may not connect to (see
    /// `guard.rs`); `address` is the first of them.
    #[error("no MX host of {domain} may be connected to: {address} is {refusal}")]
    Refused {
        domain: String,
        address: IpAddr,
        refusal: super::guard::Refusal,
    },
    /// A lookup failed in a way that may pass: retry later.
    #[error("DNS lookup for {domain} failed: {reason}")]
    Temporary { domain: String, reason: String },
}

impl MxError {
    /// The recipient's outcome: `Deferred` for `Temporary`, `Failed` with the RFC 3463
    /// enhanced status code otherwise. The reply reads like a server reply, code first,
    /// though no server gave it (so `remote_mta` is `None`).
    pub fn to_outcome(&self) -> Outcome {
        let (code, status) = match self {
            MxError::NoSuchDomain { .. } => (550, "5.1.2"),
            MxError::NullMx { .. } => (556, "5.1.10"),
            MxError::Loop { .. } => (554, "5.4.6"),
            MxError::NoAddresses { .. } => (554, "5.4.4"),
            MxError::Refused { refusal, .. } if refusal.is_loop() => (554, "5.4.6"),
            MxError::Refused { .. } => (554, "5.4.4"),
            MxError::NoDomain => (550, "5.1.2"),
            MxError::Temporary { .. } => {
                return Outcome::Deferred {
                    remote_mta: None,
                    reply: format!("451 4.4.3 {self}"),
                };
            }
        };
        Outcome::Failed {
            remote_mta: None,
            status: status.to_string(),
            reply: format!("{code} {status} {self}"),
        }
    }
}

/// The ordered hosts to try for `domain` (see the module documentation for the rules).
/// `local_names` are this relay's own host names, compared case-insensitively. An address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is one host, with no lookup.
pub async fn mx_hosts(
    resolver: &dyn Resolver,
    domain: &str,
    local_names: &[String],
) -> Result<Vec<MxHost>, MxError> {
    let domain = normalize_domain(domain);
    if domain.is_empty() {
        return Err(MxError::NoDomain);
    }
    if domain.starts_with('[') {
        return address_literal(&domain);
    }
    let records = match resolver.mx(&domain).await {
        Ok(records) => records,
        Err(DnsError::NoRecords) => Vec::new(),
        Err(DnsError::NotFound) => return Err(MxError::NoSuchDomain { domain }),
        Err(DnsError::Temporary(reason)) => return Err(MxError::Temporary { domain, reason }),
    };
    if records.is_empty() {
        return implicit_mx(resolver, domain, local_names).await;
    }
    let exchanges = usable_exchanges(&domain, records, local_names)?;
    resolve_all(resolver, domain, exchanges).await
}

/// RFC 5321 4.1.3 address literals; anything else in brackets cannot be reached.
fn address_literal(domain: &str) -> Result<Vec<MxHost>, MxError> {
    let inner = domain
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or_default();
    // `domain` is lower case here, so the tag reads `ipv6:`.
    let ip = match inner.strip_prefix("ipv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
        None => inner.parse::<std::net::Ipv4Addr>().map(IpAddr::V4).ok(),
    };
    match ip {
        Some(ip) => Ok(vec![MxHost {
            name: domain.to_string(),
            preference: 0,
            addrs: vec![ip],
        }]),
        None => Err(MxError::NoSuchDomain {
            domain: domain.to_string(),
        }),
    }
}

/// RFC 5321 5.1: with no MX, the domain itself is the host, as if it had an MX of
/// preference 0 pointing to itself (so it loops if it is our own name).
async fn implicit_mx(
    resolver: &dyn Resolver,
    domain: String,
    local_names: &[String],
) -> Result<Vec<MxHost>, MxError> {
    if is_own_name(&domain, local_names) {
        let host = domain.clone();
        return Err(MxError::Loop { domain, host });
    }
    match resolver.ips(&domain).await {
        Ok(addrs) if !addrs.is_empty() => Ok(vec![MxHost {
            name: domain,
            preference: 0,
            addrs,
        }]),
        Ok(_) | Err(DnsError::NoRecords) => Err(MxError::NoAddresses { domain }),
        Err(DnsError::NotFound) => Err(MxError::NoSuchDomain { domain }),
        Err(DnsError::Temporary(reason)) => Err(MxError::Temporary { domain, reason }),
    }
}

/// From the MX records to the exchanges worth resolving, best first: null MX detection,
/// duplicates removed, the random order among equals, the loop rule, the cap.
fn usable_exchanges(
    domain: &str,
    records: Vec<(u16, String)>,
    local_names: &[String],
) -> Result<Vec<(u16, String)>, MxError> {
    let mut exchanges: Vec<(u16, String)> = records
        .into_iter()
        .map(|(pref, name)| (pref, normalize_domain(&name)))
        .collect();
    // RFC 7505 wants the null MX alone at preference 0, but any MX set made only of "."
    // can only mean "no mail"; a "." beside real hosts is just unusable.
    if exchanges.iter().all(|(_, name)| name.is_empty()) {
        return Err(MxError::NullMx {
            domain: domain.to_string(),
        });
    }
    exchanges.retain(|(_, name)| !name.is_empty());
    exchanges.sort();
    // Sorted by (preference, name): the first of each name has its best preference.
    let mut seen = std::collections::HashSet::new();
    exchanges.retain(|(_, name)| seen.insert(name.clone()));
    shuffle_equal_preferences(&mut exchanges);
    let own = exchanges
        .iter()
        .filter(|(_, name)| is_own_name(name, local_names))
        .map(|(pref, name)| (*pref, name.clone()))
        .min();
    if let Some((own_pref, host)) = own {
        exchanges.retain(|(pref, _)| *pref < own_pref);
        if exchanges.is_empty() {
            let domain = domain.to_string();
            return Err(MxError::Loop { domain, host });
        }
    }
    exchanges.truncate(MAX_MX_HOSTS);
    Ok(exchanges)
}

/// Shuffles each run of equal preference in a list sorted by preference.
fn shuffle_equal_preferences(exchanges: &mut [(u16, String)]) {
    let mut rng = rand::rng();
    for run in exchanges.chunk_by_mut(|a, b| a.0 == b.0) {
        run.shuffle(&mut rng);
    }
}

/// Resolves each exchange in order, skipping those without an address. With none left,
/// a temporary failure of any of them makes the whole result temporary (that host might
/// have been reachable); otherwise the domain cannot be routed.
async fn resolve_all(
    resolver: &dyn Resolver,
    domain: String,
    exchanges: Vec<(u16, String)>,
) -> Result<Vec<MxHost>, MxError> {
    let mut hosts = Vec::with_capacity(exchanges.len());
    let mut temporary = None;
    for (preference, name) in exchanges {
        match resolver.ips(&name).await {
            Ok(addrs) if !addrs.is_empty() => hosts.push(MxHost {
                name,
                preference,
                addrs,
            }),
            Ok(_) | Err(DnsError::NoRecords | DnsError::NotFound) => {
                tracing::debug!(%domain, host = %name, "MX host has no address, skipped");
            }
            Err(DnsError::Temporary(reason)) => {
                tracing::debug!(%domain, host = %name, %reason, "MX host lookup failed, skipped");
                temporary = Some(format!("MX host {name}: {reason}"));
            }
        }
    }
    match (hosts.is_empty(), temporary) {
        (false, _) => Ok(hosts),
        (true, Some(reason)) => Err(MxError::Temporary { domain, reason }),
        (true, None) => Err(MxError::NoAddresses { domain }),
    }
}

fn is_own_name(host: &str, local_names: &[String]) -> bool {
    local_names.iter().any(|own| normalize_domain(own) == host)
}

// The rules that need no DNS are tested here; those that do (implicit MX, skipped hosts,
// temporary failures) are in tests/mx.rs, against a table resolver and a real DNS server.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn exchanges(
        domain: &str,
        records: &[(u16, &str)],
        own: &[&str],
    ) -> Result<Vec<(u16, String)>, MxError> {
        let records = records.iter().map(|(p, n)| (*p, n.to_string())).collect();
        let own: Vec<String> = own.iter().map(|s| s.to_string()).collect();
        usable_exchanges(domain, records, &own)
    }

    fn names(list: &[(u16, String)]) -> Vec<&str> {
        list.iter().map(|(_, n)| n.as_str()).collect()
    }

    #[test]
    fn preference_order_holds_and_equal_preferences_shuffle() {
        let records = [
            (20, "c.example."),
            (10, "B.example"),
            (10, "a.example"),
            (30, "d.example"),
        ];
        let mut firsts = HashSet::new();
        for _ in 0..200 {
            let list = exchanges("example.org", &records, &[]).unwrap();
            let prefs: Vec<u16> = list.iter().map(|e| e.0).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            assert_eq!(names(&list)[2..], ["c.example", "d.example"]);
            firsts.insert(names(&list)[..2].join(","));
        }
        let both = HashSet::from([
            "a.example,b.example".to_string(),
            "b.example,a.example".to_string(),
        ]);
        assert_eq!(firsts, both);
    }

    #[test]
    fn null_mx_is_permanent_and_dots_beside_hosts_are_dropped() {
        let null = MxError::NullMx {
            domain: "n.example".into(),
        };
        assert_eq!(exchanges("n.example", &[(0, "")], &[]), Err(null.clone()));
        assert_eq!(exchanges("n.example", &[(0, ".")], &[]), Err(null.clone()));
        assert_eq!(
            exchanges("n.example", &[(10, ""), (20, "")], &[]),
            Err(null)
        );
        let mixed = exchanges("m.example", &[(0, ""), (10, "mx.m.example")], &[]).unwrap();
        assert_eq!(names(&mixed), ["mx.m.example"]);
    }

    #[test]
    fn own_names_cut_the_list_or_loop() {
        let backup = [
            (10, "primary.example"),
            (20, "relay.ours.example"),
            (20, "other.example"),
            (30, "last.example"),
        ];
        let own = ["Relay.Ours.Example."];
        let list = exchanges("b.example", &backup, &own).unwrap();
        assert_eq!(
            names(&list),
            ["primary.example"],
            "only strictly better hosts remain"
        );
        assert_eq!(exchanges("b.example", &backup, &[]).unwrap().len(), 4);
        let best = [
            (10, "peer.example"),
            (10, "RELAY.ours.example."),
            (20, "primary.example"),
        ];
        let host = "relay.ours.example".to_string();
        let err = MxError::Loop {
            domain: "best.example".into(),
            host,
        };
        assert_eq!(exchanges("best.example", &best, &own), Err(err));
    }

    #[test]
    fn duplicates_keep_their_best_preference_and_the_list_is_capped() {
        let list = exchanges(
            "d.example",
            &[(30, "mx.example"), (10, "MX.example."), (20, "b.example")],
            &[],
        )
        .unwrap();
        assert_eq!(
            list,
            [
                (10, "mx.example".to_string()),
                (20, "b.example".to_string())
            ]
        );
        let many: Vec<(u16, String)> = (0..50).map(|i| (i, format!("mx{i}.example"))).collect();
        let kept = usable_exchanges("d.example", many, &[]).unwrap();
        assert_eq!(kept.len(), MAX_MX_HOSTS);
        assert_eq!(kept[0].1, "mx0.example");
    }

    #[test]
    fn address_literals_are_hosts_without_lookup() {
        let v4 = address_literal("[192.0.2.1]").unwrap();
        assert_eq!(v4[0].addrs, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(v4[0].name, "[192.0.2.1]");
        let v6 = address_literal("[ipv6:2001:db8::1]").unwrap();
        assert_eq!(v6[0].addrs, ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        for bad in [
            "[nonsense]",
            "[192.0.2.1",
            "[ipv6:192.0.2.1x]",
            "[2001:db8::1]",
        ] {
            assert!(
                matches!(address_literal(bad), Err(MxError::NoSuchDomain { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_map_to_outcomes() {
        let d = || "example.org".to_string();
        let cases = [
            (
                MxError::NoSuchDomain { domain: d() },
                "5.1.2",
                "550 5.1.2 domain example.org does not exist",
            ),
            (
                MxError::NullMx { domain: d() },
                "5.1.10",
                "556 5.1.10 domain example.org accepts no mail (null MX)",
            ),
            (
                MxError::Loop {
                    domain: d(),
                    host: "me.example".into(),
                },
                "5.4.6",
                "554 5.4.6 mail for example.org loops back to this relay (MX host me.example)",
            ),
            (
                MxError::NoAddresses { domain: d() },
                "5.4.4",
                "554 5.4.4 no MX host of example.org has an address",
            ),
            (
                MxError::NoDomain,
                "5.1.2",
                "550 5.1.2 no local domain to deliver <Postmaster> to",
            ),
        ];
        for (error, status, reply) in cases {
            let expect = Outcome::Failed {
                remote_mta: None,
                status: status.into(),
                reply: reply.into(),
            };
            assert_eq!(error.to_outcome(), expect);
        }
        let temp = MxError::Temporary {
            domain: d(),
            reason: "request timed out".into(),
        };
        let expect = "451 4.4.3 DNS lookup for example.org failed: request timed out";
        assert_eq!(
            temp.to_outcome(),
            Outcome::Deferred {
                remote_mta: None,
                reply: expect.into()
            }
        );
    }
}
