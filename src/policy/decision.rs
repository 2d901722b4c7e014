//! The relay decision for each RCPT and the sender check for each MAIL FROM of an
//! authenticated session, as explained values: Display gives the one line that
//! `sluice policy check` prints, naming the rule and the policy behind it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::model::{AddressLiterals, Mode};
use super::parse::SenderPattern;
use super::recipients::maildir_safe;
use super::rules::{AllowedSenders, Delivery, LocalDomain, TrustedNetwork, User};
use super::snapshot::{PolicySnapshot, normalize_domain};
use crate::smtp::address::{Mailbox, ReversePath, display_reverse_path};

/// What the session knows about its client when it asks for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: IpAddr,
    /// The SASL user name once AUTH succeeded.
    pub authenticated_user: Option<String>,
}

/// Why a recipient is accepted or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The domain is ours.
    LocalDomain { domain: String, policy: String },
    /// The forward-path `<Postmaster>` (RFC 5321 4.1.1.3), which has no domain: it goes
    /// to `postmaster@domain` of the first local domain, as the worker routes it.
    Postmaster { domain: String, policy: String },
    /// `<Postmaster>` with nowhere to deliver it: no local domain, or the first one does
    /// not take `postmaster@` (`550 5.1.1`, rather than a bounce later).
    NoPostmaster { domain: Option<String> },
    /// The domain is ours or one we relay for, but its recipient list does not have the
    /// address: `550 5.1.1`.
    UnknownRecipient {
        address: String,
        table: RecipientTableKind,
        policy: String,
    },
    /// A Maildir domain's local part that cannot name a mailbox directory: `553 5.1.3`.
    UnsafeLocalPart { address: String, policy: String },
    /// We relay for this domain, from anyone.
    RelayDomain { domain: String, policy: String },
    /// A foreign domain, accepted because the session authenticated as `user`.
    AuthenticatedUser {
        domain: String,
        user: String,
        policy: String,
    },
    /// A foreign domain, accepted because the client is in a trusted network. `ip` is the
    /// client address with IPv4-mapped IPv6 unwrapped to IPv4.
    TrustedNetwork {
        domain: String,
        ip: IpAddr,
        network: IpNet,
        policy: String,
    },
    /// A foreign domain, accepted because the policies say `mode: open`.
    OpenRelay {
        domain: String,
        policies: Vec<String>,
    },
    /// A foreign domain and none of the above: `554 5.7.1 Relay access denied`.
    Denied {
        domain: String,
        ip: IpAddr,
        auth: SessionAuth,
    },
    /// The local part routes (`a%b@`, `a!b@`, `"a@b"@`) and the client is neither
    /// authenticated nor in a trusted network: `550 5.7.1`, whatever the domain.
    RoutingDenied { address: String, ip: IpAddr },
    /// The domain is an address literal and no policy allows them: `550 5.7.1`.
    AddressLiteralDenied { domain: String },
}

/// The authentication state behind a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionAuth {
    Unauthenticated,
    /// The session authenticated as a user the current snapshot no longer has (the
    /// policy changed); such a session gets no relay rights from it.
    UnknownUser(String),
}

/// Which recipient list refused an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RecipientTableKind {
    /// A local domain's `recipients`.
    Local,
    /// `relayRecipients`.
    Relay,
}

impl Decision {
    pub fn is_accepted(&self) -> bool {
        !matches!(
            self,
            Decision::Denied { .. }
                | Decision::RoutingDenied { .. }
                | Decision::AddressLiteralDenied { .. }
                | Decision::NoPostmaster { .. }
                | Decision::UnknownRecipient { .. }
                | Decision::UnsafeLocalPart { .. }
        )
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Postmaster { domain, policy } => write!(
                f,
                "accept: <Postmaster> goes to postmaster@{domain}, the first local domain (policy {policy})"
            ),
            Decision::NoPostmaster { domain: None } => f.write_str(
                "reject: user unknown: <Postmaster> has nowhere to go, there is no local domain",
            ),
            Decision::NoPostmaster {
                domain: Some(domain),
            } => write!(
                f,
                "reject: user unknown: <Postmaster> goes to postmaster@{domain}, which its recipients list does not have"
            ),
            Decision::UnknownRecipient {
                address,
                table,
                policy,
            } => {
                let list = match table {
                    RecipientTableKind::Local => "its local domain's recipients",
                    RecipientTableKind::Relay => "relayRecipients",
                };
                write!(
                    f,
                    "reject: user unknown: {address} is not in {list} (policy {policy})"
                )
            }
            Decision::UnsafeLocalPart { address, policy } => write!(
                f,
                "reject: the local part of {address} cannot name a Maildir mailbox (policy {policy})"
            ),
            Decision::LocalDomain { domain, policy } => {
                write!(f, "accept: local domain {domain} (policy {policy})")
            }
            Decision::RelayDomain { domain, policy } => {
                write!(f, "accept: relay domain {domain} (policy {policy})")
            }
            Decision::AuthenticatedUser {
                domain,
                user,
                policy,
            } => {
                write!(
                    f,
                    "accept: authenticated user {user} may relay to {domain} (policy {policy})"
                )
            }
            Decision::TrustedNetwork {
                ip,
                network,
                policy,
                ..
            } => {
                write!(
                    f,
                    "accept: client {ip} in trusted network {network} (policy {policy})"
                )
            }
            Decision::OpenRelay { domain, policies } => {
                write!(
                    f,
                    "accept: mode open relays {domain} for anyone (policy {})",
                    policies.join(", ")
                )
            }
            Decision::Denied { domain, ip, auth } => write!(
                f,
                "reject: relay access denied: {domain} is not a local or relay domain, {auth} and {ip} is not in a trusted network"
            ),
            Decision::RoutingDenied { address, ip } => write!(
                f,
                "reject: {address} has routing characters (% ! @) in its local part, and the session is not authenticated and {ip} is not in a trusted network"
            ),
            Decision::AddressLiteralDenied { domain } => write!(
                f,
                "reject: {domain} is an address literal, and no policy sets addressLiterals: allow"
            ),
        }
    }
}

impl fmt::Display for SessionAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionAuth::Unauthenticated => f.write_str("the session is not authenticated"),
            SessionAuth::UnknownUser(u) => write!(f, "user {u} is not in the current policy"),
        }
    }
}

impl PolicySnapshot {
    /// Decides one recipient: local domain, relay domain, then (for foreign domains) an
    /// authenticated session, a trusted client network or mode open; otherwise denied.
    /// Address-literal domains (`[192.0.2.1]`) are never local, so they count as foreign.
    ///
    /// Local and relay domains with a recipient list refuse addresses not on it, and a
    /// Maildir domain refuses local parts it could not store: what delivery would refuse
    /// is refused here, so that it never becomes a bounce to a possibly forged sender.
    pub fn relay_decision(&self, client: &ClientInfo, recipient: &Mailbox) -> Decision {
        if recipient.domain.is_empty() {
            return self.postmaster_decision();
        }
        if recipient.has_routing_characters() && !self.may_route(client) {
            let ip = client.ip.to_canonical();
            let address = recipient.to_string();
            return Decision::RoutingDenied { address, ip };
        }
        let domain = normalize_domain(&recipient.domain);
        let rules = self.rules();
        if let Some(local) = rules.local_domains.get(&domain) {
            return local_decision(local, recipient, domain);
        }
        if let Some(policy) = rules.relay_domains.get(&domain) {
            let policy = policy.clone();
            return match rules.relay_recipients.get(&domain) {
                Some(table) if !table.accepts(&recipient.local) => Decision::UnknownRecipient {
                    address: recipient.to_string(),
                    table: RecipientTableKind::Relay,
                    policy,
                },
                _ => Decision::RelayDomain { domain, policy },
            };
        }
        if recipient.is_address_literal() && rules.address_literals == AddressLiterals::Refuse {
            return Decision::AddressLiteralDenied { domain };
        }
        self.foreign_decision(client, domain)
    }

    /// Sender-specified routing is taken only from clients the policy vouches for: a
    /// user of the current snapshot, or a trusted network.
    fn may_route(&self, client: &ClientInfo) -> bool {
        let rules = self.rules();
        let user = client
            .authenticated_user
            .as_ref()
            .is_some_and(|name| rules.users.contains_key(name));
        user || self.trusted_network(client.ip).is_some()
    }

    /// `<Postmaster>` goes where `delivery::route` sends it: the first local domain in
    /// the snapshot's order, as `postmaster` there.
    fn postmaster_decision(&self) -> Decision {
        let Some((domain, local)) = self.rules().local_domains.iter().next() else {
            return Decision::NoPostmaster { domain: None };
        };
        let postmaster = Mailbox::new("postmaster", domain.clone());
        match local_decision(local, &postmaster, domain.clone()) {
            Decision::LocalDomain { domain, policy } => Decision::Postmaster { domain, policy },
            _ => Decision::NoPostmaster {
                domain: Some(domain.clone()),
            },
        }
    }

    /// The trusted network `ip` is in, if any. `::ffff:10.1.2.3` is an IPv4 client on a
    /// dual-stack socket: it matches IPv4 networks.
    pub fn trusted_network(&self, ip: IpAddr) -> Option<&TrustedNetwork> {
        let ip = ip.to_canonical();
        self.rules()
            .trusted_networks
            .iter()
            .find(|t| t.network.contains(&ip))
    }

    fn foreign_decision(&self, client: &ClientInfo, domain: String) -> Decision {
        let rules = self.rules();
        let mut auth = SessionAuth::Unauthenticated;
        if let Some(name) = &client.authenticated_user {
            match rules.users.get(name) {
                Some(user) => {
                    let (user, policy) = (name.clone(), user.policy.clone());
                    return Decision::AuthenticatedUser {
                        domain,
                        user,
                        policy,
                    };
                }
                None => auth = SessionAuth::UnknownUser(name.clone()),
            }
        }
        let ip = client.ip.to_canonical();
        if let Some(t) = self.trusted_network(client.ip) {
            return Decision::TrustedNetwork {
                domain,
                ip,
                network: t.network,
                policy: t.policy.clone(),
            };
        }
        if rules.mode == Mode::Open {
            return Decision::OpenRelay {
                domain,
                policies: rules.policies.clone(),
            };
        }
        Decision::Denied { domain, ip, auth }
    }
}

/// A recipient of a local domain: refused when delivery could not take its local part,
/// or when the domain's recipient list does not have it.
fn local_decision(local: &LocalDomain, recipient: &Mailbox, domain: String) -> Decision {
    let policy = local.policy.clone();
    if matches!(local.delivery, Delivery::Maildir { .. }) && !maildir_safe(&recipient.local) {
        return Decision::UnsafeLocalPart {
            address: recipient.to_string(),
            policy,
        };
    }
    if !local.recipients.accepts(&recipient.local) {
        return Decision::UnknownRecipient {
            address: recipient.to_string(),
            table: RecipientTableKind::Local,
            policy,
        };
    }
    Decision::LocalDomain { domain, policy }
}

/// Whether an authenticated user may use a reverse-path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderDecision {
    Allowed {
        user: String,
        sender: String,
        rule: SenderRule,
    },
    NotOwned {
        user: String,
        sender: String,
        reason: NotOwnedReason,
    },
}

/// The rule that allowed a sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderRule {
    /// `<>`: allowed for every user, since applications legitimately send bounces and
    /// DSNs with it, and it claims no one's address (Postfix's sender login checks do not
    /// apply to it either).
    NullSender,
    /// The user has no `allowedSenders` list, which means any sender.
    AnySender { policy: String },
    /// This `allowedSenders` entry matched.
    Listed { entry: String, policy: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NotOwnedReason {
    UnknownUser,
    NotListed { policy: String },
}

impl SenderDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, SenderDecision::Allowed { .. })
    }
}

impl fmt::Display for SenderDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderDecision::Allowed { user, sender, rule } => {
                write!(f, "accept: user {user} may send as {sender} (")?;
                match rule {
                    SenderRule::NullSender => {
                        f.write_str("the null sender is allowed for every user)")
                    }
                    SenderRule::AnySender { policy } => {
                        write!(f, "no allowedSenders restriction, policy {policy})")
                    }
                    SenderRule::Listed { entry, policy } => {
                        write!(f, "allowedSenders entry {entry}, policy {policy})")
                    }
                }
            }
            SenderDecision::NotOwned {
                user,
                sender,
                reason,
            } => match reason {
                NotOwnedReason::UnknownUser => write!(
                    f,
                    "reject: user {user} is not in the current policy and may not send as {sender}"
                ),
                NotOwnedReason::NotListed { policy } => {
                    write!(
                        f,
                        "reject: user {user} may not send as {sender}: no allowedSenders entry matches (policy {policy})"
                    )
                }
            },
        }
    }
}

impl PolicySnapshot {
    /// Whether `user` may give `reverse_path` in MAIL FROM. Addresses compare
    /// case-insensitively in both parts; `@domain` entries cover exactly that domain.
    pub fn sender_decision(&self, user: &str, reverse_path: &ReversePath) -> SenderDecision {
        let sender = display_reverse_path(reverse_path);
        let verdict = match reverse_path {
            None => Ok(SenderRule::NullSender),
            Some(mailbox) => match self.rules().users.get(user) {
                None => Err(NotOwnedReason::UnknownUser),
                Some(u) => owned_by(u, mailbox),
            },
        };
        let user = user.to_string();
        match verdict {
            Ok(rule) => SenderDecision::Allowed { user, sender, rule },
            Err(reason) => SenderDecision::NotOwned {
                user,
                sender,
                reason,
            },
        }
    }
}

/// The rule that lets `user` send as `mailbox`, or why none does.
fn owned_by(user: &User, mailbox: &Mailbox) -> Result<SenderRule, NotOwnedReason> {
    let policy = user.policy.clone();
    let patterns = match &user.allowed_senders {
        AllowedSenders::Any => return Ok(SenderRule::AnySender { policy }),
        AllowedSenders::Only(patterns) => patterns,
    };
    match patterns.iter().find(|p| sender_matches(p, mailbox)) {
        Some(p) => Ok(SenderRule::Listed {
            entry: p.to_string(),
            policy,
        }),
        None => Err(NotOwnedReason::NotListed { policy }),
    }
}

fn sender_matches(pattern: &SenderPattern, mailbox: &Mailbox) -> bool {
    let domain = normalize_domain(&mailbox.domain);
    match pattern {
        SenderPattern::Address { local, domain: d } => {
            *d == domain && *local == mailbox.local.to_lowercase()
        }
        SenderPattern::Domain(d) => *d == domain,
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
