//! Merging compiled documents into one rule set. Lists are unions; anything two policies
//! could say differently about one item is a conflict and an error, never a silent pick:
//!
//! - trusted networks, relay domains: union (duplicates are harmless);
//! - local domains: union; one domain with two different deliveries is a conflict;
//! - a domain both local and relay is a conflict (the decision order would hide one);
//! - users: union; the same user name twice is a conflict;
//! - routes: in input order; the same domain pattern in two routes is a conflict;
//! - limits and retry lifetime: the smallest value of each;
//! - mode: all documents must agree (see `PolicyError::ModeConflict`).

use std::collections::BTreeMap;

use super::compile::CompiledDoc;
use super::error::{Location, PolicyError};
use super::model::Mode;
use super::parse::DomainPattern;
use super::rules::{LocalDomain, Rules, TrustedNetwork, min_limit};

fn conflict(what: String, first: &Location, second: &Location) -> PolicyError {
    PolicyError::Conflict {
        what,
        first: first.clone(),
        second: second.clone(),
    }
}

/// Merges documents (at least one) in input order.
pub fn merge(docs: Vec<CompiledDoc>) -> Result<Rules, PolicyError> {
    check_policy_names(&docs)?;
    let mut rules = Rules {
        policies: docs.iter().map(|d| d.id.clone()).collect(),
        mode: docs.first().map(|d| d.mode).unwrap_or_default(),
        trusted_networks: Vec::new(),
        local_domains: BTreeMap::new(),
        relay_domains: BTreeMap::new(),
        users: BTreeMap::new(),
        routes: Vec::new(),
        limits: Default::default(),
        retry: Default::default(),
    };
    let mut origins = Origins::default();
    for doc in docs {
        merge_mode(&mut origins, &doc)?;
        merge_domains(&mut rules, &mut origins, &doc)?;
        merge_users_and_routes(&mut rules, &mut origins, &doc)?;
        for network in &doc.networks {
            if !rules.trusted_networks.iter().any(|t| t.network == *network) {
                rules.trusted_networks.push(TrustedNetwork {
                    network: *network,
                    policy: doc.id.clone(),
                });
            }
        }
        rules.limits.max_message_size =
            min_limit(rules.limits.max_message_size, doc.limits.max_message_size);
        rules.limits.max_recipients =
            min_limit(rules.limits.max_recipients, doc.limits.max_recipients);
        rules.retry.max_lifetime_secs =
            min_limit(rules.retry.max_lifetime_secs, doc.retry.max_lifetime_secs);
    }
    Ok(rules)
}

/// Where each merged item was first seen, to name both sides of a conflict.
#[derive(Default)]
struct Origins {
    mode: Option<(Location, Mode)>,
    local: BTreeMap<String, Location>,
    relay: BTreeMap<String, Location>,
    users: BTreeMap<String, Location>,
    patterns: BTreeMap<DomainPattern, Location>,
}

fn check_policy_names(docs: &[CompiledDoc]) -> Result<(), PolicyError> {
    let mut seen: BTreeMap<&str, &Location> = BTreeMap::new();
    for doc in docs {
        if let Some(first) = seen.insert(&doc.id, &doc.at) {
            return Err(conflict(
                format!("policy {} is defined twice", doc.id),
                first,
                &doc.at,
            ));
        }
    }
    Ok(())
}

fn merge_mode(origins: &mut Origins, doc: &CompiledDoc) -> Result<(), PolicyError> {
    match &origins.mode {
        None => origins.mode = Some((doc.at.clone(), doc.mode)),
        Some((first, first_mode)) if *first_mode != doc.mode => {
            return Err(PolicyError::ModeConflict {
                first: first.clone(),
                first_mode: *first_mode,
                second: doc.at.clone(),
                second_mode: doc.mode,
            });
        }
        Some(_) => {}
    }
    Ok(())
}

fn merge_domains(
    rules: &mut Rules,
    origins: &mut Origins,
    doc: &CompiledDoc,
) -> Result<(), PolicyError> {
    for (domain, delivery) in &doc.local_domains {
        if let Some(first) = origins.local.get(domain) {
            let same = rules
                .local_domains
                .get(domain)
                .is_some_and(|e| e.delivery == *delivery);
            if !same {
                let what = format!("local domain {domain} has different deliveries");
                return Err(conflict(what, first, &doc.at));
            }
            continue;
        }
        if let Some(relay_at) = origins.relay.get(domain) {
            return Err(conflict(
                format!("{domain} is both a relay domain and a local domain"),
                relay_at,
                &doc.at,
            ));
        }
        origins.local.insert(domain.clone(), doc.at.clone());
        let entry = LocalDomain {
            delivery: delivery.clone(),
            policy: doc.id.clone(),
        };
        rules.local_domains.insert(domain.clone(), entry);
    }
    for domain in &doc.relay_domains {
        if let Some(local_at) = origins.local.get(domain) {
            return Err(conflict(
                format!("{domain} is both a local domain and a relay domain"),
                local_at,
                &doc.at,
            ));
        }
        origins
            .relay
            .entry(domain.clone())
            .or_insert_with(|| doc.at.clone());
        rules
            .relay_domains
            .entry(domain.clone())
            .or_insert_with(|| doc.id.clone());
    }
    Ok(())
}

fn merge_users_and_routes(
    rules: &mut Rules,
    origins: &mut Origins,
    doc: &CompiledDoc,
) -> Result<(), PolicyError> {
    for (name, user) in &doc.users {
        if let Some(first) = origins.users.get(name) {
            return Err(conflict(
                format!("user {name} is defined twice"),
                first,
                &doc.at,
            ));
        }
        origins.users.insert(name.clone(), doc.at.clone());
        rules.users.insert(name.clone(), user.clone());
    }
    for route in &doc.routes {
        for pattern in &route.domains {
            if let Some(first) = origins.patterns.get(pattern) {
                return Err(conflict(
                    format!("route domain pattern {pattern} appears in two routes"),
                    first,
                    &doc.at,
                ));
            }
            origins.patterns.insert(pattern.clone(), doc.at.clone());
        }
        rules.routes.push(route.clone());
    }
    Ok(())
}
