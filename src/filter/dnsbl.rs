//! DNS block lists (DNSBL, RFC 5782) for clients that are neither authenticated nor in a
//! trusted network: the compiled settings of a policy's `dnsbl:` ([`DnsblSettings`]),
//! the query name of a client address in a zone, the classification of a list's
//! answer, the verdict of all zones against the threshold, the reply a listed client
//! gets, and the [`Cache`] of answers by their TTL that all sessions share.
//!
//! Free of I/O: the ingress asks DNS (`ingress::dnsbl`) and feeds the answers in here.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::scan::FailMode;
use super::settings::Exemption;
use crate::envelope::SenderTrust;
use crate::smtp::reply::Reply;
use crate::smtp::session::{ClientVerdict, Refusal};

/// The longest a listing or a clear answer is believed without asking again, whatever
/// the record's TTL says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3_600);
/// How long "not listed" is believed when the list's answer carries no SOA to say.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Entries in the cache of one process: about 100 bytes each.
pub const MAX_CACHE_ENTRIES: usize = 100_000;
/// The most octets of zone names a refusal lists; beyond that the reply says how many
/// more there were.
const MAX_REPLY_ZONES: usize = 300;

/// A policy's `dnsbl:` as compiled (see `policy::dnsbl`): checked there, so using it
/// here cannot fail on its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsblSettings {
    pub zones: Vec<ZoneSettings>,
    /// The sum of the weights of listing zones from which a client is refused.
    pub threshold: u32,
    /// The whole lookup round, all zones at once.
    pub timeout_ms: u64,
    pub fail_mode: FailMode,
    pub exempt: Vec<Exemption>,
}

/// One list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSettings {
    /// Lower case, without the trailing dot.
    pub zone: String,
    pub weight: u32,
    /// When not empty, only answers in one of these count as a listing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Ipv4Net>,
}

impl DnsblSettings {
    /// Whether a sender of this trust skips the lists.
    pub fn exempts(&self, trust: SenderTrust) -> bool {
        self.exempt.iter().any(|e| match e {
            Exemption::Authenticated => trust == SenderTrust::Authenticated,
            Exemption::TrustedNetworks => trust == SenderTrust::TrustedNetwork,
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// One line for `sluice policy check`.
    pub fn describe(&self) -> String {
        let zones: Vec<String> = self
            .zones
            .iter()
            .map(|z| format!("{} (weight {})", z.zone, z.weight))
            .collect();
        let fail = match self.fail_mode {
            FailMode::Open => "fail open",
            FailMode::Closed => "fail closed",
        };
        format!(
            "{}; threshold {}; {fail}, timeout {} ms",
            zones.join(", "),
            self.threshold,
            self.timeout_ms
        )
    }
}

/// The name to look up for `ip` in `zone` (RFC 5782 2.1, 2.4): the IPv4 octets or the
/// 32 IPv6 nibbles in reverse order, then the zone. An IPv4-mapped IPv6 address is
/// asked as the IPv4 address it is.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                name.push(nibble(byte & 0x0f));
                name.push('.');
                name.push(nibble(byte >> 4));
                name.push('.');
            }
            name.push_str(zone);
            name
        }
    }
}

fn nibble(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// What one zone said about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneAnswer {
    /// Listed, with the return code that said so.
    Listed(Ipv4Addr),
    /// NXDOMAIN, NODATA, or only codes outside the zone's `answers`.
    Clear,
    /// No verdict: the list could not be asked, or answered with an error code.
    Error(ZoneError),
}

/// Why a zone gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// 127.255.255.0/24: the list refuses to answer (Spamhaus: .252 a typo in the zone,
    /// .254 a query through a public resolver, .255 too many queries).
    #[error("the list answered with its error code {0}")]
    ListError(Ipv4Addr),
    /// An address outside 127.0.0.0/8: a resolver that makes up answers, or a zone that
    /// is no block list (any more).
    #[error("the answer {0} is not a list's return code")]
    NotAReturnCode(Ipv4Addr),
    /// A timeout, SERVFAIL or network error; no DNS at all.
    #[error("the lookup failed: {0}")]
    Lookup(String),
    #[error("no answer within the time limit")]
    Timeout,
}

impl ZoneAnswer {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ZoneAnswer::Listed(_) => "listed",
            ZoneAnswer::Clear => "clear",
            ZoneAnswer::Error(_) => "error",
        }
    }
}

/// Classifies the A records of an answer; an empty one is NODATA. An error code
/// anywhere in the answer makes the answer an error: the list did not judge.
pub fn classify(addresses: &[Ipv4Addr], answers: &[Ipv4Net]) -> ZoneAnswer {
    let loopback = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default();
    let errors = Ipv4Net::new(Ipv4Addr::new(127, 255, 255, 0), 24).unwrap_or_default();
    if let Some(code) = addresses.iter().find(|a| errors.contains(*a)) {
        return ZoneAnswer::Error(ZoneError::ListError(*code));
    }
    if let Some(other) = addresses.iter().find(|a| !loopback.contains(*a)) {
        return ZoneAnswer::Error(ZoneError::NotAReturnCode(*other));
    }
    let counts = |a: &&Ipv4Addr| answers.is_empty() || answers.iter().any(|n| n.contains(*a));
    match addresses.iter().find(counts) {
        Some(code) => ZoneAnswer::Listed(*code),
        None => ZoneAnswer::Clear,
    }
}

/// The verdict on a client from every zone's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not listed enough, or the lists could not be asked and the fail mode is open.
    Clear,
    /// Listed by these zones (in policy order), whose weights reach the threshold.
    Listed(Vec<String>),
    /// Fail mode closed, and the zones that gave no verdict could have reached the
    /// threshold: the client tries again later.
    Unavailable,
}

impl Verdict {
    /// What the SMTP session makes of the verdict on the client at `ip`: the reply every
    /// RCPT of the session hears, with the metric label and the log's detail.
    pub fn for_session(&self, ip: IpAddr) -> ClientVerdict {
        let refusal = match self {
            Verdict::Clear => return ClientVerdict::Clear,
            Verdict::Listed(zones) => Refusal {
                reason: "dnsbl",
                detail: format!("client [{ip}] listed by {}", zones.join(", ")),
                reply: listed_reply(ip, zones),
            },
            Verdict::Unavailable => Refusal {
                reason: "dnsbl_unavailable",
                detail: format!("client [{ip}]: the block lists gave no verdict, failing closed"),
                reply: unavailable_reply(),
            },
        };
        ClientVerdict::Refused(refusal)
    }
}

/// Weighs the answers, one per zone of `settings` in their order.
pub fn verdict(settings: &DnsblSettings, answers: &[ZoneAnswer]) -> Verdict {
    let (mut listed, mut failed) = (0u64, 0u64);
    let mut zones = Vec::new();
    for (zone, answer) in settings.zones.iter().zip(answers) {
        match answer {
            ZoneAnswer::Listed(_) => {
                listed += u64::from(zone.weight);
                zones.push(zone.zone.clone());
            }
            ZoneAnswer::Error(_) => failed += u64::from(zone.weight),
            ZoneAnswer::Clear => {}
        }
    }
    let threshold = u64::from(settings.threshold.max(1));
    if listed >= threshold {
        Verdict::Listed(zones)
    } else if settings.fail_mode == FailMode::Closed && listed + failed >= threshold {
        Verdict::Unavailable
    } else {
        Verdict::Clear
    }
}

/// `554 5.7.1` naming the client and the lists (ours, from the policy; the lists' TXT
/// reasons are not repeated), as Postfix words it, bounded in length.
pub fn listed_reply(ip: IpAddr, zones: &[String]) -> Reply {
    let mut named = String::new();
    let mut shown = 0;
    for zone in zones {
        if !named.is_empty() && named.len() + zone.len() > MAX_REPLY_ZONES {
            break;
        }
        if !named.is_empty() {
            named.push_str(", ");
        }
        named.push_str(zone);
        shown += 1;
    }
    if shown < zones.len() {
        named.push_str(&format!(" and {} more", zones.len() - shown));
    }
    Reply::new(
        554,
        "5.7.1",
        format!("Service unavailable; client [{ip}] blocked using {named}"),
    )
}

/// `451 4.7.1`: the lists could not be asked and the policy fails closed.
pub fn unavailable_reply() -> Reply {
    Reply::new(451, "4.7.1", "Client check unavailable, try again later")
}

/// How long an answer is believed: the smallest TTL of the records that made it, or for
/// a negative answer the SOA's (RFC 2308 5: the smaller of its TTL and MINIMUM),
/// [`DEFAULT_NEGATIVE_TTL`] without one; never beyond [`MAX_CACHE_TTL`].
pub fn answer_ttl(record_ttls: &[u32], negative_soa: Option<(u32, u32)>) -> Duration {
    let secs = match (record_ttls.iter().min(), negative_soa) {
        (Some(ttl), _) => u64::from(*ttl),
        (None, Some((ttl, minimum))) => u64::from(ttl.min(minimum)),
        (None, None) => DEFAULT_NEGATIVE_TTL.as_secs(),
    };
    Duration::from_secs(secs).min(MAX_CACHE_TTL)
}

type Key = (String, IpAddr);

/// Answers by (zone, client), until their TTL runs out, for every session of the
/// process. Errors are not kept: the next session asks again. Bounded: when full, the
/// entry that expires first goes (expired ones first of all).
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, (ZoneAnswer, Instant, u64)>,
    by_expiry: BTreeSet<(Instant, u64, Key)>,
    capacity: usize,
    sequence: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(MAX_CACHE_ENTRIES)
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            sequence: 0,
        }
    }

    /// The answer of `zone` about `ip` while it is fresh at `now`.
    pub fn get(&mut self, zone: &str, ip: IpAddr, now: Instant) -> Option<ZoneAnswer> {
        let key = (zone.to_string(), ip);
        let (answer, expires, _) = self.entries.get(&key)?;
        if *expires > now {
            return Some(answer.clone());
        }
        self.remove(&key);
        None
    }

    /// Keeps an answer for `ttl` from `now`; errors and a zero TTL are not kept.
    pub fn insert(
        &mut self,
        zone: &str,
        ip: IpAddr,
        answer: ZoneAnswer,
        ttl: Duration,
        now: Instant,
    ) {
        if matches!(answer, ZoneAnswer::Error(_)) || ttl.is_zero() {
            return;
        }
        let key = (zone.to_string(), ip);
        self.remove(&key);
        self.evict_expired(now);
        while self.entries.len() >= self.capacity {
            let Some((_, _, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let expires = now + ttl.min(MAX_CACHE_TTL);
        self.sequence += 1;
        self.by_expiry.insert((expires, self.sequence, key.clone()));
        self.entries.insert(key, (answer, expires, self.sequence));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn remove(&mut self, key: &Key) {
        if let Some((_, expires, sequence)) = self.entries.remove(key) {
            self.by_expiry.remove(&(expires, sequence, key.clone()));
        }
    }

    fn evict_expired(&mut self, now: Instant) {
        while let Some((expires, _, _)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            if let Some((_, _, key)) = self.by_expiry.pop_first() {
                self.entries.remove(&key);
            }
        }
    }
}

/// At most one warning per zone per minute about its error codes: a list that refuses
/// every query would otherwise write a line per connection.
#[derive(Debug, Default)]
pub struct WarnLimiter {
    last: HashMap<String, Instant>,
}

impl WarnLimiter {
    pub const INTERVAL: Duration = Duration::from_secs(60);

    /// Whether to warn about `zone` now; if so, the next is a minute away.
    pub fn allow(&mut self, zone: &str, now: Instant) -> bool {
        if let Some(last) = self.last.get(zone)
            && now.saturating_duration_since(*last) < Self::INTERVAL
        {
            return false;
        }
        // Zones come from the policy (16 at most), but policies change: forget what is
        // past its minute before the map can grow.
        if self.last.len() >= 1_024 {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < Self::INTERVAL);
        }
        self.last.insert(zone.to_string(), now);
        true
    }
}

#[cfg(test)]
#[path = "dnsbl_tests.rs"]
mod tests;
