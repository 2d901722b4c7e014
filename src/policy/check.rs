//! Checking a compiled snapshot that was read from elsewhere (the NATS KV bucket, an
//! object of the policy object store) as its compilation checked it: a snapshot is only
//! JSON there, and whoever can write the bucket could otherwise hand every pod a
//! password hash that allocates gigabytes per AUTH, a trusted network with host bits, a
//! domain that never matches, or a limit of zero. Each value goes back through the parser
//! compilation uses (`parse.rs`, `password.rs`) and must come out as it is stored.

use super::parse;
use super::password::validate_hash;
use super::rules::{AllowedSenders, Delivery, Route, Rules};

/// The longest `namespace/name` a Kubernetes object can have (253 + 1 + 253), and the
/// longest revision (a hex SHA-256).
const MAX_POLICY_ID: usize = 507;
const REVISION_LEN: usize = 64;

/// The first problem found, naming the part of the snapshot that has it.
pub(super) fn check(revision: &str, rules: &Rules) -> Result<(), String> {
    if revision.len() != REVISION_LEN || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("revision: not a hex SHA-256".into());
    }
    for (i, policy) in rules.policies.iter().enumerate() {
        policy_id(policy).map_err(|r| format!("policies[{i}]: {r}"))?;
    }
    for (i, trusted) in rules.trusted_networks.iter().enumerate() {
        let text = trusted.network.to_string();
        same(parse::network(&text), &trusted.network)
            .map_err(|r| format!("trustedNetworks[{i}]: {r}"))?;
    }
    for (name, local) in &rules.local_domains {
        same(parse::domain(name), name).map_err(|r| format!("localDomains {name:?}: {r}"))?;
        delivery(&local.delivery).map_err(|r| format!("localDomains {name:?}: {r}"))?;
    }
    for name in rules.relay_domains.keys() {
        same(parse::domain(name), name).map_err(|r| format!("relayDomains {name:?}: {r}"))?;
    }
    for (name, user) in &rules.users {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("users {name:?}: not a user name"));
        }
        validate_hash(user.password_hash.as_str()).map_err(|r| format!("users {name:?}: {r}"))?;
        if let AllowedSenders::Only(patterns) = &user.allowed_senders {
            for pattern in patterns {
                let text = pattern.to_string();
                same(parse::sender_pattern(&text), pattern)
                    .map_err(|r| format!("users {name:?}: allowedSenders: {r}"))?;
            }
        }
    }
    for (i, route) in rules.routes.iter().enumerate() {
        self::route(route).map_err(|r| format!("routes[{i}]: {r}"))?;
    }
    super::filters::check(&rules.filters)?;
    if let Some(dnsbl) = &rules.dnsbl {
        super::dnsbl::check(dnsbl)?;
    }
    super::signing::check(rules.signing.as_ref())?;
    let positive = |v: Option<u64>| v != Some(0);
    if !positive(rules.limits.max_message_size)
        || !positive(rules.limits.max_recipients.map(|n| n as u64))
        || !positive(rules.retry.max_lifetime_secs)
    {
        return Err("limits and retry.maxLifetime must be greater than zero".into());
    }
    Ok(())
}

/// `parsed` must be `stored`: a value the parser normalises differently was not compiled.
fn same<T: PartialEq + std::fmt::Debug>(
    parsed: Result<T, String>,
    stored: &T,
) -> Result<(), String> {
    match parsed? {
        ref value if value == stored => Ok(()),
        value => Err(format!("{stored:?} is not in its compiled form {value:?}")),
    }
}

fn policy_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_POLICY_ID || id.chars().any(char::is_control) {
        return Err("not a policy name".into());
    }
    Ok(())
}

fn delivery(delivery: &Delivery) -> Result<(), String> {
    match delivery {
        Delivery::Lmtp { address } => parse::lmtp_address(address),
        Delivery::Maildir { path } if path.trim().is_empty() || path.contains('\0') => {
            Err("maildir.path: empty or with a NUL".into())
        }
        Delivery::Maildir { .. } => Ok(()),
        Delivery::Webhook {
            url,
            signing_secret_ref,
            ..
        } => {
            parse::webhook_url(url)?;
            match signing_secret_ref {
                Some(r) if r.name.trim().is_empty() || r.key.trim().is_empty() => {
                    Err("webhook.signingSecretRef: empty name or key".into())
                }
                _ => Ok(()),
            }
        }
    }
}

fn route(route: &Route) -> Result<(), String> {
    if route.domains.is_empty() {
        return Err("no domain pattern".into());
    }
    for pattern in &route.domains {
        same(parse::domain_pattern(&pattern.to_string()), pattern)?;
    }
    policy_id(&route.policy)?;
    let smarthost = &route.smarthost;
    same(parse::host(&smarthost.host), &smarthost.host)?;
    if smarthost.port == 0 {
        return Err("smarthost.port: 0".into());
    }
    if let Some(c) = &smarthost.credentials_secret_ref
        && [&c.name, &c.username_key, &c.password_key]
            .iter()
            .any(|v| v.trim().is_empty())
    {
        return Err("smarthost.credentialsSecretRef: an empty name or key".into());
    }
    Ok(())
}
