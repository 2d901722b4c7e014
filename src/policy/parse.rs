//! Parsers for the scalar values of a RelayPolicy: domains, domain patterns, sender
//! patterns, networks, hosts, quantities and durations. Each returns the normalised value
//! or a reason an admin can act on; `compile.rs` adds the document and field.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::model::Quantity;

/// A domain, validated and lower-cased. A single trailing dot (the absolute form) is
/// dropped. U-labels are accepted (SMTPUTF8 domains); they compare after Unicode
/// lower-casing, A-labels (`xn--`) after ASCII lower-casing.
pub fn domain(input: &str) -> Result<String, String> {
    let name = input.strip_suffix('.').unwrap_or(input);
    if name.is_empty() {
        return Err("empty domain".into());
    }
    if name.len() > 253 {
        return Err(format!("domain {input:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        check_label(input, label)?;
    }
    if name.parse::<IpAddr>().is_ok() || name.rsplit('.').next().is_some_and(all_digits) {
        return Err(format!("{input:?} is an IP address, not a domain"));
    }
    Ok(name.to_lowercase())
}

fn check_label(input: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("domain {input:?} has an empty label"));
    }
    if label.len() > 63 {
        return Err(format!(
            "domain {input:?} has a label longer than 63 characters"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "domain {input:?} has a label starting or ending with '-'"
        ));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
        return Err(format!(
            "domain {input:?} contains the invalid character {c:?}"
        ));
    }
    Ok(())
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Which recipient domains a route applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// Any subdomain of this domain (`*.example.com`), not the domain itself, as for
    /// wildcard certificates and DNS.
    Subdomains(String),
    /// `*`: every domain.
    Any,
}

impl DomainPattern {
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Subdomains(parent) => domain
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            DomainPattern::Any => true,
        }
    }

    /// Higher is more specific; used to pick the route that fits best.
    pub fn specificity(&self) -> usize {
        match self {
            DomainPattern::Exact(d) => 1000 + d.len(),
            DomainPattern::Subdomains(d) => 1 + d.len(),
            DomainPattern::Any => 0,
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
            DomainPattern::Any => f.write_str("*"),
        }
    }
}

pub fn domain_pattern(input: &str) -> Result<DomainPattern, String> {
    if input == "*" {
        return Ok(DomainPattern::Any);
    }
    if let Some(parent) = input.strip_prefix("*.") {
        return domain(parent).map(DomainPattern::Subdomains);
    }
    if input.contains('*') {
        return Err(format!(
            "{input:?}: a wildcard is only allowed as \"*\" or a leading \"*.\""
        ));
    }
    domain(input).map(DomainPattern::Exact)
}

/// One entry of a user's `allowedSenders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderPattern {
    /// A full address; both parts stored lower-case and compared case-insensitively,
    /// which is what admins expect even though RFC 5321 leaves local parts case-sensitive.
    Address { local: String, domain: String },
    /// `@domain`: any address at exactly this domain.
    Domain(String),
}

impl std::fmt::Display for SenderPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SenderPattern::Address { local, domain } => write!(f, "{local}@{domain}"),
            SenderPattern::Domain(d) => write!(f, "@{d}"),
        }
    }
}

pub fn sender_pattern(input: &str) -> Result<SenderPattern, String> {
    let Some((local, dom)) = input.rsplit_once('@') else {
        return Err(format!("{input:?} is neither an address nor @domain"));
    };
    let dom = domain(dom)?;
    if local.is_empty() {
        return Ok(SenderPattern::Domain(dom));
    }
    if local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{input:?}: the local part contains whitespace"));
    }
    Ok(SenderPattern::Address {
        local: local.to_lowercase(),
        domain: dom,
    })
}

/// A trusted network: a CIDR, or a bare address meaning a single host. A CIDR with host
/// bits set is refused rather than truncated: `10.1.2.3/8` may well have been meant as
/// one host, and silently trusting 16 million addresses is the wrong guess.
pub fn network(input: &str) -> Result<IpNet, String> {
    if let Ok(net) = input.parse::<IpNet>() {
        let base = net.trunc();
        if base != net {
            return Err(format!("{input:?} has host bits set; did you mean {base}?"));
        }
        return Ok(net);
    }
    match input.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!(
            "{input:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"
        )),
    }
}

/// A host to connect to: a domain or an IP address (IPv6 optionally in brackets).
pub fn host(input: &str) -> Result<String, String> {
    let bare = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(input);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    domain(input)
}

/// An LMTP address: `host:port`, `[v6]:port`, or the absolute path of a Unix socket.
pub fn lmtp_address(input: &str) -> Result<(), String> {
    if input.starts_with('/') {
        return Ok(());
    }
    let Some((h, port)) = input.rsplit_once(':') else {
        return Err(format!(
            "{input:?} is neither host:port nor an absolute socket path"
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => host(h).map(|_| ()),
        _ => Err(format!("{input:?}: {port:?} is not a port number")),
    }
}

pub fn webhook_url(input: &str) -> Result<(), String> {
    let rest = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!("{input:?} is not an http:// or https:// URL")),
    }
}

/// A size in bytes, as a number or a quantity string (see [`crate::units::parse_size`]).
pub fn quantity(q: &Quantity) -> Result<u64, String> {
    match q {
        Quantity::Number(n) => Ok(*n),
        Quantity::Text(t) => crate::units::parse_size(t),
    }
}

/// A duration in whole seconds (see [`crate::units::parse_duration`]).
pub fn duration_secs(input: &str) -> Result<u64, String> {
    crate::units::parse_duration(input).map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_and_validated() {
        assert_eq!(domain("Corp.Example.").unwrap(), "corp.example");
        assert_eq!(
            domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(domain("BÜCHER.example").unwrap(), "bücher.example");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a b",
            "1.2.3.4",
            "[1.2.3.4]",
            "*.x",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(domain(&format!("{}.example", "a".repeat(64))).is_err());
    }

    #[test]
    fn domain_patterns_match_as_documented() {
        let exact = domain_pattern("Partner.Example").unwrap();
        assert!(exact.matches("partner.example"));
        assert!(!exact.matches("mx.partner.example"));
        let sub = domain_pattern("*.example.com").unwrap();
        assert!(sub.matches("a.example.com") && sub.matches("a.b.example.com"));
        assert!(!sub.matches("example.com") && !sub.matches("badexample.com"));
        assert!(domain_pattern("*").unwrap().matches("anything.example"));
        for bad in ["**", "a.*.com", "*example.com", "*.", "ex*ample.com"] {
            assert!(domain_pattern(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(exact.specificity() > sub.specificity());
        assert!(sub.specificity() > DomainPattern::Any.specificity());
    }

    #[test]
    fn sender_patterns() {
        assert_eq!(
            sender_pattern("Billing@Corp.Example").unwrap(),
            SenderPattern::Address {
                local: "billing".into(),
                domain: "corp.example".into()
            }
        );
        assert_eq!(
            sender_pattern("@Corp.Example").unwrap(),
            SenderPattern::Domain("corp.example".into())
        );
        for bad in ["billing", "a b@corp.example", "a@", "@", "a@bad_domain"] {
            assert!(sender_pattern(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn networks() {
        assert_eq!(network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(network("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(network("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            network("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        let err = network("10.1.2.3/8").unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        for bad in ["10.0.0.0/33", "example.com", "", "10.0.0/8"] {
            assert!(network(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn hosts_and_addresses() {
        assert_eq!(host("MX.Example").unwrap(), "mx.example");
        assert_eq!(host("[2001:db8::1]").unwrap(), "2001:db8::1");
        assert!(host("bad host").is_err());
        assert!(lmtp_address("dovecot.mail.svc:24").is_ok());
        assert!(lmtp_address("[2001:db8::1]:24").is_ok());
        assert!(lmtp_address("/run/dovecot/lmtp").is_ok());
        for bad in ["dovecot", "dovecot:0", "dovecot:lmtp", "bad host:24"] {
            assert!(lmtp_address(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(webhook_url("https://hooks.example/in").is_ok());
        for bad in ["ftp://x", "https://", "http:///x", "hooks.example"] {
            assert!(webhook_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn quantities() {
        let q = |s: &str| quantity(&Quantity::Text(s.into()));
        assert_eq!(q("25Mi").unwrap(), 25 * 1024 * 1024);
        assert_eq!(q("10M").unwrap(), 10_000_000);
        assert_eq!(q("1048576").unwrap(), 1_048_576);
        assert_eq!(q("1k").unwrap(), 1000);
        assert_eq!(quantity(&Quantity::Number(42)).unwrap(), 42);
        for bad in ["", "Mi", "10MB", "1.5Mi", "-1", "10 K", "99999999999Ei"] {
            assert!(q(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("5d").unwrap(), 5 * 86_400);
        assert_eq!(duration_secs("12h").unwrap(), 12 * 3_600);
        assert_eq!(duration_secs("30m").unwrap(), 1_800);
        assert_eq!(duration_secs("1d12h").unwrap(), 86_400 + 12 * 3_600);
        assert_eq!(duration_secs("1w").unwrap(), 604_800);
        for bad in [
            "",
            "5",
            "d",
            "5x",
            "5 d",
            "5dd",
            "1é",
            "99999999999999999999s",
        ] {
            assert!(duration_secs(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
