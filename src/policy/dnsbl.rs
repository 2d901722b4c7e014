//! The `dnsbl:` section of a RelayPolicy: DNS block lists asked about clients that are
//! neither authenticated nor in a trusted network, at their first RCPT. Its schema
//! ([`DnsblSpec`]) and its compilation into the [`DnsblSettings`] the ingress runs.
//!
//! ```yaml
//! dnsbl:
//!   zones:
//!     - zone: zen.spamhaus.org
//!       weight: 2                                 # default 1
//!       answers: ["127.0.0.2", "127.0.0.4/30"]    # only these codes count as listed
//!     - zone: bl.spamcop.net
//!   threshold: 2        # refused when the weights of the listing zones reach it; default 1
//!   timeout: 5s         # the whole lookup round; default 5s, at most 30s
//!   failMode: open      # default: a list that cannot be asked does not list
//!   exempt: [authenticated, trusted-networks]     # the default
//! ```
//!
//! Several policies: at most one may have a `dnsbl:` section unless they say the same
//! (`merge.rs`).

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use super::error::{Location, PolicyError};
use super::parse;
use crate::filter::dnsbl::{DnsblSettings, ZoneSettings};
use crate::filter::scan::FailMode;
use crate::filter::settings::Exemption;

/// The most zones one policy asks: each is a query per client.
pub const MAX_ZONES: usize = 16;
pub const MAX_WEIGHT: u32 = 100;
/// The most return-code networks of one zone.
pub const MAX_ANSWERS: usize = 32;
/// The longest zone: its IPv6 query name adds 64 octets and must stay within 253.
pub const MAX_ZONE_LEN: usize = 189;
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The client waits for its RCPT reply that long at worst.
pub const MAX_TIMEOUT_MS: u64 = 30_000;
const MIN_TIMEOUT_MS: u64 = 100;

/// The lists, how their answers add up, and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsblSpec {
    /// The lists, asked at once.
    #[schemars(length(min = 1, max = 16))]
    pub zones: Vec<DnsblZoneSpec>,
    /// The sum of the weights of listing zones from which a client is refused with
    /// `554 5.7.1`; default 1 (any one list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 1600))]
    pub threshold: Option<u32>,
    /// How long the lookups of one client may take together: `5s` (the default),
    /// `1500ms`; at most 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), regex(pattern = r"^([0-9]+(ms|[dhms]))+$"))]
    pub timeout: Option<String>,
    /// When lists give no answer (timeout, SERVFAIL, an error code such as
    /// 127.255.255.254): `open` (default) counts them as not listing; `closed` answers
    /// `451 4.7.1` when they could have reached the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailMode>,
    /// Clients that are not asked about; default both, `[]` asks about every client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2))]
    pub exempt: Option<Vec<Exemption>>,
}

/// One list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsblZoneSpec {
    /// The list's DNS zone: `zen.spamhaus.org`.
    #[schemars(length(min = 1, max = 190), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub zone: String,
    /// What a listing here adds towards the threshold; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 100))]
    pub weight: Option<u32>,
    /// Return codes that count as a listing (addresses or networks in 127.0.0.0/8);
    /// default: any code in 127.0.0.0/8 outside the error range 127.255.255.0/24.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 18)))]
    pub answers: Vec<String>,
}

/// Validates the section; errors name `spec.dnsbl....`.
pub fn compile(at: &Location, spec: &DnsblSpec) -> Result<DnsblSettings, PolicyError> {
    let invalid = |field: String, reason: String| PolicyError::InvalidField {
        at: at.clone(),
        field,
        reason,
    };
    if spec.zones.is_empty() || spec.zones.len() > MAX_ZONES {
        return Err(invalid(
            "spec.dnsbl.zones".into(),
            format!("{} zones, from 1 to {MAX_ZONES}", spec.zones.len()),
        ));
    }
    let mut zones: Vec<ZoneSettings> = Vec::with_capacity(spec.zones.len());
    for (i, z) in spec.zones.iter().enumerate() {
        let field = |name: &str| format!("spec.dnsbl.zones[{i}].{name}");
        let zone = zone_name(&z.zone).map_err(|r| invalid(field("zone"), r))?;
        if zones.iter().any(|known| known.zone == zone) {
            return Err(invalid(field("zone"), format!("{zone} is listed twice")));
        }
        let weight = z.weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(invalid(field("weight"), format!("from 1 to {MAX_WEIGHT}")));
        }
        if z.answers.len() > MAX_ANSWERS {
            return Err(invalid(field("answers"), format!("at most {MAX_ANSWERS}")));
        }
        let answers = z
            .answers
            .iter()
            .enumerate()
            .map(|(j, a)| return_codes(a).map_err(|r| invalid(field(&format!("answers[{j}]")), r)))
            .collect::<Result<Vec<_>, _>>()?;
        zones.push(ZoneSettings {
            zone,
            weight,
            answers,
        });
    }
    let threshold = spec.threshold.unwrap_or(1);
    reachable(threshold, &zones).map_err(|r| invalid("spec.dnsbl.threshold".into(), r))?;
    let timeout_ms = match &spec.timeout {
        None => DEFAULT_TIMEOUT_MS,
        Some(text) => crate::units::parse_duration(text)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| invalid("spec.dnsbl.timeout".into(), e))?,
    };
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(invalid(
            "spec.dnsbl.timeout".into(),
            "from 100ms to 30s: the client is waiting for its RCPT reply".into(),
        ));
    }
    let mut exempt = spec
        .exempt
        .clone()
        .unwrap_or_else(|| vec![Exemption::Authenticated, Exemption::TrustedNetworks]);
    exempt.sort();
    exempt.dedup();
    Ok(DnsblSettings {
        zones,
        threshold,
        timeout_ms,
        fail_mode: spec.fail_mode.unwrap_or(FailMode::Open),
        exempt,
    })
}

/// Checks settings read from elsewhere (the NATS KV snapshot) as compilation checked
/// them: they decide which names every connection makes the ingress look up.
pub fn check(settings: &DnsblSettings) -> Result<(), String> {
    let zones = &settings.zones;
    if zones.is_empty() || zones.len() > MAX_ZONES {
        return Err(format!("dnsbl.zones: {} zones", zones.len()));
    }
    for (i, z) in zones.iter().enumerate() {
        let fail = |reason: String| format!("dnsbl.zones[{i}]: {reason}");
        if zone_name(&z.zone).as_deref() != Ok(z.zone.as_str()) {
            return Err(fail(format!(
                "{:?} is not a zone in its compiled form",
                z.zone
            )));
        }
        if zones[..i].iter().any(|known| known.zone == z.zone) {
            return Err(fail("listed twice".into()));
        }
        if z.weight == 0 || z.weight > MAX_WEIGHT {
            return Err(fail("weight out of range".into()));
        }
        if z.answers.len() > MAX_ANSWERS || z.answers.iter().any(|n| !in_loopback(n)) {
            return Err(fail("answers: too many, or outside 127.0.0.0/8".into()));
        }
    }
    reachable(settings.threshold, zones).map_err(|r| format!("dnsbl.threshold: {r}"))?;
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&settings.timeout_ms) {
        return Err("dnsbl.timeout: out of range".into());
    }
    if settings.exempt.len() > 2 {
        return Err("dnsbl.exempt: at most two".into());
    }
    Ok(())
}

/// A zone as it is stored: an ASCII domain, lower case, without the final dot, short
/// enough for the longest query name.
fn zone_name(text: &str) -> Result<String, String> {
    if !text.is_ascii() {
        return Err(format!("{text:?}: write the zone in ASCII (A-labels)"));
    }
    let zone = parse::domain(text)?;
    if zone.len() > MAX_ZONE_LEN {
        return Err(format!(
            "{text:?} is longer than {MAX_ZONE_LEN} characters: an IPv6 query name in it would exceed 253"
        ));
    }
    Ok(zone)
}

/// `127.0.0.2` or `127.0.0.4/30`, inside 127.0.0.0/8.
fn return_codes(text: &str) -> Result<Ipv4Net, String> {
    let net = match text.parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) => text
            .parse::<Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|_| format!("{text:?} is not an IPv4 address or network"))?,
    };
    if net.trunc() != net {
        return Err(format!("{text:?} has host bits set; write {}", net.trunc()));
    }
    if !in_loopback(&net) {
        return Err(format!(
            "{text:?} is outside 127.0.0.0/8, where lists answer"
        ));
    }
    Ok(net)
}

fn in_loopback(net: &Ipv4Net) -> bool {
    net.prefix_len() >= 8 && net.network().octets()[0] == 127 && net.trunc() == *net
}

fn reachable(threshold: u32, zones: &[ZoneSettings]) -> Result<(), String> {
    let total: u32 = zones.iter().map(|z| z.weight).sum();
    if threshold == 0 || threshold > total {
        return Err(format!(
            "{threshold}: from 1 to {total}, the weights of all zones together"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "dnsbl_tests.rs"]
mod tests;
