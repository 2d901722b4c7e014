//! The compiled, merged rules inside a `PolicySnapshot`: validated, normalised (domains
//! lower-case, networks parsed) and attributed to the policy each rule came from, so a
//! decision can say which policy made it.
//!
//! Maps are `BTreeMap`s so that the serialised form, and with it the revision hash, does
//! not depend on hash-map iteration order.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::model::{AddressLiterals, CredentialsSecretRef, Mode, SecretKeyRef, TlsMode};
use super::parse::{DomainPattern, SenderPattern};
use super::password::StoredHash;
use super::recipients::RecipientTable;
use super::sealed::Sealed;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// `namespace/name` of every merged policy, in input order.
    pub policies: Vec<String>,
    pub mode: Mode,
    pub trusted_networks: Vec<TrustedNetwork>,
    pub local_domains: BTreeMap<String, LocalDomain>,
    /// Relay domain → the policy that lists it.
    pub relay_domains: BTreeMap<String, String>,
    /// Relay domain → the addresses it accepts (`relayRecipients`); a relay domain not
    /// in this map accepts every address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relay_recipients: BTreeMap<String, RecipientTable>,
    pub users: BTreeMap<String, User>,
    /// In input order; `Rules::route_for` picks the most specific match.
    pub routes: Vec<Route>,
    pub limits: Limits,
    pub retry: Retry,
    /// Absent in snapshots written before it existed: refuse, the default.
    #[serde(default)]
    pub address_literals: AddressLiterals,
    /// The filter pipeline, in order; empty: no checks. Absent in snapshots written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<crate::filter::settings::CheckSettings>,
    /// The block lists asked about untrusted clients; `None`: none. Absent in snapshots
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnsbl: Option<crate::filter::dnsbl::DnsblSettings>,
    /// DKIM and ARC signing keys (references to them: the keys stay in Secrets).
    /// Absent when no policy has `signing:`, and in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<crate::filter::settings::SigningSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedNetwork {
    pub network: IpNet,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalDomain {
    pub delivery: Delivery,
    /// Absent in snapshots written before it existed: every local part.
    #[serde(default, skip_serializing_if = "RecipientTable::is_any")]
    pub recipients: RecipientTable,
    pub policy: String,
}

/// How mail for a local domain is handed over (used by the delivery worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    Lmtp {
        address: String,
    },
    Maildir {
        path: String,
    },
    Webhook {
        url: String,
        #[serde(rename = "signingSecretRef")]
        signing_secret_ref: Option<SecretKeyRef>,
        /// The key itself, sealed by the operator; without it (files) the worker reads
        /// the referenced key from its secrets directory.
        #[serde(
            rename = "signingSecret",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        signing_secret: Option<Sealed>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub password_hash: StoredHash,
    pub allowed_senders: AllowedSenders,
    pub policy: String,
}

/// Which reverse-paths a user may give in MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllowedSenders {
    /// `allowedSenders` was empty or omitted: any sender, as Postfix behaves without
    /// `smtpd_sender_login_maps`.
    Any,
    /// Only addresses matching one of these.
    Only(Vec<SenderPattern>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub domains: Vec<DomainPattern>,
    pub smarthost: Smarthost,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Smarthost {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// The credentials themselves, sealed by the operator; without them (files) the
    /// worker reads the referenced keys from its secrets directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SealedCredentials>,
}

/// A smarthost's username and password, each sealed for that smarthost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedCredentials {
    pub username: Sealed,
    pub password: Sealed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<usize>,
    /// Bytes; `None` means [`DEFAULT_BOUNCE_SIZE_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_size_limit: Option<u64>,
}

/// Postfix's `bounce_size_limit` default: a bounce returns at most this much of the
/// message, so that a forged sender cannot have us mail a large message to a victim.
pub const DEFAULT_BOUNCE_SIZE_LIMIT: u64 = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub max_lifetime_secs: Option<u64>,
}

impl Rules {
    /// The route for a (lower-case) recipient domain: the most specific matching pattern
    /// wins (exact, then the longest `*.` suffix, then `*`); `None` means deliver by MX.
    /// Equal patterns cannot occur: compilation rejects them as a conflict.
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        self.routes
            .iter()
            .flat_map(|r| r.domains.iter().map(move |p| (p, r)))
            .filter(|(p, _)| p.matches(domain))
            .max_by_key(|(p, _)| p.specificity())
            .map(|(_, r)| r)
    }
}

/// What one merged policy contributes to a snapshot, for status reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounts {
    /// `namespace/name`.
    pub policy: String,
    pub users: usize,
    pub local_domains: usize,
    pub relay_domains: usize,
}

impl Rules {
    /// One entry per merged policy, in input order, counting the users and domains that
    /// are attributed to it.
    pub fn counts(&self) -> Vec<PolicyCounts> {
        self.policies
            .iter()
            .map(|policy| {
                let its = |owner: &&String| *owner == policy;
                PolicyCounts {
                    policy: policy.clone(),
                    users: self.users.values().map(|u| &u.policy).filter(its).count(),
                    local_domains: self
                        .local_domains
                        .values()
                        .map(|d| &d.policy)
                        .filter(its)
                        .count(),
                    relay_domains: self.relay_domains.values().filter(its).count(),
                }
            })
            .collect()
    }
}

/// The smaller of two optional limits; a missing limit does not constrain.
pub(crate) fn min_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::PolicyCounts;
    use crate::policy::tests::{BILLING_HASH, EXAMPLE, compile, policy};

    #[test]
    fn counts_attribute_users_and_domains_to_their_policy() {
        let other = policy(
            "ops/extra",
            &format!(
                "  relayDomains: [\"a.example\", \"b.example\"]\n  users:\n    - name: cron\n      passwordHash: \"{BILLING_HASH}\""
            ),
        );
        let empty = policy("ops/empty", "");
        let snapshot = compile(&[&EXAMPLE, &other, &empty]).expect("compiles");
        let counts = |policy: &str, users, local_domains, relay_domains| PolicyCounts {
            policy: policy.to_string(),
            users,
            local_domains,
            relay_domains,
        };
        assert_eq!(
            snapshot.rules().counts(),
            [
                counts("mail/corp", 2, 3, 1),
                counts("ops/extra", 1, 0, 2),
                counts("ops/empty", 0, 0, 0),
            ]
        );
    }
}
